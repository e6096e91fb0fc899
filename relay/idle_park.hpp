#pragma once
// Keep-alive client connections between two requests, held without a
// session: the socket, the client's address and whether the per-address
// table counts it, and nothing else (docs/benchmarks.md: memory per idle
// keep-alive connection).
//
// A session that has answered a request and has no pipelined bytes hands its
// connection here and ends: its coroutine frames, read buffer, parser room
// and per-socket timer are freed. The park waits for the socket to become
// readable with one reactor wait (no buffer) and then hands the connection to
// `wake`, which starts a new session for it (a request, or the client's close,
// which the session reads as an ordinary end of stream).
//
// idle_timeout is enforced by one timer per park, not one per connection:
// connections are kept in the order they were parked, which with one
// timeout is the order they expire, so the timer sleeps until the oldest
// one's limit, closes every connection past its limit, and sleeps again.
// A closed connection goes to `closed` (to release what counted it).
//
// One park per worker; every member must be called on that worker's thread
// (the io_context's). The park must be destroyed before its io_context (it
// owns sockets); a connection still parked then is closed without `closed`.

#include <chrono>
#include <cstddef>
#include <functional>

#include <boost/asio/io_context.hpp>
#include <boost/asio/ip/tcp.hpp>
#include <boost/asio/steady_timer.hpp>

#include "relay/address_table.hpp"

namespace byok::relay {

// A client connection as it passes from a session to the park and back.
struct client_conn {
    boost::asio::ip::tcp::socket socket;
    address_table::key peer{};  // the client's address (resumed connections only)
    bool counted = false;       // holds one connection of its address in the per-address table
    bool resumed = false;       // served a request before: set up and counted already
};

class idle_park {
public:
    using clock = std::chrono::steady_clock;
    using wake_fn = std::function<void(client_conn&&)>;
    using closed_fn = std::function<void(const client_conn&)>;

    idle_park(boost::asio::io_context& ioc, clock::duration idle_timeout, wake_fn wake, closed_fn closed);
    ~idle_park();
    idle_park(const idle_park&) = delete;
    idle_park& operator=(const idle_park&) = delete;

    // Holds `c` until it is readable (then `wake`) or idle for idle_timeout (then `closed`).
    void park(client_conn&& c);
    // Closes every parked connection (draining); each goes to `closed`.
    void close_all();
    // Connections parked now.
    [[nodiscard]] std::size_t size() const noexcept { return size_; }

private:
    struct entry {
        client_conn conn;
        clock::time_point since;
        entry* prev = nullptr;
        entry* next = nullptr;
        bool closing = false;  // closed by the park; its wait completes as aborted
    };

    struct waiter;
    void on_ready(entry* e, const boost::system::error_code& ec);
    void sweep();
    void arm();
    void unlink(entry* e) noexcept;

    clock::duration timeout_;
    wake_fn wake_;
    closed_fn closed_;
    boost::asio::steady_timer timer_;
    bool timer_armed_ = false;
    entry* head_ = nullptr;  // the oldest
    entry* tail_ = nullptr;
    std::size_t size_ = 0;
};

}  // namespace byok::relay
