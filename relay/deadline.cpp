#include "relay/deadline.hpp"

#include <boost/asio/error.hpp>
#include <boost/beast/core/error.hpp>

namespace byok::relay {

socket_deadline::socket_deadline(boost::asio::ip::tcp::socket& s) : st_(std::make_shared<state>(s)) {}

socket_deadline::~socket_deadline() {
    st_->sock = nullptr;
    st_->timer.cancel();
}

void socket_deadline::sleep(const std::shared_ptr<state>& st, clock::time_point until) {
    const unsigned gen = ++st->generation;
    st->sleeping_until = until;
    st->timer.expires_at(until);  // cancels an earlier sleep, whose handler then sees a newer generation
    st->timer.async_wait([st, gen](const boost::system::error_code&) {
        if (gen != st->generation) {
            return;  // superseded by a sleep to an earlier limit
        }
        st->sleeping_until = clock::time_point::max();
        if (st->sock == nullptr || st->at == clock::time_point::max()) {
            return;  // owner gone, or no limit now: the next expires_after starts a sleep
        }
        if (const auto now = clock::now(); now < st->at) {
            sleep(st, st->at);  // the limit moved later while this one slept
            return;
        }
        // Closed, not cancelled (as beast::tcp_stream does): a composed
        // operation between two steps, or a range connect about to try the
        // next address, would take a cancel for one failed step and go on
        // with no limit at all.
        st->fired = true;
        boost::system::error_code ignored;
        if (st->cancel_only) {
            st->sock->cancel(ignored);
        } else {
            st->sock->close(ignored);
        }
    });
}

void socket_deadline::expires_after(clock::duration d, on_expiry how) {
    st_->at = clock::now() + d;
    st_->fired = false;
    st_->cancel_only = how == on_expiry::cancel;
    if (st_->at < st_->sleeping_until) {
        sleep(st_, st_->at);
    }
}

void socket_deadline::expires_never() noexcept { st_->at = clock::time_point::max(); }

boost::system::error_code socket_deadline::settle(boost::system::error_code ec) noexcept {
    st_->at = clock::time_point::max();
    if (st_->fired) {
        st_->fired = false;
        if (ec) {
            return boost::beast::error::timeout;  // aborted, or a later step on the closed socket
        }
    }
    return ec;
}

}  // namespace byok::relay
