#pragma once
// Connections from the relay to providers.
//
// Every thread of the relay runs its own io_context and owns its own pools,
// so an upstream connection is only ever touched by the thread that serves
// the client it is used for: no strands, no locks on the I/O path.
// HTTPS is verified against the system CA store (or the provider's ca_file),
// with host-name checking and SNI; the key is written to a connection only
// after its handshake verified.

#include <chrono>
#include <memory>
#include <optional>
#include <span>
#include <tuple>
#include <vector>

#include <boost/asio/awaitable.hpp>
#include <boost/asio/io_context.hpp>
#include <boost/asio/ip/tcp.hpp>
#include <boost/asio/ssl/context.hpp>
#include <boost/asio/steady_timer.hpp>
#include <boost/beast/core/flat_buffer.hpp>
#include <boost/beast/http/buffer_body.hpp>
#include <boost/beast/http/parser.hpp>
#include <openssl/ssl.h>

#include "relay/config.hpp"
#include "relay/deadline.hpp"

namespace byok::relay {

namespace asio = boost::asio;
namespace beast = boost::beast;

// One TLS context per provider, shared by all threads (an SSL_CTX is safe to
// share once configured). Throws config_error if ca_file cannot be loaded.
[[nodiscard]] std::shared_ptr<asio::ssl::context> make_client_tls_context(const provider& p);

// One connection to a provider: plain TCP, or TLS run by OpenSSL directly on
// the socket (SSL_set_fd; non-blocking SSL_read/SSL_write, waiting for the
// socket with async_wait when OpenSSL wants to read or write). Asio's
// ssl::stream would copy every byte through a BIO pair and its own buffers,
// about 70 KiB per connection before any data moves; here OpenSSL's record
// buffers are the only ones, and SSL_MODE_RELEASE_BUFFERS gives them back
// whenever the connection has nothing in flight.
class upstream_conn {
    asio::ip::tcp::socket sock_;  // first: `deadline` refers to it
    SSL* ssl_ = nullptr;

public:
    upstream_conn(asio::io_context& ioc, SSL_CTX* tls);
    ~upstream_conn();
    upstream_conn(const upstream_conn&) = delete;
    upstream_conn& operator=(const upstream_conn&) = delete;

    [[nodiscard]] bool is_tls() const noexcept { return ssl_ != nullptr; }
    [[nodiscard]] SSL* ssl() const noexcept { return ssl_; }
    [[nodiscard]] asio::ip::tcp::socket& socket() noexcept { return sock_; }
    [[nodiscard]] bool is_open() const noexcept { return sock_.is_open(); }
    // Closes the socket; pending operations complete with operation_aborted.
    void close() noexcept;

    // TLS client handshake after connect (verification set up by the pool).
    [[nodiscard]] asio::awaitable<boost::system::error_code> handshake();
    // Writes all of `bufs`.
    [[nodiscard]] asio::awaitable<boost::system::error_code> write(std::span<const asio::const_buffer> bufs);
    // Reads at least one byte into `into`: every byte already received (all
    // buffered TLS records), as much as fits. A clean end (close_notify, or
    // FIN on plain TCP) is asio::error::eof; a TLS connection cut without
    // close_notify is asio::ssl::error::stream_truncated.
    [[nodiscard]] asio::awaitable<std::tuple<boost::system::error_code, std::size_t>> read_some(
        asio::mutable_buffer into);
    // OpenSSL holds received bytes not read yet: read_some() takes them without waiting.
    [[nodiscard]] bool tls_pending() const noexcept { return ssl_ != nullptr && SSL_has_pending(ssl_) == 1; }
    // Waits, holding no record buffer, until the provider sent something.
    // For when nothing can be there yet (and !tls_pending()): right after a
    // request was written, and between two events of a slow stream. Saves a
    // read that would only say EAGAIN. Leaves `deadline` as it is (the caller
    // settles it after the read that follows). Not a coroutine of its own:
    // the caller's co_await runs the wait directly.
    [[nodiscard]] asio::awaitable<std::tuple<boost::system::error_code>> wait_readable();
    // Registers the socket with the reactor anew, for reads only: Asio keeps
    // EPOLLOUT registered once a write waited (a connect always does), and a
    // wait for readability then also wakes the thread at once, for nothing.
    // Done by handshake(), and by write() after it waited for room. An error
    // fails the exchange that asked for it.
    [[nodiscard]] boost::system::error_code register_for_reads() noexcept;
    // True if the provider sent nothing since the last exchange: no bytes in
    // OpenSSL's buffers and none (not even a FIN) in the socket.
    [[nodiscard]] bool still_quiet() noexcept;

    // Time limit for the operation about to start (then settled by the calls above).
    socket_deadline deadline{sock_};
    // Bytes read from the provider, not yet parsed: a response head (at most
    // 16 KiB, counted by upstream_response) plus one read.
    beast::flat_buffer buffer{20 * 1024};
    std::chrono::steady_clock::time_point idle_since{};
    // Its TLS session was copied into its pool's (upstream_pool::remember_session).
    bool session_remembered = false;

private:
    bool waits_for_writes_ = false;  // a wait for writability since register_for_reads()
    // Waits until the socket can do what OpenSSL asked for: SSL_ERROR_WANT_READ or SSL_ERROR_WANT_WRITE.
    [[nodiscard]] asio::awaitable<std::tuple<boost::system::error_code>> wait_for(int ssl_want);
    // `sys_errno`: errno as it was right after the failed OpenSSL call.
    [[nodiscard]] boost::system::error_code tls_error(int ssl_error, int sys_errno) const noexcept;
};

// Reading one answer from a provider: its head, then its body piece by piece.
//
// The provider's HTTP is read here and nowhere else. Interim responses
// (100 Continue, 103 Early Hints: RFC 9110 §15.2) are read and dropped: they
// are not the answer, and taking one for the answer would leave the real
// answer in the connection for the next request that reuses it. 101
// (Switching Protocols) is an error: the relay never asks to switch. The head
// is limited in total (all interim heads and the final one together), since
// Beast's header_limit only bounds what one put() sees.
//
// Owned by one request on the connection's thread; `conn` must outlive it.
class upstream_response {
public:
    using parser_type = beast::http::response_parser<beast::http::buffer_body>;
    static constexpr std::size_t head_limit = 16 * 1024;
    static constexpr std::size_t max_interim = 8;
    static constexpr std::size_t read_size = 4096;
    // Unparsed bytes fill() still moves into a buffer of their own before a wait.
    static constexpr std::size_t small_leftover = 64;

    upstream_response(upstream_conn& conn, std::chrono::seconds timeout) noexcept;

    // Reads until the head of the final response is parsed (body bytes that
    // came with it stay buffered for parse_body). Errors:
    // beast::error::timeout, upstream I/O errors, or an http::error for a
    // malformed, oversized or 101 answer.
    [[nodiscard]] asio::awaitable<boost::system::error_code> read_head();

    // Parses body bytes already received into `into`, without waiting.
    // Returns how many bytes were written; error on a framing error.
    [[nodiscard]] std::size_t parse_body(asio::mutable_buffer into, boost::system::error_code& ec);
    // Waits for more bytes from the provider (at most read_size). A clean end
    // of the connection is given to the parser, which decides whether it
    // ended a close-delimited body (done(), then http::error::end_of_stream)
    // or cut the answer short (an error).
    [[nodiscard]] asio::awaitable<boost::system::error_code> fill();

    [[nodiscard]] const beast::http::response_header<>& head() const noexcept { return parser_->get().base(); }
    [[nodiscard]] unsigned status() const noexcept { return parser_->get().result_int(); }
    [[nodiscard]] bool chunked() const noexcept { return parser_->chunked(); }
    [[nodiscard]] std::optional<std::uint64_t> content_length() const noexcept {
        const auto n = parser_->content_length();
        return n ? std::optional<std::uint64_t>(*n) : std::nullopt;
    }
    // The final answer was read in full, framed as its head said.
    [[nodiscard]] bool done() const noexcept { return parser_->is_done(); }
    // The connection may carry another request: the whole final answer was
    // read, the provider did not ask to close, and nothing is left over.
    [[nodiscard]] bool reusable() const noexcept;

private:
    void new_parser();
    // Feeds the parser what was read and not yet parsed: the head, then body
    // bytes into the buffer set in the parser's body until it is full. Never waits.
    [[nodiscard]] boost::system::error_code parse_buffered();

    upstream_conn& conn_;
    std::chrono::seconds timeout_;
    std::optional<parser_type> parser_;
    std::size_t head_bytes_ = 0;
    std::size_t interim_ = 0;
    bool wait_first_ = true;  // see fill()
};

// Idle connections to one provider, for one thread.
class upstream_pool {
public:
    upstream_pool(asio::io_context& ioc, const provider& p, std::shared_ptr<asio::ssl::context> tls);
    ~upstream_pool();
    upstream_pool(const upstream_pool&) = delete;
    upstream_pool& operator=(const upstream_pool&) = delete;

    // An idle connection not older than the idle limit, or nullptr.
    [[nodiscard]] std::unique_ptr<upstream_conn> take();
    void give_back(std::unique_ptr<upstream_conn> c);

    // A new verified connection; on failure returns nullptr and sets `ec`.
    [[nodiscard]] asio::awaitable<std::unique_ptr<upstream_conn>> connect(std::chrono::seconds timeout,
                                                                          boost::system::error_code& ec);
    // Keeps a copy of the TLS session of a connection that completed an
    // exchange, for resumption (once per connection: by the end of its
    // first exchange it has read the provider's session tickets).
    void remember_session(upstream_conn& c);

    void close_all() noexcept;
    [[nodiscard]] const provider& prov() const noexcept { return prov_; }

private:
    // One lookup of the provider's name, shared by every request that waits for it.
    struct resolve_state {
        bool finished = false;
        boost::system::error_code ec;
        asio::ip::tcp::resolver::results_type results;
        std::vector<asio::steady_timer*> waiters;  // woken when the lookup ends
    };
    // The provider's addresses: cached for a while; otherwise looked up,
    // waiting no later than `give_up_at` (then ec = beast::error::timeout).
    [[nodiscard]] asio::awaitable<asio::ip::tcp::resolver::results_type> resolve(
        std::chrono::steady_clock::time_point give_up_at, boost::system::error_code& ec);
    // Takes the addresses of a lookup that has ended into resolved_ (a failed one: nothing).
    void adopt_finished_lookup();

    asio::io_context& ioc_;
    const provider& prov_;
    std::shared_ptr<asio::ssl::context> tls_ctx_;
    asio::ip::tcp::resolver resolver_;
    std::shared_ptr<resolve_state> resolving_;
    asio::ip::tcp::resolver::results_type resolved_;
    std::chrono::steady_clock::time_point resolved_at_{};
    std::vector<std::unique_ptr<upstream_conn>> idle_;
    void* session_ = nullptr;  // SSL_SESSION*, owned
};

}  // namespace byok::relay
