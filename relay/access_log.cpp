#include "relay/access_log.hpp"

#include <chrono>
#include <cstdio>
#include <ctime>

#include <unistd.h>

namespace byok::relay {
namespace {

void write_all(const char* p, std::size_t n) noexcept {
    while (n > 0) {
        const ssize_t w = ::write(STDERR_FILENO, p, n);
        if (w <= 0) {
            return;
        }
        p += w;
        n -= static_cast<std::size_t>(w);
    }
}

std::size_t timestamp(char* buf, std::size_t size) noexcept {
    const auto now = std::chrono::system_clock::now();
    const auto t = std::chrono::system_clock::to_time_t(now);
    const auto ms = std::chrono::duration_cast<std::chrono::milliseconds>(now.time_since_epoch()).count() % 1000;
    std::tm tm{};
    gmtime_r(&t, &tm);
    const int n = std::snprintf(buf, size, "%04d-%02d-%02dT%02d:%02d:%02d.%03dZ", tm.tm_year + 1900, tm.tm_mon + 1,
                                tm.tm_mday, tm.tm_hour, tm.tm_min, tm.tm_sec, static_cast<int>(ms));
    return n > 0 ? static_cast<std::size_t>(n) : 0;
}

// Printable ASCII only, bounded: a log line must not be a place where a
// client can write arbitrary bytes (or forge a second line).
int clean(std::string_view s, char* out, std::size_t max) noexcept {
    std::size_t n = 0;
    for (const char c : s) {
        if (n + 1 >= max) {
            break;
        }
        out[n++] = (c > 0x20 && c < 0x7f && c != '"') ? c : '_';
    }
    out[n] = '\0';
    return static_cast<int>(n);
}

}  // namespace

void write_access_log(const access_entry& e) noexcept {
    char ts[40];
    timestamp(ts, sizeof ts);
    std::string_view path = e.path.substr(0, e.path.find('?'));
    char ip[64];
    char method[16];
    char provider[48];
    char p[256];
    char err[40];
    clean(e.client_ip.empty() ? "-" : e.client_ip, ip, sizeof ip);
    clean(e.method, method, sizeof method);
    clean(e.provider.empty() ? "-" : e.provider, provider, sizeof provider);
    clean(path, p, sizeof p);
    clean(e.error.empty() ? "-" : e.error, err, sizeof err);
    char line[512];
    const int n = std::snprintf(line, sizeof line,
                                "%s ip=%s method=%s provider=%s path=%s status=%u upstream=%u ms=%.1f in=%llu "
                                "out=%llu error=%s\n",
                                ts, ip, method, provider, p, e.status, e.upstream_status, e.duration_ms,
                                static_cast<unsigned long long>(e.bytes_in),
                                static_cast<unsigned long long>(e.bytes_out), err);
    if (n > 0) {
        write_all(line, std::min(static_cast<std::size_t>(n), sizeof line - 1));
    }
}

void log_line(std::string_view text) noexcept {
    char ts[40];
    const std::size_t t = timestamp(ts, sizeof ts);
    char line[1024];
    const int n = std::snprintf(line, sizeof line, "%.*s byok-relay: %.*s\n", static_cast<int>(t), ts,
                                static_cast<int>(std::min<std::size_t>(text.size(), 900)), text.data());
    if (n > 0) {
        write_all(line, std::min(static_cast<std::size_t>(n), sizeof line - 1));
    }
}

}  // namespace byok::relay
