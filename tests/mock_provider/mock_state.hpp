#pragma once
// State shared by every connection of byok-mock-provider: the request
// recording and the connection counters. One instance lives for the whole
// process (owned by main); every member function is thread-safe.

#include <atomic>
#include <cstddef>
#include <cstdint>
#include <deque>
#include <mutex>
#include <string>
#include <unordered_set>
#include <utility>
#include <vector>

namespace byok::mock {

// One recorded request. Header names are lower-case; repeated headers are
// kept as separate entries and joined with ", " when rendered.
struct recorded_request {
    std::string method;
    std::string target;
    std::vector<std::pair<std::string, std::string>> headers;
    std::string body_sha256;  // base64url, no padding
    std::size_t body_bytes = 0;
};

class mock_state {
public:
    // max_records == 0 turns recording off (benchmarks).
    explicit mock_state(std::size_t max_records) : max_records_(max_records) {}
    mock_state(const mock_state&) = delete;
    mock_state& operator=(const mock_state&) = delete;

    [[nodiscard]] bool recording() const noexcept { return max_records_ != 0; }
    void record(recorded_request r);

    void connection_opened() noexcept { open_.fetch_add(1, std::memory_order_relaxed); }
    void connection_closed() noexcept {
        open_.fetch_sub(1, std::memory_order_relaxed);
        closed_.fetch_add(1, std::memory_order_relaxed);
    }
    void stream_aborted() noexcept { aborted_.fetch_add(1, std::memory_order_relaxed); }
    // A TLS handshake that completed: a full one (certificate sent), or a
    // resumption of an earlier session (tls_full, tls_resumed in stats).
    void tls_handshake(bool resumed) noexcept {
        (resumed ? tls_resumed_ : tls_full_).fetch_add(1, std::memory_order_relaxed);
    }
    void request_served() noexcept { requests_.fetch_add(1, std::memory_order_relaxed); }
    // A process-wide sequence number for ids (chatcmpl-mock-N, req_mock_N).
    [[nodiscard]] std::uint64_t next_id() noexcept {
        return ids_.fetch_add(1, std::memory_order_relaxed) + 1;
    }

    // JSON array of the recorded requests, newest last.
    [[nodiscard]] std::string requests_json() const;
    // {"connections_open":N,"connections_closed":N,"streams_aborted":N,
    //  "tls_full":N,"tls_resumed":N,...,
    //  "pairs_distinct":N,"pairs_repeated":N}
    [[nodiscard]] std::string stats_json() const;
    // Clears the recording and the counters. connections_open is a gauge of
    // the connections open right now, so it is kept.
    void reset();

private:
    const std::size_t max_records_;
    mutable std::mutex mutex_;
    std::deque<recorded_request> records_;
    // Every (key, body) pair received while recording, so a test can tell
    // that no request was forwarded twice (stats: pairs_repeated).
    std::unordered_set<std::string> pairs_;
    std::uint64_t pairs_repeated_ = 0;
    std::atomic<std::int64_t> open_{0};
    std::atomic<std::uint64_t> closed_{0};
    std::atomic<std::uint64_t> aborted_{0};
    std::atomic<std::uint64_t> tls_full_{0};
    std::atomic<std::uint64_t> tls_resumed_{0};
    std::atomic<std::uint64_t> requests_{0};
    std::atomic<std::uint64_t> ids_{0};
};

}  // namespace byok::mock
