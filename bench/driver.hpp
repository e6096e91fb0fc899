#pragma once
// The load generator's engine: N connections over T threads (one io_context
// per thread, no shared state on the I/O path but the request pool), in a
// closed loop (each connection sends its next request when the previous
// answer ended) or an open loop (requests scheduled at fixed intervals; a
// request's latency counts from its intended send time, so a server that
// falls behind cannot hide its queue: coordinated omission is corrected).
//
// It stops by itself at warmup + duration, closing every connection, and only
// ever connects to the one address it was given.

#include <cstdint>
#include <map>
#include <string>

#include "bench/histogram.hpp"
#include "bench/live_stats.hpp"
#include "bench/request_pool.hpp"

namespace byok::bench {

struct target {
    bool tls = false;
    std::string host;       // as in the URL: names the server for TLS verification and SNI
    std::string address;    // the IP address connected to (loopback unless --allow-remote)
    std::uint16_t port = 0;
    std::string ca_file;    // PEM bundle for https; empty: the system store
};

struct run_options {
    unsigned connections = 16;
    unsigned threads = 1;
    double duration_s = 10;
    double warmup_s = 0;
    double rate = 0;         // requests per second in total; 0: closed loop
    bool stream = false;
    double timeout_s = 60;   // per request (each read and write)
    double ramp_s = 0;       // connections start evenly spread over this many seconds
    unsigned idle_after = 0; // > 0: a connection sends this many requests, then stays open idle to the end
};

struct run_result {
    histogram latency;       // ns; start (intended send time in open loop) to last byte
    // --stream: each event timed when the read that completed it returned
    // (a blank line ends an event; an event counts if it had a data field).
    histogram first_event;   // ns; start to the first complete SSE event
    histogram last_event;    // ns; start to the last complete SSE event
    histogram event_gap;     // ns; between consecutive events of a stream (0: they came in one read)
    std::uint64_t requests = 0;   // answers completed inside the measured window
    std::uint64_t ok = 0;         // of those, 2xx (with at least one event when streaming)
    std::uint64_t completed_total = 0;  // every answer, warm-up included (for CPU per request)
    std::uint64_t errors = 0;     // non-2xx answers and transport failures, warm-up included
    std::map<std::string, std::uint64_t> by_status;     // every answer's status
    std::map<std::string, std::uint64_t> by_code;       // error.code of non-2xx JSON answers
    std::map<std::string, std::uint64_t> by_transport;  // connect/TLS/read/write failures
    std::uint64_t bytes_sent = 0;
    std::uint64_t bytes_received = 0;
    std::uint64_t events = 0;         // SSE events received in the window
    std::uint64_t connects = 0;
    std::uint64_t late_sends = 0;     // open loop: sends more than 1 ms after their intended time
    std::uint64_t unfinished = 0;     // requests still in flight when the run ended
    std::uint64_t streaming_at_end = 0;  // of those, answers whose head had arrived
    std::uint64_t idle_at_end = 0;    // --idle-after: connections idle and still open when the run ended
    std::uint64_t idle_closed = 0;    // --idle-after: idle connections the server closed before the end
    double measured_s = 0;

    void merge(const run_result& o);
};

// Runs the load. Throws std::runtime_error on setup failures (CA file).
// live, if given, needs one slot per load-generator thread
// (std::min(o.threads, o.connections), at least 1: see run_threads) and is
// fed while the run goes on.
[[nodiscard]] run_result run_load(const target& t, const run_options& o, request_pool& pool,
                                  live_stats* live = nullptr);
[[nodiscard]] unsigned run_threads(const run_options& o);

}  // namespace byok::bench
