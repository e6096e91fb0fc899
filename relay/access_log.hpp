#pragma once
// One line per request on stderr. What it may contain is fixed here and
// nowhere else: time, client address, method, provider, path WITHOUT the
// query string, status, upstream status, duration, bytes, error code. Never
// a header value, a seal, a payload, a key or a body.
//
// Non-blocking: the calling thread formats the line on its stack and copies
// it into a bounded queue (1 MiB); one writer thread does the write(2) to
// stderr, in writes of at most PIPE_BUF bytes that hold whole lines only, so
// lines never interleave or break, even with other writers on a stderr pipe.
// When the queue is full an access line is dropped and counted
// (access_log_dropped(), for /metrics): a worker never waits on stderr.
// Operational lines (log_line) may use the last 64 KiB of the queue, which
// access lines cannot, and if even that is full they wait for room, for at
// most 200 ms, before they are dropped and counted too: they are rare, and
// they are the operator's only record of a start, a reload or a stop.
//
// The writer starts with the first line (or start_access_log()). At exit
// (std::exit, or a return from main) the queue is written out before the
// process ends; lines logged after that are written directly.
//
// Thread-safe: any thread may call any of these.

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

// Access lines dropped because the queue was full (and operational lines
// that found no room in time), since the process started.
[[nodiscard]] std::uint64_t access_log_dropped() noexcept;

// Starts the writer thread if it is not running. Idempotent. If no thread can
// be started, lines are written directly by their callers, as a fallback.
void start_access_log() noexcept;
// Writes out what is queued, then stops the writer thread. Waits at most 5 s
// for a stalled stderr, then gives up on the rest (counted as dropped).
// Until the next start_access_log(), lines are written directly.
// Runs by itself at exit.
void stop_access_log() noexcept;

}  // namespace byok::relay
