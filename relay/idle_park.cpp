#include "relay/idle_park.hpp"

#include <memory>
#include <utility>

#include <boost/asio/error.hpp>

namespace byok::relay {

namespace {

// Asio keeps a few freed operation blocks per thread and hands them to the
// next operation that fits, so a parked wait (144 bytes) would often hold a
// larger block left by a read. Parked waits are many and long: each gets a
// block of its own size.
template <class T>
struct exact_allocator {
    using value_type = T;
    exact_allocator() = default;
    template <class U>
    exact_allocator(const exact_allocator<U>& /*other*/) noexcept {}
    T* allocate(std::size_t n) { return static_cast<T*>(::operator new(n * sizeof(T))); }
    void deallocate(T* p, std::size_t /*n*/) noexcept { ::operator delete(p); }
    template <class U>
    bool operator==(const exact_allocator<U>& /*other*/) const noexcept {
        return true;
    }
};

}  // namespace

// The handler of a parked connection's wait.
struct idle_park::waiter {
    using allocator_type = exact_allocator<void>;
    idle_park* park;
    entry* e;
    void operator()(const boost::system::error_code& ec) const { park->on_ready(e, ec); }
    [[nodiscard]] allocator_type get_allocator() const noexcept { return {}; }
};

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
    e->conn.socket.async_wait(boost::asio::socket_base::wait_read, waiter{this, e});
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
