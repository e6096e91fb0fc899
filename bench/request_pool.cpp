#include "bench/request_pool.hpp"

#include <array>
#include <chrono>
#include <cstdio>
#include <ctime>
#include <stdexcept>
#include <thread>
#include <vector>

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

request_pool::request_pool(request_template t, std::size_t count, std::size_t ahead, unsigned threads)
    : t_(std::move(t)) {
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
    ready_ = std::make_unique<std::atomic<bool>[]>(count);
    ahead_ = std::max<std::size_t>(1, ahead);
    prefilled_ = std::min(count, ahead_);
    threads = std::max(1u, threads);
    std::vector<double> cpu(threads, 0);
    const auto t0 = std::chrono::steady_clock::now();
    std::vector<std::thread> pool;
    for (unsigned k = 0; k < threads; ++k) {
        pool.emplace_back([this, k, threads, &cpu] {
            const double c0 = thread_cpu_seconds();
            for (std::size_t i = k; i < prefilled_; i += threads) {
                wire_[i] = build(i);
                ready_[i].store(true, std::memory_order_release);
            }
            cpu[k] = thread_cpu_seconds() - c0;
        });
    }
    for (auto& th : pool) {
        th.join();
    }
    fill_s_ = std::chrono::duration<double>(std::chrono::steady_clock::now() - t0).count();
    for (const double c : cpu) {
        prefill_cpu_s_ += c;
    }
    if (prefilled_ > 0) {
        seal_us_ = prefill_cpu_s_ / static_cast<double>(prefilled_) * 1e6;
    } else {
        // Measure a few anyway, so the report always has the cost of a seal.
        const double c0 = thread_cpu_seconds();
        constexpr int probe = 200;
        for (int i = 0; i < probe; ++i) {
            (void)build(static_cast<std::uint64_t>(i));
        }
        seal_us_ = (thread_cpu_seconds() - c0) / probe * 1e6;
    }
    if (count > prefilled_) {
        sealer_ = std::thread([this] { refill(); });
    }
}

request_pool::~request_pool() {
    stop_.store(true);
    if (sealer_.joinable()) {
        sealer_.join();
    }
}

void request_pool::refill() {
    const double c0 = thread_cpu_seconds();
    for (std::size_t i = prefilled_; i < wire_.size() && !stop_.load(std::memory_order_relaxed); ++i) {
        // Seal no further ahead than `ahead_`, so every iat is still fresh when sent.
        while (i >= next_.load(std::memory_order_relaxed) + ahead_ && !stop_.load(std::memory_order_relaxed)) {
            std::this_thread::sleep_for(std::chrono::milliseconds(2));
        }
        if (i < next_.load(std::memory_order_relaxed)) {
            continue;  // already taken (and sealed inline): skip ahead
        }
        wire_[i] = build(i);
        ready_[i].store(true, std::memory_order_release);
        background_.fetch_add(1, std::memory_order_relaxed);
        background_cpu_s_.store(thread_cpu_seconds() - c0, std::memory_order_relaxed);
    }
}

double request_pool::seal_us_per_request() const noexcept {
    const auto bg = background_.load();
    if (prefilled_ + bg == 0) {
        return seal_us_;
    }
    return (prefill_cpu_s_ + background_cpu_s_.load()) / static_cast<double>(prefilled_ + bg) * 1e6;
}

std::string request_pool::build(std::uint64_t n) const {
    char nonce[17];
    std::snprintf(nonce, sizeof nonce, "%016llx", static_cast<unsigned long long>(nonce_base_ + n));
    std::string body;
    body.reserve(body_bytes_);
    body.append(body_head_).append(nonce, 16).append(body_tail_);

    const std::string& key = t_.api_keys[n % t_.api_keys.size()];
    const auto digest = crypto::sha256(body);
    const auto iat = static_cast<std::int64_t>(std::time(nullptr));
    std::string auth;
    if (t_.alg == crypto::seal_alg::hpke) {
        // An HPKE seal must bind the forwarded headers: here only the Content-Type below.
        static constexpr std::array<crypto::header_field, 1> sent{{{"content-type", "application/json"}}};
        const auto headers_digest = crypto::headers_sha256(sent);
        const auto payload = crypto::make_payload(key, iat, t_.method, t_.seal_path, digest, &headers_digest);
        auto header = crypto::hpke_seal_header(t_.kid, t_.pk, payload.span());
        if (!header) {
            throw std::runtime_error("the relay's HPKE public key is a low-order point");
        }
        auth = std::move(*header);
    } else {
        const auto payload = crypto::make_payload(key, iat, t_.method, t_.seal_path, digest);
        auth = crypto::seal_header(t_.kid, t_.pk, payload.span());
    }

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
    if (i < wire_.size() && ready_[i].load(std::memory_order_acquire)) {
        return wire_[i];
    }
    inline_.fetch_add(1, std::memory_order_relaxed);
    scratch = build(i);
    return scratch;
}

}  // namespace byok::bench
