#pragma once
// Admission: what a request must earn before it holds anything that others
// need. In the order the session applies them, cheapest first:
//   1. per-address connection cap and token bucket, at accept (address_table);
//   2. head limits (parser), framing checks, then the seal's header precheck,
//      all before a byte of body is read;
//   3. the body: a share of the global budget for bytes held in unfinished
//      bodies (body_budget), at a minimum rate (read_request_body);
//   4. an in-flight slot, only once the body is complete and the seal opened
//      (in_flight_slot): the upstream exchange is what slots count.
// Each piece here is a value or a function over the socket; none keeps
// state between requests but the shared counters.

#include <atomic>
#include <chrono>
#include <cstddef>
#include <cstdint>

#include <boost/asio/awaitable.hpp>
#include <boost/asio/ip/tcp.hpp>
#include <boost/beast/http/parser.hpp>
#include <boost/beast/http/string_body.hpp>

#include "relay/deadline.hpp"
#include "relay/http_util.hpp"

namespace byok::relay {

// Bytes held in unfinished request bodies, across every connection and
// thread. Thread-safe (one atomic).
class body_budget {
public:
    explicit body_budget(std::size_t max_bytes) noexcept : max_(max_bytes) {}
    body_budget(const body_budget&) = delete;
    body_budget& operator=(const body_budget&) = delete;

    // A share of the budget, given back when destroyed. Move-only.
    class lease {
    public:
        lease() noexcept = default;
        lease(lease&& o) noexcept : b_(o.b_), n_(o.n_) { o.b_ = nullptr; o.n_ = 0; }
        lease& operator=(lease&& o) noexcept;
        lease(const lease&) = delete;
        lease& operator=(const lease&) = delete;
        ~lease() { release(); }

        // Grows the share to `n` bytes in all; false (share unchanged) if the budget has no room.
        [[nodiscard]] bool grow_to(std::size_t n) noexcept;
        void release() noexcept;
        [[nodiscard]] std::size_t bytes() const noexcept { return n_; }

    private:
        friend class body_budget;
        explicit lease(body_budget* b) noexcept : b_(b) {}
        body_budget* b_ = nullptr;
        std::size_t n_ = 0;
    };

    // An empty share of this budget; grow it before holding bytes.
    [[nodiscard]] lease open() noexcept { return lease(this); }
    [[nodiscard]] std::size_t held() const noexcept { return held_.load(std::memory_order_relaxed); }
    [[nodiscard]] std::size_t max() const noexcept { return max_; }

private:
    [[nodiscard]] bool take(std::size_t n) noexcept;
    void give(std::size_t n) noexcept { held_.fetch_sub(n, std::memory_order_relaxed); }

    std::size_t max_;
    std::atomic<std::size_t> held_{0};
};

// One of `max` in-flight slots, given back when destroyed. Move-only.
class in_flight_slot {
public:
    [[nodiscard]] static in_flight_slot try_take(std::atomic<std::int64_t>& counter, std::size_t max) noexcept;
    [[nodiscard]] static in_flight_slot none() noexcept { return in_flight_slot(nullptr); }
    in_flight_slot(in_flight_slot&& o) noexcept : c_(o.c_) { o.c_ = nullptr; }
    in_flight_slot(const in_flight_slot&) = delete;
    in_flight_slot& operator=(const in_flight_slot&) = delete;
    in_flight_slot& operator=(in_flight_slot&& o) noexcept {
        if (this != &o) {
            if (c_ != nullptr) {
                c_->fetch_sub(1, std::memory_order_relaxed);
            }
            c_ = o.c_;
            o.c_ = nullptr;
        }
        return *this;
    }
    ~in_flight_slot() {
        if (c_ != nullptr) {
            c_->fetch_sub(1, std::memory_order_relaxed);
        }
    }
    [[nodiscard]] explicit operator bool() const noexcept { return c_ != nullptr; }

private:
    explicit in_flight_slot(std::atomic<std::int64_t>* c) noexcept : c_(c) {}
    std::atomic<std::int64_t>* c_;
};

// How fast a body must arrive: after each window of `window`, at least
// `bytes_per_s * window` bytes (or the rest of the body) must have come in
// it; and all of it within `total`.
struct body_pace {
    std::size_t bytes_per_s = 1024;
    std::chrono::seconds window{5};
    std::chrono::seconds total{30};
};

enum class body_outcome {
    complete,
    too_large,      // over max_body_bytes (413)
    over_budget,    // the global budget has no room for it (503)
    too_slow,       // below the minimum rate, or past the total time (408)
    has_trailers,   // chunked trailer fields (400): they would join the header set after the checks
    malformed,      // bad chunk framing and the like (400)
    client_gone,    // the client closed or reset (no answer)
};

// Reserves in `lease` what a body with a Content-Length will occupy (the
// string body allocates all of it at once), before the body is read or
// invited with 100 Continue. False if the budget has no room; true also for
// a chunked body, whose share grows in read_request_body as it arrives.
[[nodiscard]] bool reserve_announced_body(
    body_budget::lease& lease,
    const boost::beast::http::request_parser<boost::beast::http::string_body>& parser) noexcept;

// Reads the rest of a request body into the parser. `lease` already holds a
// Content-Length body's share (reserve_announced_body); a chunked body's
// share is grown here to the bytes it occupies.
[[nodiscard]] boost::asio::awaitable<body_outcome> read_request_body(
    boost::asio::ip::tcp::socket& sock, socket_deadline& deadline, read_buffer& buffer,
    boost::beast::http::request_parser<boost::beast::http::string_body>& parser, body_budget::lease& lease,
    const body_pace& pace);

}  // namespace byok::relay
