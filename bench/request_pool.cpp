#include "bench/request_pool.hpp"

#include <chrono>
#include <cstdio>
#include <ctime>
#include <stdexcept>
#include <thread>

#include <sodium.h>

#include "crypto/encoding.hpp"
#include "crypto/seal.hpp"

namespace byok::bench {
namespace {

double thread_cpu_seconds() {
    timespec ts{};
    clock_gettime(CLOCK_THREAD_CPUTIME_ID, &ts);
    return static_cast<double>(ts.tv_sec) + static_cast<double>(ts.tv_nsec) * 1e-9;
}

}  // namespace

std::pair<std::string, std::string> split_body(std::string_view body, bool stream) {
    std::size_t open = 0;
    while (open < body.size() && (body[open] == ' ' || body[open] == '\n' || body[open] == '\r' || body[open] == '\t')) {
        ++open;
    }
    if (open >= body.size() || body[open] != '{') {
        throw std::invalid_argument("the request body must be a JSON object");
    }
    std::string_view rest = body.substr(open + 1);
    std::size_t first = 0;
    while (first < rest.size() && (rest[first] == ' ' || rest[first] == '\n' || rest[first] == '\r' ||
                                   rest[first] == '\t')) {
        ++first;
    }
    const bool empty_object = first < rest.size() && rest[first] == '}';
    std::string head(body.substr(0, open + 1));
    if (stream && body.find("\"stream\"") == std::string_view::npos) {
        head += "\"stream\":true,";
    }
    head += "\"nonce\":\"";
    std::string tail = empty_object ? "\"" : "\",";
    tail.append(rest);
    return {std::move(head), std::move(tail)};
}

request_pool::request_pool(request_template t, std::size_t count, unsigned threads) : t_(std::move(t)) {
    if (t_.api_keys.empty()) {
        throw std::invalid_argument("request_pool needs at least one API key");
    }
    crypto::ensure_sodium();
    auto [head, tail] = split_body(t_.body, t_.stream);
    body_head_ = std::move(head);
    body_tail_ = std::move(tail);
    randombytes_buf(&nonce_base_, sizeof nonce_base_);
    body_bytes_ = body_head_.size() + 16 + body_tail_.size();

    wire_.resize(count);
    threads = std::max(1u, threads);
    std::vector<double> cpu(threads, 0);
    const auto t0 = std::chrono::steady_clock::now();
    std::vector<std::thread> pool;
    for (unsigned k = 0; k < threads; ++k) {
        pool.emplace_back([this, k, threads, count, &cpu] {
            const double c0 = thread_cpu_seconds();
            for (std::size_t i = k; i < count; i += threads) {
                wire_[i] = build(i);
            }
            cpu[k] = thread_cpu_seconds() - c0;
        });
    }
    for (auto& th : pool) {
        th.join();
    }
    fill_s_ = std::chrono::duration<double>(std::chrono::steady_clock::now() - t0).count();
    double total = 0;
    for (const double c : cpu) {
        total += c;
    }
    if (count > 0) {
        seal_us_ = total / static_cast<double>(count) * 1e6;
    } else {
        // Measure a few anyway, so the report always has the cost of a seal.
        const double c0 = thread_cpu_seconds();
        constexpr int probe = 200;
        for (int i = 0; i < probe; ++i) {
            (void)build(static_cast<std::uint64_t>(i));
        }
        seal_us_ = (thread_cpu_seconds() - c0) / probe * 1e6;
    }
}

std::string request_pool::build(std::uint64_t n) const {
    char nonce[17];
    std::snprintf(nonce, sizeof nonce, "%016llx", static_cast<unsigned long long>(nonce_base_ + n));
    std::string body;
    body.reserve(body_bytes_);
    body.append(body_head_).append(nonce, 16).append(body_tail_);

    const std::string& key = t_.api_keys[n % t_.api_keys.size()];
    const auto digest = crypto::sha256(body);
    const auto payload = crypto::make_payload(key, static_cast<std::int64_t>(std::time(nullptr)), t_.method,
                                              t_.seal_path, digest);
    const std::string auth = crypto::seal_header(t_.kid, t_.pk, payload.span());

    std::string w;
    w.reserve(256 + t_.target.size() + auth.size() + body.size());
    w.append(t_.method).append(" ").append(t_.target).append(" HTTP/1.1\r\nHost: ").append(t_.host_header);
    w.append("\r\nUser-Agent: byok-loadgen\r\nContent-Type: application/json\r\nAccept: ");
    w.append(t_.stream ? "text/event-stream" : "application/json");
    w.append("\r\nAuthorization: ").append(auth);
    w.append("\r\nContent-Length: ").append(std::to_string(body.size())).append("\r\n\r\n").append(body);
    return w;
}

std::string_view request_pool::take(std::string& scratch) {
    const std::size_t i = next_.fetch_add(1, std::memory_order_relaxed);
    if (i < wire_.size()) {
        return wire_[i];
    }
    inline_.fetch_add(1, std::memory_order_relaxed);
    scratch = build(i);
    return scratch;
}

}  // namespace byok::bench
