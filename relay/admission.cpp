#include "relay/admission.hpp"

#include <algorithm>
#include <iterator>

#include <boost/asio/as_tuple.hpp>
#include <boost/asio/use_awaitable.hpp>
#include <boost/beast/core/error.hpp>
#include <boost/beast/http/read.hpp>

namespace byok::relay {

namespace asio = boost::asio;
namespace beast = boost::beast;
namespace http = beast::http;

body_budget::lease& body_budget::lease::operator=(lease&& o) noexcept {
    if (this != &o) {
        release();
        b_ = o.b_;
        n_ = o.n_;
        o.b_ = nullptr;
        o.n_ = 0;
    }
    return *this;
}

bool body_budget::lease::grow_to(std::size_t n) noexcept {
    if (b_ == nullptr) {
        return false;
    }
    if (n <= n_) {
        return true;
    }
    if (!b_->take(n - n_)) {
        return false;
    }
    n_ = n;
    return true;
}

void body_budget::lease::release() noexcept {
    if (b_ != nullptr && n_ > 0) {
        b_->give(n_);
    }
    n_ = 0;
}

bool body_budget::take(std::size_t n) noexcept {
    std::size_t cur = held_.load(std::memory_order_relaxed);
    do {
        if (n > max_ || cur > max_ - n) {
            return false;
        }
    } while (!held_.compare_exchange_weak(cur, cur + n, std::memory_order_relaxed));
    return true;
}

in_flight_slot in_flight_slot::try_take(std::atomic<std::int64_t>& counter, std::size_t max) noexcept {
    const auto now = counter.fetch_add(1, std::memory_order_relaxed) + 1;
    if (now > static_cast<std::int64_t>(max)) {
        counter.fetch_sub(1, std::memory_order_relaxed);
        return in_flight_slot(nullptr);
    }
    return in_flight_slot(&counter);
}

bool reserve_announced_body(body_budget::lease& lease,
                            const http::request_parser<http::string_body>& parser) noexcept {
    const auto announced = parser.content_length();
    return !announced || lease.grow_to(static_cast<std::size_t>(*announced));
}

asio::awaitable<body_outcome> read_request_body(asio::ip::tcp::socket& sock, socket_deadline& deadline,
                                                read_buffer& buffer,
                                                http::request_parser<http::string_body>& parser,
                                                body_budget::lease& lease, const body_pace& pace) {
    using clock = std::chrono::steady_clock;
    const std::uint64_t announced = parser.content_length().value_or(0);
    // Trailer fields would be merged into the header set by Beast; the
    // number of fields before and after the body tells whether any came.
    const auto fields_before = std::distance(parser.get().begin(), parser.get().end());

    const auto start = clock::now();
    const auto give_up_at = start + pace.total;
    auto window_end = start + pace.window;
    std::uint64_t in_window = 0;
    std::uint64_t received = parser.get().body().size();
    const auto needed_in_window = [&] {
        const std::uint64_t want = static_cast<std::uint64_t>(pace.bytes_per_s) *
                                   static_cast<std::uint64_t>(pace.window.count());
        return parser.content_length() ? std::min<std::uint64_t>(want, announced - std::min(announced, received))
                                       : want;
    };
    std::uint64_t need = needed_in_window();

    // Body bytes that came with the head (a small request's whole body) are
    // parsed first, as Beast's read would, without its posted completion.
    bool buffered = buffer.size() != 0;
    while (!parser.is_done()) {
        boost::system::error_code ec;
        if (buffered) {
            buffered = false;
            buffer.consume(parser.put(buffer.data(), ec));
            if (ec == http::error::need_more) {
                ec = {};
            }
        } else {
            // The limit of this read: the end of this window, or of the next
            // one once this window has had its bytes; never past the total.
            const auto limit = std::min(give_up_at, in_window >= need ? window_end + pace.window : window_end);
            deadline.expires_after(limit - clock::now());
            std::size_t n = 0;
            std::tie(ec, n) = co_await http::async_read_some(sock, buffer, parser, asio::as_tuple(asio::use_awaitable));
            ec = deadline.settle(ec);
        }
        const std::uint64_t now_size = parser.get().body().size();
        in_window += now_size - std::min(now_size, received);
        received = now_size;
        if (!parser.content_length() && !lease.grow_to(parser.get().body().capacity())) {
            co_return body_outcome::over_budget;
        }
        if (ec) {
            if (ec == http::error::body_limit) {
                co_return body_outcome::too_large;
            }
            if (ec == beast::error::timeout) {
                co_return body_outcome::too_slow;
            }
            if (ec == http::error::end_of_stream || ec == asio::error::eof || ec == asio::error::connection_reset ||
                ec == http::error::partial_message || ec == asio::error::operation_aborted) {
                co_return body_outcome::client_gone;
            }
            co_return body_outcome::malformed;
        }
        const auto now = clock::now();
        while (now >= window_end) {
            if (in_window < need && !parser.is_done()) {
                co_return body_outcome::too_slow;
            }
            window_end += pace.window;
            in_window = 0;
            need = needed_in_window();
        }
    }
    if (std::distance(parser.get().begin(), parser.get().end()) != fields_before) {
        co_return body_outcome::has_trailers;
    }
    co_return body_outcome::complete;
}

}  // namespace byok::relay
