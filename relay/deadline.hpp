#pragma once
// A time limit on the operations of one socket that costs a clock read to
// set, for the relay's hot path.
//
// beast::tcp_stream arms a timer when each read or write starts and cancels
// it when the operation ends: a timer-queue insert, a cancel, and an extra
// handler run per operation, and often a timerfd_settime system call. Here
// an operation only records its limit; one timer per socket sleeps until the
// earliest limit it knows of, and when it wakes it either finds the limit
// moved later (and sleeps again) or passed (and closes the socket, as
// beast::tcp_stream does). So the timer fires at most about once per time
// limit, however many operations run.
//
// Use: `d.expires_after(t)` before an operation, `ec = d.settle(ec)` after
// it. settle() clears the limit and turns the failure of a timed-out
// operation into beast::error::timeout. A limit that was settled does
// nothing when its timer wakes.

#include <chrono>
#include <memory>

#include <boost/asio/ip/tcp.hpp>
#include <boost/asio/steady_timer.hpp>
#include <boost/system/error_code.hpp>

namespace byok::relay {

class socket_deadline {
public:
    using clock = std::chrono::steady_clock;

    explicit socket_deadline(boost::asio::ip::tcp::socket& s);
    ~socket_deadline();
    socket_deadline(const socket_deadline&) = delete;
    socket_deadline& operator=(const socket_deadline&) = delete;

    // What an expired limit does to the socket. `close` (the default) is
    // the only safe choice for a composed operation; `cancel` keeps the
    // socket open and aborts the pending operations, for a single wait that
    // is followed by something other than a close (a quiet keep-alive
    // connection handed to the idle park).
    enum class on_expiry { close, cancel };
    void expires_after(clock::duration d, on_expiry how = on_expiry::close);
    void expires_never() noexcept;
    // The error the operation should report: beast::error::timeout if the
    // limit cancelled it, `ec` otherwise. Clears the limit.
    [[nodiscard]] boost::system::error_code settle(boost::system::error_code ec) noexcept;

private:
    // Shared with the pending timer handler, which may run after the owner
    // is gone (a completed wait is queued, not cancellable).
    struct state {
        explicit state(boost::asio::ip::tcp::socket& s) : timer(s.get_executor()), sock(&s) {}
        boost::asio::steady_timer timer;
        boost::asio::ip::tcp::socket* sock;  // null once the owner is gone
        clock::time_point at = clock::time_point::max();
        clock::time_point sleeping_until = clock::time_point::max();  // max: the timer is not sleeping
        unsigned generation = 0;
        bool fired = false;
        bool cancel_only = false;  // on_expiry::cancel for the current limit
    };
    static void sleep(const std::shared_ptr<state>& st, clock::time_point until);

    std::shared_ptr<state> st_;
};

}  // namespace byok::relay
