#include "relay/pump.hpp"

#include <cerrno>
#include <ctime>

#include <sys/socket.h>
#include <sys/uio.h>

#include <boost/asio/as_tuple.hpp>
#include <boost/asio/experimental/awaitable_operators.hpp>
#include <boost/asio/use_awaitable.hpp>
#include <boost/asio/write.hpp>
#include <boost/beast/core/buffers_suffix.hpp>
#include <boost/beast/core/error.hpp>
#include <boost/beast/http/error.hpp>

#include "relay/http_util.hpp"

namespace byok::relay {

namespace asio = boost::asio;
namespace beast = boost::beast;
namespace http = beast::http;
using asio::as_tuple;
using asio::use_awaitable;
using namespace asio::experimental::awaitable_operators;

namespace {

// "<size in hex>\r\n", the line before a chunk's data; returns its length.
// (snprintf's format parsing was a visible share of an SSE event's cost.)
std::size_t chunk_size_line(char (&out)[24], std::size_t size) noexcept {
    static constexpr char digits[] = "0123456789abcdef";
    char rev[16];
    std::size_t n = 0;
    do {
        rev[n++] = digits[size & 0xf];
        size >>= 4;
    } while (size != 0);
    for (std::size_t i = 0; i < n; ++i) {
        out[i] = rev[n - 1 - i];
    }
    out[n] = '\r';
    out[n + 1] = '\n';
    return n + 2;
}

// One piece of response body as it goes on the wire: an HTTP/1.1 chunk when
// the relay frames the answer as chunked, the bytes alone otherwise. An
// empty piece is nothing at all, never the last-chunk.
class body_piece {
public:
    body_piece(std::string_view data, bool chunked) noexcept : data_(data) {
        if (chunked && !data.empty()) {
            size_len_ = chunk_size_line(size_line_, data.size());
            crlf_len_ = 2;
        }
    }
    [[nodiscard]] asio::const_buffer size_line() const noexcept { return asio::buffer(size_line_, size_len_); }
    [[nodiscard]] asio::const_buffer data() const noexcept { return asio::buffer(data_); }
    [[nodiscard]] asio::const_buffer crlf() const noexcept { return asio::buffer("\r\n", crlf_len_); }

private:
    char size_line_[24]{};
    std::size_t size_len_ = 0;
    std::size_t crlf_len_ = 0;
    std::string_view data_;
};

// One non-blocking sendmsg of `bufs` (of the first 8 non-empty ones; the
// caller writes what is left): the bytes the socket took, 0 when it is full.
// `ec` is set when the client is gone.
std::size_t send_now(int fd, std::span<const asio::const_buffer> bufs, boost::system::error_code& ec) noexcept {
    std::array<iovec, 8> iov{};
    std::size_t count = 0;
    for (const auto& b : bufs) {
        if (b.size() > 0 && count < iov.size()) {
            iov[count].iov_base = const_cast<void*>(b.data());
            iov[count].iov_len = b.size();
            ++count;
        }
    }
    msghdr msg{};
    msg.msg_iov = iov.data();
    msg.msg_iovlen = count;
    const ssize_t r = ::sendmsg(fd, &msg, MSG_DONTWAIT | MSG_NOSIGNAL);
    if (r >= 0) {
        return static_cast<std::size_t>(r);
    }
    if (errno != EAGAIN && errno != EWOULDBLOCK && errno != EINTR) {
        ec.assign(errno, boost::system::system_category());
    }
    return 0;
}

error_code failure_for(const boost::system::error_code& ec) noexcept {
    if (ec == beast::error::timeout) {
        return error_code::upstream_timeout;
    }
    if (ec.category() == http::make_error_code(http::error::bad_version).category()) {
        return error_code::upstream_bad_response;
    }
    return error_code::upstream_unreachable;
}

}  // namespace

answer_framing decide_framing(unsigned status, bool upstream_chunked, std::optional<std::uint64_t> upstream_length,
                              bool is_sse, unsigned client_version) noexcept {
    answer_framing f;
    if (status == 204 || status == 304) {
        f.k = answer_framing::kind::none;
    } else if (upstream_length && !upstream_chunked) {
        f.k = answer_framing::kind::length;  // passed byte for byte: nothing may be added inside
    } else if (client_version >= 11) {
        f.k = answer_framing::kind::chunked;
        f.keepalive_comments = is_sse;
    } else {
        f.k = answer_framing::kind::close;  // HTTP/1.0: the end of the body is the end of the connection
    }
    return f;
}

void sse_boundary::feed(std::string_view bytes) noexcept {
    // Only the line ends after the last other byte matter: from there the
    // count starts again at 0. Found from the end, so an event costs a few
    // steps, not one per byte (a visible share of an SSE event's cost).
    std::size_t tail = bytes.size();
    while (tail > 0 && (bytes[tail - 1] == '\r' || bytes[tail - 1] == '\n')) {
        --tail;
    }
    if (tail > 0) {
        line_ends_ = 0;
        prev_ = bytes[tail - 1];
        bytes.remove_prefix(tail);
    }
    for (const char c : bytes) {
        if (c == '\n' && prev_ == '\r') {
            // The LF of a CRLF: the CR already counted.
        } else if (c == '\r' || c == '\n') {
            ++line_ends_;
        } else {
            line_ends_ = 0;
        }
        prev_ = c;
    }
}

answer_pump::answer_pump(asio::ip::tcp::socket& client, socket_deadline& client_deadline, upstream_conn& conn,
                         const config& cfg, cors_decision cors, bool keep_alive, unsigned client_version)
    : client_(client),
      client_deadline_(client_deadline),
      conn_(conn),
      cfg_(cfg),
      cors_(cors),
      keep_alive_(keep_alive),
      client_version_(client_version),
      resp_(conn, std::chrono::seconds(cfg.upstream_timeout_s)),
      writer_wake_(client.get_executor()),
      reader_wake_(client.get_executor()) {}

asio::mutable_buffer answer_pump::piece(std::size_t idx) {
    if (!bufs_) {
        bufs_ = std::make_unique_for_overwrite<char[]>(2 * chunk);
    }
    return asio::buffer(bufs_.get() + idx * chunk, chunk);
}

void answer_pump::release_if_idle() noexcept {
    if (reader_waits_ && !has_pending_) {
        bufs_.reset();
    }
}

answer_pump::~answer_pump() {
    if (watch_) {
        watch_->pump = nullptr;
    }
}

asio::awaitable<pump_result> answer_pump::run() {
    // The watcher is a plain reactor operation beside the exchange, not a
    // second coroutine in a parallel group: no frames, no cancellation
    // signals, one small block (docs/benchmarks.md).
    watch_client();
    co_await exchange();
    result_.reusable = result_.complete && !result_.client_gone && resp_.reusable();
    result_.total_s = std::chrono::duration<double>(std::chrono::steady_clock::now() - sent_at_).count();
    co_return result_;
}

void answer_pump::client_left() {
    result_.client_gone = true;
    conn_.close();  // the provider stops generating for nobody
    wake(reader_wake_);
    wake(writer_wake_);
}

asio::awaitable<bool> answer_pump::write_client(std::span<const asio::const_buffer> bufs, bool try_now) {
    // What the socket has not taken yet, under the client's write deadline.
    beast::buffers_suffix<std::span<const asio::const_buffer>> rest(bufs);
    if (try_now) {
        // One non-blocking send first: an answer's head and body usually fit
        // the socket, and async_write would post its completion (a scheduler
        // round, often an extra epoll_wait) even when its first send took it all.
        boost::system::error_code ec;
        const std::size_t sent = send_now(client_.native_handle(), bufs, ec);
        if (ec) {
            co_return false;
        }
        result_.bytes_out += sent;
        if (sent == asio::buffer_size(bufs)) {
            last_write_ = std::chrono::steady_clock::now();
            co_return true;
        }
        rest.consume(sent);
    }
    client_deadline_.expires_after(std::chrono::seconds(cfg_.write_timeout_s));
    writing_ = true;
    auto [ec, n] = co_await asio::async_write(client_, rest, as_tuple(use_awaitable));
    writing_ = false;
    (void)client_deadline_.settle(ec);
    result_.bytes_out += n;
    last_write_ = std::chrono::steady_clock::now();
    co_return !ec;
}

std::array<asio::const_buffer, 3> answer_pump::pending_wire() const noexcept {
    const bool chunked = pending_size_len_ > 0;
    std::array<asio::const_buffer, 3> wire{asio::buffer(pending_size_, pending_size_len_), asio::buffer(pending_),
                                           asio::buffer("\r\n", chunked ? 2 : 0)};
    std::size_t skip = pending_sent_;
    for (auto& b : wire) {
        const std::size_t k = std::min(skip, b.size());
        b += k;
        skip -= k;
    }
    return wire;
}

bool answer_pump::send_or_hand_over(std::string_view data) {
    pending_ = data;
    pending_size_len_ = 0;
    if (framing_.k == answer_framing::kind::chunked) {
        pending_size_len_ = chunk_size_line(pending_size_, data.size());
    }
    pending_sent_ = 0;
    has_pending_ = true;
    if (framing_.keepalive_comments) {
        boundary_.feed(data);  // the writer looks at it only once nothing is pending
    }
    if (head_sent_ && !writing_) {
        // The writer is idle: one send, no wake-up. What the socket does not
        // take (it is full: a slow client) the writer writes, under the
        // client's write deadline.
        boost::system::error_code ec;
        const auto wire = pending_wire();
        const std::size_t n = send_now(client_.native_handle(), wire, ec);
        if (ec) {
            return false;
        }
        if (n > 0) {
            pending_sent_ += n;
            result_.bytes_out += n;
            last_write_ = std::chrono::steady_clock::now();
            if (n == asio::buffer_size(wire)) {
                has_pending_ = false;
                return true;
            }
        }
    }
    wake(writer_wake_);
    return true;
}

namespace {

// Whether `name` is one of the ", "-separated entries of `list` (exactly).
bool in_list(std::string_view list, std::string_view name) noexcept {
    while (!list.empty()) {
        const std::size_t comma = list.find(", ");
        if (list.substr(0, comma) == name) {
            return true;
        }
        list = comma == std::string_view::npos ? std::string_view() : list.substr(comma + 2);
    }
    return false;
}

}  // namespace

std::string answer_pump::client_head() const {
    const auto& head = resp_.head();
    const unsigned status = resp_.status();
    std::string h;
    h.reserve(1024);  // a provider's head with its rate-limit fields and the expose list: one allocation
    h.append("HTTP/1.1 ").append(std::to_string(status)).append(" ").append(reason_phrase(status));
    h.append("\r\nDate: ").append(http_date(static_cast<std::int64_t>(std::time(nullptr)))).append("\r\n");
    // Access-Control-Expose-Headers: the relay's own and every provider
    // header passed on, once each; only an answer a browser may read needs it.
    const bool expose = cors_.allowed();
    // Only needed within this call: one buffer per thread, its room kept
    // (built name by name, it grew by reallocation about five times a request).
    thread_local std::string exposed;
    exposed.assign(expose ? local_exposed_headers : std::string_view());
    for_each_allowed_field(head, forward_response_header, [&](std::string_view name, std::string_view value) {
        h.append(name).append(": ").append(value).append("\r\n");
        if (expose && name != "content-type" && name != "retry-after" && !in_list(exposed, name)) {
            exposed.append(", ").append(name);  // once, though a provider may repeat a header
        }
    });
    h.append("Cache-Control: no-store\r\nX-Accel-Buffering: no\r\n");
    append_cors(h, cors_, exposed);
    switch (framing_.k) {
    case answer_framing::kind::length:
        h.append("Content-Length: ").append(std::to_string(*resp_.content_length())).append("\r\n");
        break;
    case answer_framing::kind::chunked:
        h.append("Transfer-Encoding: chunked\r\n");
        break;
    case answer_framing::kind::none:
    case answer_framing::kind::close:
        break;
    }
    if (!keep_alive_) {
        h.append("Connection: close\r\n");
    }
    h.append("\r\n");
    return h;
}

asio::awaitable<void> answer_pump::exchange() {
    const auto ec = co_await resp_.read_head();
    boost::system::error_code pec;
    if (!ec && !result_.client_gone) {
        result_.ttfb_s = std::chrono::duration<double>(std::chrono::steady_clock::now() - sent_at_).count();
        result_.status = resp_.status();
        const bool is_sse = resp_.head()[http::field::content_type].substr(0, 17) == "text/event-stream";
        framing_ = decide_framing(result_.status, resp_.chunked(), resp_.content_length(), is_sse, client_version_);
        if (framing_.k == answer_framing::kind::close) {
            keep_alive_ = false;
        }
        // Body bytes that came with the head (or already after it) go into piece 0.
        const auto into = piece(0);
        const std::size_t first = resp_.parse_body(into, pec);
        pending_ = std::string_view(static_cast<const char*>(into.data()), first);
        has_pending_ = first > 0;
    }
    if (ec || result_.client_gone) {
        result_.failure = failure_for(ec);
    } else if (pec) {
        result_.failure = error_code::upstream_bad_response;
    } else if (resp_.done()) {
        // The whole answer is here: head, body and end in one write.
        const std::string h = client_head();
        const bool chunked = framing_.k == answer_framing::kind::chunked;
        const body_piece piece(pending_, chunked);
        const std::array<asio::const_buffer, 5> bufs{asio::buffer(h), piece.size_line(), piece.data(), piece.crlf(),
                                                     asio::buffer(chunked ? std::string_view("0\r\n\r\n") : "")};
        result_.head_written = true;
        result_.complete = co_await write_client(bufs, true);
        if (!result_.complete) {
            result_.client_gone = true;
        }
    } else {
        result_.head_written = true;
        co_await (reader() && writer());
    }
    done_ = true;
    boost::system::error_code ignored;
    client_.cancel(ignored);  // stops the watcher
}

asio::awaitable<void> answer_pump::reader() {
    std::size_t idx = 1;  // piece 0 may hold the first piece
    boost::system::error_code ec;
    while (!resp_.done() && !result_.client_gone) {
        std::size_t got = resp_.parse_body(piece(idx), ec);
        if (!ec && got == 0 && !resp_.done()) {
            // Nothing buffered: wait for the provider, holding no piece once
            // the writer is done with the last one.
            reader_waits_ = true;
            release_if_idle();
            ec = co_await resp_.fill();
            reader_waits_ = false;
            if (!ec || (ec == http::error::end_of_stream && resp_.done())) {
                boost::system::error_code pec;
                got = resp_.parse_body(piece(idx), pec);
                if (pec) {
                    ec = pec;
                }
            }
        }
        if (got > 0) {
            while (has_pending_ && !result_.client_gone) {
                reader_wake_.expires_at(asio::steady_timer::time_point::max());
                co_await reader_wake_.async_wait(as_tuple(use_awaitable));
            }
            if (result_.client_gone) {
                break;
            }
            if (!send_or_hand_over(std::string_view(bufs_.get() + idx * chunk, got))) {
                client_left();
                break;
            }
            if (has_pending_) {
                idx ^= 1;  // the writer holds this piece
            }
        }
        if (ec && !(ec == http::error::end_of_stream && resp_.done())) {
            break;
        }
    }
    result_.complete = resp_.done();  // for now: the writer ends the answer
    finished_ = true;
    wake(writer_wake_);
}

asio::awaitable<void> answer_pump::writer() {
    const std::string h = client_head();
    const bool chunked = framing_.k == answer_framing::kind::chunked;
    {
        // The head, with the first piece of body if it is already here.
        // Without one, the reader may hand a piece over while the head is
        // written: that piece is still to be written, not the one written.
        const bool with_first = has_pending_;
        const std::string_view first = with_first ? pending_ : std::string_view();
        const body_piece piece(first, chunked);
        const std::array<asio::const_buffer, 4> bufs{asio::buffer(h), piece.size_line(), piece.data(), piece.crlf()};
        const bool ok = co_await write_client(bufs, true);
        boundary_.feed(first);
        head_sent_ = true;
        if (with_first) {
            has_pending_ = false;
            release_if_idle();
            wake(reader_wake_);
        }
        if (!ok) {
            client_left();
            co_return;
        }
    }
    const auto quiet = std::chrono::seconds(cfg_.sse_keepalive_s);
    auto not_before = std::chrono::steady_clock::time_point{};
    for (;;) {
        if (result_.client_gone) {
            co_return;
        }
        if (has_pending_) {
            // A piece the reader could not send at once (or while this
            // writer was busy); its bytes were fed to boundary_ already.
            const auto wire = pending_wire();
            const bool ok = co_await write_client(wire, false);
            has_pending_ = false;
            release_if_idle();
            wake(reader_wake_);
            if (!ok) {
                client_left();
                co_return;
            }
            continue;
        }
        if (finished_) {
            break;
        }
        // One timer for the keep-alive comments: it sleeps until
        // sse_keepalive_s after the last write it knows of, and when it
        // wakes early (bytes went out meanwhile, often written by the
        // reader) it sleeps again until sse_keepalive_s after those.
        // (Mid-event, the comment waits: checked again sse_keepalive_s later.)
        if (framing_.keepalive_comments) {
            writer_wake_.expires_at(std::max(last_write_ + quiet, not_before));
        } else {
            writer_wake_.expires_at(asio::steady_timer::time_point::max());
        }
        auto [wec] = co_await writer_wake_.async_wait(as_tuple(use_awaitable));
        const auto now = std::chrono::steady_clock::now();
        if (wec || !framing_.keepalive_comments || now < last_write_ + quiet || now < not_before) {
            continue;
        }
        not_before = now + quiet;
        if (boundary_.at_boundary() && !has_pending_ && !finished_ && !result_.client_gone) {
            // A comment line between two events: ignored by SSE parsers, it
            // keeps idle-timeout proxies from cutting the stream.
            static constexpr std::string_view ka = ": keep-alive\n\n";
            const body_piece piece(ka, true);
            const std::array<asio::const_buffer, 3> bufs{piece.size_line(), piece.data(), piece.crlf()};
            if (!co_await write_client(bufs, true)) {
                client_left();
                co_return;
            }
        }
    }
    if (result_.complete) {
        if (chunked) {
            const std::array<asio::const_buffer, 1> end{asio::buffer(std::string_view("0\r\n\r\n"))};
            if (!co_await write_client(end, true)) {
                result_.complete = false;
                result_.client_gone = true;
            }
        }
    } else {
        // The provider broke off mid-answer: the client must see a broken
        // answer, not a complete-looking one, so the connection is closed
        // without the final chunk.
        boost::system::error_code ignored;
        client_.close(ignored);
    }
}

void answer_pump::watch_client() {
    // Peeks at one byte of the client's socket, with no buffer and no time
    // limit: a generation may last minutes and the client sends nothing
    // meanwhile. A reactor read, not async_wait: after the request's read
    // drained the socket Asio queues it without a system call, where
    // async_wait re-arms the descriptor (epoll_ctl) each time.
    watch_ = std::make_shared<watch_state>(watch_state{this});
    client_.async_receive(asio::buffer(&watch_->byte, 1), asio::socket_base::message_peek,
                          [w = watch_](const boost::system::error_code& ec, std::size_t n) {
                              answer_pump* const p = w->pump;
                              if (p == nullptr || p->done_ || ec == asio::error::operation_aborted ||
                                  (!ec && n > 0)) {
                                  return;  // the exchange ended first, or a pipelined request (read after this answer)
                              }
                              // End of stream, reset, or an error: the client is gone.
                              p->client_left();
                          });
}

}  // namespace byok::relay
