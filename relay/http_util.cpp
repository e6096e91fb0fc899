#include "relay/http_util.hpp"

#include <algorithm>
#include <array>
#include <cstring>
#include <ctime>
#include <limits>

#include <boost/asio/ip/address.hpp>

namespace byok::relay {

namespace http = boost::beast::http;

bool iequals(std::string_view a, std::string_view b) noexcept {
    if (a.size() != b.size()) {
        return false;
    }
    for (std::size_t i = 0; i < a.size(); ++i) {
        char x = a[i];
        char y = b[i];
        if (x >= 'A' && x <= 'Z') {
            x = static_cast<char>(x + 32);
        }
        if (y >= 'A' && y <= 'Z') {
            y = static_cast<char>(y + 32);
        }
        if (x != y) {
            return false;
        }
    }
    return true;
}

bool framing_ok(const http::fields& f, unsigned version) noexcept {
    const auto cl = f.count(http::field::content_length);
    const auto te = f.count(http::field::transfer_encoding);
    if (cl > 1 || te > 1 || (cl == 1 && te == 1)) {
        return false;
    }
    if (cl == 1) {
        // 1*DIGIT only: Beast accepts a list of equal values ("5, 5"), which
        // a front proxy may read as invalid or as something else.
        const std::string_view v = f[http::field::content_length];
        if (v.empty() || v.find_first_not_of("0123456789") != std::string_view::npos) {
            return false;
        }
    }
    if (te == 1) {
        if (version < 11) {
            return false;
        }
        std::string_view v = f[http::field::transfer_encoding];
        while (!v.empty() && (v.front() == ' ' || v.front() == '\t')) {
            v.remove_prefix(1);
        }
        while (!v.empty() && (v.back() == ' ' || v.back() == '\t')) {
            v.remove_suffix(1);
        }
        if (!iequals(v, "chunked")) {
            return false;  // also covers "gzip, chunked" (no codings but chunked are accepted) and "chunked, gzip"
        }
    }
    return true;
}

void fold_watch_buffer::consume(std::size_t n) noexcept {
    const auto d = b_.data();
    const char* p = static_cast<const char*>(d.data());
    n = std::min(n, d.size());
    // A line that starts with SP or HTAB: look only after each LF (memchr),
    // not at every byte of a 1 KiB head (docs/benchmarks.md).
    const auto starts_fold = [](char c) { return c == ' ' || c == '\t'; };
    if (n > 0 && prev_ == '\n' && starts_fold(p[0])) {
        folded_ = true;
    }
    const char* const end = p + n;
    for (const char* q = p; !folded_ && q < end;) {
        const auto* lf = static_cast<const char*>(std::memchr(q, '\n', static_cast<std::size_t>(end - q)));
        if (lf == nullptr) {
            break;
        }
        q = lf + 1;
        if (q < end && starts_fold(*q)) {
            folded_ = true;
        }
    }
    consumed_ += n;
    if (n > 0) {
        prev_ = p[n - 1];
        crypto::wipe(const_cast<char*>(p), n);
    }
    b_.consume(n);
}

void wipe_request_head(http::request_header<>& h) noexcept {
    for (const auto& f : h) {
        const auto v = f.value();
        crypto::wipe(const_cast<char*>(v.data()), v.size());
    }
    const auto t = h.target();
    crypto::wipe(const_cast<char*>(t.data()), t.size());
}

std::string_view http_date(std::int64_t unix_seconds) {
    // Every answer carries the date; formatting it (gmtime_r, snprintf and a
    // heap string) once a second per thread instead of once an answer.
    thread_local std::int64_t cached_for = std::numeric_limits<std::int64_t>::min();
    thread_local std::array<char, 40> buf{};
    thread_local std::size_t len = 0;
    if (unix_seconds != cached_for) {
        const std::time_t t = static_cast<std::time_t>(unix_seconds);
        std::tm tm{};
        gmtime_r(&t, &tm);
        static constexpr std::array<const char*, 7> days{"Sun", "Mon", "Tue", "Wed", "Thu", "Fri", "Sat"};
        static constexpr std::array<const char*, 12> months{"Jan", "Feb", "Mar", "Apr", "May", "Jun",
                                                            "Jul", "Aug", "Sep", "Oct", "Nov", "Dec"};
        const int n = std::snprintf(buf.data(), buf.size(), "%s, %02d %s %04d %02d:%02d:%02d GMT",
                                    days[static_cast<std::size_t>(tm.tm_wday)], tm.tm_mday,
                                    months[static_cast<std::size_t>(tm.tm_mon)], tm.tm_year + 1900, tm.tm_hour,
                                    tm.tm_min, tm.tm_sec);
        len = n > 0 ? std::min(static_cast<std::size_t>(n), buf.size() - 1) : 0;
        cached_for = unix_seconds;
    }
    return {buf.data(), len};
}

std::string_view reason_phrase(unsigned status) noexcept {
    const auto r = http::obsolete_reason(static_cast<http::status>(status));
    return r.empty() ? std::string_view("Unknown") : std::string_view(r.data(), r.size());
}

bool forward_request_header(std::string_view n) noexcept {
    // What browser SDKs send that a provider needs or uses: content
    // negotiation, OpenAI's organization/project/beta, Anthropic's version and
    // beta flags, Google's client tag, OpenRouter's app attribution. Not
    // anthropic-dangerous-direct-browser-access (a browser-only opt-in; the
    // relay is not a browser), not x-stainless-* (SDK telemetry), never auth.
    return n == "content-type" || n == "accept" || n == "openai-organization" || n == "openai-project" ||
           n == "openai-beta" || n == "anthropic-version" || n == "anthropic-beta" || n == "idempotency-key" ||
           n == "user-agent" || n == "x-goog-api-client" || n == "http-referer" || n == "x-title";
}

bool forward_response_header(std::string_view n) noexcept {
    auto starts = [&](std::string_view p) { return n.substr(0, p.size()) == p; };
    return n == "content-type" || n == "x-request-id" || n == "retry-after" || n == "retry-after-ms" ||
           n == "request-id" || n == "content-disposition" || starts("openai-") || starts("x-ratelimit-") ||
           starts("anthropic-ratelimit-");
}

bool field_value_ok(std::string_view v) noexcept {
    for (const char c : v) {
        const auto u = static_cast<unsigned char>(c);
        if ((u < 0x20 && c != '\t') || u == 0x7f) {
            return false;
        }
    }
    return true;
}

std::string client_ip(const http::fields& f, const std::string& peer_ip,
                      const ip_set& trusted_proxies) {
    const auto trusted = [&](const std::string& ip) { return trusted_proxies.contains(ip); };
    if (!trusted(peer_ip)) {
        return peer_ip;
    }
    std::vector<std::string_view> hops;
    for (const auto& field : f) {
        if (!iequals(field.name_string(), "x-forwarded-for")) {
            continue;
        }
        std::string_view v = field.value();
        while (!v.empty()) {
            const auto comma = v.find(',');
            std::string_view hop = v.substr(0, comma);
            while (!hop.empty() && (hop.front() == ' ' || hop.front() == '\t')) {
                hop.remove_prefix(1);
            }
            while (!hop.empty() && (hop.back() == ' ' || hop.back() == '\t')) {
                hop.remove_suffix(1);
            }
            hops.push_back(hop);
            if (comma == std::string_view::npos) {
                break;
            }
            v.remove_prefix(comma + 1);
        }
    }
    for (auto it = hops.rbegin(); it != hops.rend(); ++it) {
        boost::system::error_code ec;
        const auto addr = boost::asio::ip::make_address(std::string(*it), ec);
        if (ec) {
            break;  // garbage: stop believing the chain here
        }
        std::string ip = addr.to_string();
        if (!trusted(ip)) {
            return ip;
        }
    }
    return peer_ip;
}

}  // namespace byok::relay
