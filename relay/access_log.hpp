#pragma once
// One line per request on stderr. What it may contain is fixed here and
// nowhere else: time, client address, method, provider, path WITHOUT the
// query string, status, upstream status, duration, bytes, error code. Never
// a header value, a seal, a payload, a key or a body. Thread-safe: each line
// is one write(2) of less than PIPE_BUF bytes, so lines never interleave.

#include <cstdint>
#include <string_view>

namespace byok::relay {

struct access_entry {
    std::string_view client_ip;
    std::string_view method;
    std::string_view provider;   // "" for non-provider routes
    std::string_view path;       // the query string is cut off here
    unsigned status = 0;
    unsigned upstream_status = 0;  // 0: no upstream call
    double duration_ms = 0;
    std::uint64_t bytes_in = 0;
    std::uint64_t bytes_out = 0;
    std::string_view error;      // error code, or ""
};

void write_access_log(const access_entry& e) noexcept;

// A line of operational logging (start, reload, shutdown); same sink.
void log_line(std::string_view text) noexcept;

}  // namespace byok::relay
