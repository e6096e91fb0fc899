#include "relay/idle_park.hpp"

#include <memory>
#include <utility>

#include <boost/asio/error.hpp>

namespace byok::relay {

idle_park::idle_park(boost::asio::io_context& ioc, clock::duration idle_timeout, wake_fn wake, closed_fn closed)
    : timeout_(idle_timeout), wake_(std::move(wake)), closed_(std::move(closed)), timer_(ioc) {}

idle_park::~idle_park() {
    // Pending waits and the timer's handler are destroyed with the
    // io_context, never run: they hold only plain pointers.
    while (head_ != nullptr) {
        entry* e = head_;
        unlink(e);
        delete e;
    }
}

void idle_park::park(client_conn&& c) {
    auto* e = new entry{std::move(c), clock::now()};
    e->prev = tail_;
    (tail_ != nullptr ? tail_->next : head_) = e;
    tail_ = e;
    ++size_;
    // A wait for readability, not a read: no buffer while idle, and no
    // speculative recv(2) that would find nothing.
    e->conn.socket.async_wait(boost::asio::socket_base::wait_read,
                              [this, e](const boost::system::error_code& ec) { on_ready(e, ec); });
    if (!timer_armed_) {
        arm();
    }
}

void idle_park::on_ready(entry* e, const boost::system::error_code& ec) {
    unlink(e);
    const std::unique_ptr<entry> owned(e);
    if (ec || e->closing || !e->conn.socket.is_open()) {
        boost::system::error_code ignored;
        e->conn.socket.close(ignored);
        closed_(e->conn);
        return;
    }
    e->conn.resumed = true;
    wake_(std::move(e->conn));
}

void idle_park::close_all() {
    for (entry* e = head_; e != nullptr; e = e->next) {
        if (!e->closing) {
            e->closing = true;
            boost::system::error_code ignored;
            e->conn.socket.close(ignored);  // its wait completes as aborted: on_ready
        }
    }
}

// Sleeps until the oldest open connection's limit.
void idle_park::arm() {
    entry* first = head_;
    while (first != nullptr && first->closing) {
        first = first->next;
    }
    if (first == nullptr) {
        return;  // parking the next one arms the timer again
    }
    timer_armed_ = true;
    timer_.expires_at(first->since + timeout_);
    timer_.async_wait([this](const boost::system::error_code& ec) {
        timer_armed_ = false;
        if (ec != boost::asio::error::operation_aborted) {
            sweep();
        }
    });
}

void idle_park::sweep() {
    const auto cutoff = clock::now() - timeout_;
    for (entry* e = head_; e != nullptr && e->since <= cutoff; e = e->next) {
        if (!e->closing) {
            e->closing = true;
            boost::system::error_code ignored;
            e->conn.socket.close(ignored);
        }
    }
    arm();
}

void idle_park::unlink(entry* e) noexcept {
    (e->prev != nullptr ? e->prev->next : head_) = e->next;
    (e->next != nullptr ? e->next->prev : tail_) = e->prev;
    e->prev = e->next = nullptr;
    --size_;
}

}  // namespace byok::relay
