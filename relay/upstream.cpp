#include "relay/upstream.hpp"

#include <boost/asio/as_tuple.hpp>
#include <boost/asio/connect.hpp>
#include <boost/asio/ip/address.hpp>
#include <boost/asio/ssl/error.hpp>
#include <boost/asio/steady_timer.hpp>
#include <boost/asio/use_awaitable.hpp>
#include <boost/asio/write.hpp>
#include <boost/beast/core/error.hpp>
#include <boost/beast/http/error.hpp>
#include <openssl/err.h>
#include <openssl/ssl.h>
#include <openssl/x509v3.h>

#include <cerrno>

#include <sys/socket.h>
#include <unistd.h>

namespace byok::relay {
namespace {

constexpr std::size_t max_idle_per_pool = 64;
// Providers close idle keep-alive connections after some time; reusing one
// that is about to be closed fails the request, so idle ones are retired early.
constexpr auto max_idle_age = std::chrono::seconds(20);
// How long a provider's resolved addresses are used before resolving again.
constexpr auto resolve_ttl = std::chrono::seconds(30);
// What a response may carry: the largest answer the relay passes on.
constexpr std::uint64_t response_body_limit = 1ull << 32;

// SSL_get_error reads the thread's error queue, so the queue must be empty
// before each TLS call. ERR_clear_error empties all 16 of its slots, about
// 400 instructions in OpenSSL 3.0, and the relay made one TLS call per
// record read (callgrind, docs/benchmarks.md). The queue is nearly always
// empty already, and ERR_peek_error says so for a fraction of that.
void clear_tls_errors() noexcept {
    if (ERR_peek_error() != 0) {
        ERR_clear_error();
    }
}

bool is_ip_literal(const std::string& host) {
    boost::system::error_code ec;
    (void)asio::ip::make_address(host, ec);
    return !ec;
}

}  // namespace

std::shared_ptr<asio::ssl::context> make_client_tls_context(const provider& p) {
    auto ctx = std::make_shared<asio::ssl::context>(asio::ssl::context::tls_client);
    ctx->set_options(asio::ssl::context::default_workarounds | asio::ssl::context::no_sslv2 |
                     asio::ssl::context::no_sslv3 | asio::ssl::context::no_tlsv1 | asio::ssl::context::no_tlsv1_1);
    ctx->set_verify_mode(asio::ssl::verify_peer | asio::ssl::verify_fail_if_no_peer_cert);
    boost::system::error_code ec;
    if (p.ca_file) {
        ctx->load_verify_file(*p.ca_file, ec);
        if (ec) {
            throw config_error("config: \"providers." + p.name + ".ca_file\" is not a readable PEM CA bundle: " +
                               *p.ca_file);
        }
    } else {
        ctx->set_default_verify_paths(ec);
        if (ec) {
            throw config_error("the system CA store could not be loaded (install ca-certificates)");
        }
    }
    SSL_CTX_set_session_cache_mode(ctx->native_handle(), SSL_SESS_CACHE_CLIENT | SSL_SESS_CACHE_NO_INTERNAL_STORE);
    // Connections with nothing in flight give their record buffers back
    // (about 34 KiB each): what an idle pooled connection or a slow stream
    // between two events holds is the SSL object, not its buffers.
    SSL_CTX_set_mode(ctx->native_handle(), SSL_MODE_RELEASE_BUFFERS);
    // One recv takes every record the socket holds, not one record at a time.
    SSL_CTX_set_read_ahead(ctx->native_handle(), 1);
    return ctx;
}

upstream_conn::upstream_conn(asio::io_context& ioc, SSL_CTX* tls) : sock_(ioc) {
    if (tls != nullptr) {
        ssl_ = SSL_new(tls);
        if (ssl_ == nullptr) {
            throw std::bad_alloc();
        }
    }
}

upstream_conn::~upstream_conn() {
    close();
    SSL_free(ssl_);  // the socket BIO does not own the descriptor
}

void upstream_conn::close() noexcept {
    boost::system::error_code ignored;
    sock_.close(ignored);
}

bool upstream_conn::still_quiet() noexcept {
    // Bytes OpenSSL already holds, or a close_notify it already processed
    // (it can arrive in the same read as the end of a response).
    if (!sock_.is_open() || (ssl_ != nullptr && (SSL_has_pending(ssl_) == 1 || SSL_get_shutdown(ssl_) != 0))) {
        return false;
    }
    // An idle HTTP/1.1 connection has nothing to read. If the provider closed
    // it (FIN, RST, or a TLS close_notify waiting in the socket), reusing it
    // would fail the request after the key was sent.
    char byte = 0;
    const ssize_t r = ::recv(sock_.native_handle(), &byte, 1, MSG_PEEK | MSG_DONTWAIT);
    return r < 0 && (errno == EAGAIN || errno == EWOULDBLOCK);
}

asio::awaitable<std::tuple<boost::system::error_code>> upstream_conn::wait_for(int ssl_want) {
    const auto w = ssl_want == SSL_ERROR_WANT_WRITE ? asio::socket_base::wait_write : asio::socket_base::wait_read;
    if (ssl_want == SSL_ERROR_WANT_WRITE) {
        waits_for_writes_ = true;
    }
    return sock_.async_wait(w, asio::as_tuple(asio::use_awaitable));
}

boost::system::error_code upstream_conn::register_for_reads() noexcept {
    // Asio's reactor keeps EPOLLOUT in a descriptor's registration once a
    // write had to wait (a connect always does), and every async_wait re-arms
    // the descriptor with the events registered (epoll_ctl MOD). An idle
    // socket is writable: with EPOLLOUT there, each wait for the provider's
    // next bytes woke the thread at once for nothing (an extra epoll_wait and
    // scheduler round per SSE event; strace in docs/benchmarks.md). Released
    // and assigned again, the descriptor is registered for reads only.
    boost::system::error_code ec;
    const auto protocol = sock_.local_endpoint(ec).protocol();
    if (ec) {
        return ec;
    }
    const int fd = sock_.release(ec);
    if (ec) {
        return ec;
    }
    if (sock_.assign(protocol, fd, ec); ec) {
        // Closed here, not left open: OpenSSL holds the descriptor's number,
        // which must not be written to once another socket may have it.
        ::close(fd);
        return ec;
    }
    waits_for_writes_ = false;
    sock_.non_blocking(true, ec);
    return ec;
}

boost::system::error_code upstream_conn::tls_error(int ssl_error, int sys) const noexcept {
    switch (ssl_error) {
    case SSL_ERROR_ZERO_RETURN:
        return asio::error::eof;  // close_notify: a clean end
    case SSL_ERROR_SYSCALL:
        if (ERR_peek_error() == 0) {
            return sys == 0 ? boost::system::error_code(asio::ssl::error::stream_truncated)
                            : boost::system::error_code(sys, boost::system::system_category());
        }
        break;
    case SSL_ERROR_SSL:
        if (ERR_GET_REASON(ERR_peek_last_error()) == SSL_R_UNEXPECTED_EOF_WHILE_READING) {
            return asio::ssl::error::stream_truncated;  // cut without close_notify
        }
        break;
    default:
        break;
    }
    const unsigned long e = ERR_peek_last_error();
    return e != 0 ? boost::system::error_code(static_cast<int>(e), asio::error::get_ssl_category())
                  : boost::system::error_code(asio::error::fault);
}

asio::awaitable<boost::system::error_code> upstream_conn::handshake() {
    boost::system::error_code ec;
    sock_.non_blocking(true, ec);
    if (ec || SSL_set_fd(ssl_, sock_.native_handle()) != 1) {
        co_return deadline.settle(ec ? ec : asio::error::fault);
    }
    for (;;) {
        clear_tls_errors();
        const int r = SSL_connect(ssl_);
        const int sys = errno;
        if (r == 1) {
            co_return deadline.settle(register_for_reads());
        }
        const int e = SSL_get_error(ssl_, r);
        if (e == SSL_ERROR_WANT_READ || e == SSL_ERROR_WANT_WRITE) {
            if (std::tie(ec) = co_await wait_for(e); ec) {
                co_return deadline.settle(ec);
            }
            continue;
        }
        co_return deadline.settle(tls_error(e, sys));
    }
}

asio::awaitable<boost::system::error_code> upstream_conn::write(std::span<const asio::const_buffer> bufs) {
    if (ssl_ == nullptr) {
        auto [ec, n] = co_await asio::async_write(sock_, bufs, asio::as_tuple(asio::use_awaitable));
        co_return deadline.settle(ec);
    }
    for (const auto& b : bufs) {
        std::size_t off = 0;
        while (off < b.size()) {
            clear_tls_errors();
            std::size_t n = 0;
            const int r = SSL_write_ex(ssl_, static_cast<const char*>(b.data()) + off, b.size() - off, &n);
            const int sys = errno;
            if (r == 1) {
                off += n;
                continue;
            }
            const int e = SSL_get_error(ssl_, r);
            if (e == SSL_ERROR_WANT_READ || e == SSL_ERROR_WANT_WRITE) {
                // Retried with the same arguments, as SSL_write requires.
                if (const auto [ec] = co_await wait_for(e); ec) {
                    co_return deadline.settle(ec);
                }
                continue;
            }
            co_return deadline.settle(tls_error(e, sys));
        }
    }
    // A write that had to wait for room added EPOLLOUT again.
    co_return deadline.settle(waits_for_writes_ ? register_for_reads() : boost::system::error_code{});
}

asio::awaitable<std::tuple<boost::system::error_code>> upstream_conn::wait_readable() {
    if (ssl_ != nullptr) {
        // SSL_MODE_RELEASE_BUFFERS does not give back the read buffer OpenSSL
        // 3.0 set up for a read that found nothing: a slow stream would hold
        // 16 KiB between two events. Freed here, it is set up again when the
        // next record arrives.
        (void)SSL_free_buffers(ssl_);
    }
    // Asio re-arms the descriptor for a wait (epoll_ctl), so bytes that
    // arrived before the wait was queued still wake it.
    return wait_for(SSL_ERROR_WANT_READ);
}

asio::awaitable<std::tuple<boost::system::error_code, std::size_t>> upstream_conn::read_some(asio::mutable_buffer into) {
    if (ssl_ == nullptr) {
        auto [ec, n] = co_await sock_.async_read_some(into, asio::as_tuple(asio::use_awaitable));
        co_return std::tuple{deadline.settle(ec), n};
    }
    auto* const p = static_cast<char*>(into.data());
    std::size_t total = 0;
    while (total < into.size()) {
        clear_tls_errors();
        std::size_t n = 0;
        const int r = SSL_read_ex(ssl_, p + total, into.size() - total, &n);
        const int sys = errno;
        if (r == 1) {
            total += n;
            if (SSL_has_pending(ssl_) == 1) {
                continue;  // another record already received
            }
            break;
        }
        const int e = SSL_get_error(ssl_, r);
        if (total > 0) {
            break;  // deliver what arrived; the next call reports the failure (for a fatal one, as SSL_ERROR_SYSCALL)
        }
        if (e == SSL_ERROR_WANT_READ || e == SSL_ERROR_WANT_WRITE) {
            if (e == SSL_ERROR_WANT_READ) {
                (void)SSL_free_buffers(ssl_);  // as in wait_readable()
            }
            if (const auto [ec] = co_await wait_for(e); ec) {
                co_return std::tuple{deadline.settle(ec), std::size_t{0}};
            }
            continue;
        }
        co_return std::tuple{deadline.settle(tls_error(e, sys)), std::size_t{0}};
    }
    co_return std::tuple{deadline.settle({}), total};
}

// ---- upstream_response -------------------------------------------------------

namespace http = beast::http;

upstream_response::upstream_response(upstream_conn& conn, std::chrono::seconds timeout) noexcept
    : conn_(conn), timeout_(timeout) {
    new_parser();
}

void upstream_response::new_parser() {
    parser_.emplace();
    parser_->header_limit(head_limit);
    parser_->body_limit(response_body_limit);
}

boost::system::error_code upstream_response::parse_buffered() {
    auto& b = conn_.buffer;
    auto& p = *parser_;
    while (b.size() > 0 && !p.is_done() && !(p.is_header_done() && p.get().body().size == 0)) {
        boost::system::error_code pec;
        const bool in_head = !p.is_header_done();
        const std::size_t used = p.put(b.data(), pec);
        b.consume(used);
        if (in_head) {
            head_bytes_ += used;
            if (head_bytes_ > head_limit || (!p.is_header_done() && head_bytes_ + b.size() > head_limit)) {
                return http::error::header_limit;
            }
        }
        if (pec == http::error::need_more || pec == http::error::need_buffer) {
            break;
        }
        if (pec) {
            return pec;
        }
        if (used == 0) {
            break;
        }
    }
    return {};
}

asio::awaitable<boost::system::error_code> upstream_response::read_head() {
    for (;;) {
        // No body buffer yet: the parser stops after the head.
        parser_->get().body().data = nullptr;
        parser_->get().body().size = 0;
        if (const auto ec = parse_buffered()) {
            co_return ec;
        }
        if (parser_->is_header_done()) {
            const unsigned status = parser_->get().result_int();
            if (status >= 200) {
                co_return boost::system::error_code{};
            }
            if (status == 101 || status < 100 || ++interim_ > max_interim) {
                co_return http::error::bad_status;
            }
            // An interim response has no body (RFC 9110 §15.2); Beast has
            // parsed it as complete. The final answer follows on the same
            // connection: parse it with a fresh parser, still counting the
            // head bytes against the one limit.
            new_parser();
            continue;
        }
        if (const auto fec = co_await fill()) {
            co_return fec;
        }
    }
}

std::size_t upstream_response::parse_body(asio::mutable_buffer into, boost::system::error_code& ec) {
    parser_->get().body().data = into.data();
    parser_->get().body().size = into.size();
    ec = parse_buffered();
    return into.size() - parser_->get().body().size;
}

asio::awaitable<boost::system::error_code> upstream_response::fill() {
    auto& b = conn_.buffer;
    const std::size_t room = std::min<std::size_t>(read_size, b.max_size() - b.size());
    if (room == 0) {
        co_return http::error::header_limit;
    }
    conn_.deadline.expires_after(timeout_);
    if (wait_first_ && conn_.is_tls()) {
        // Nothing can be there yet: right after the request was written, and
        // after a read that took less than it could (it drained the socket;
        // the provider sends its next event later). A read attempted now would
        // only say EAGAIN: one system call per event of a paced stream. So
        // wait for readability first, holding no buffer meanwhile: between
        // two events a slow stream keeps neither this buffer nor OpenSSL's.
        // (What is left unparsed then is at most a few bytes, such as the CRLF
        // that ends a chunk, which the parser takes with the next chunk's size.)
        if (!conn_.tls_pending()) {
            if (b.size() <= small_leftover) {
                b.shrink_to_fit();
            }
            if (const auto [wec] = co_await conn_.wait_readable(); wec) {
                co_return conn_.deadline.settle(wec);
            }
        }
    }
    auto [ec, n] = co_await conn_.read_some(b.prepare(room));
    wait_first_ = n < room;
    b.commit(n);
    if (ec == asio::error::eof) {
        if (!parser_->is_header_done()) {
            co_return parser_->got_some() ? http::error::partial_message : http::error::end_of_stream;
        }
        boost::system::error_code eec;
        parser_->put_eof(eec);
        co_return eec ? eec : http::error::end_of_stream;
    }
    co_return ec;
}

bool upstream_response::reusable() const noexcept {
    return parser_->is_done() && parser_->keep_alive() && conn_.is_open() && conn_.buffer.size() == 0;
}

// ---- upstream_pool ------------------------------------------------------------

upstream_pool::upstream_pool(asio::io_context& ioc, const provider& p, std::shared_ptr<asio::ssl::context> tls)
    : ioc_(ioc), prov_(p), tls_ctx_(p.tls ? std::move(tls) : nullptr), resolver_(ioc) {}

upstream_pool::~upstream_pool() {
    close_all();
    if (session_ != nullptr) {
        SSL_SESSION_free(static_cast<SSL_SESSION*>(session_));
    }
}

std::unique_ptr<upstream_conn> upstream_pool::take() {
    const auto now = std::chrono::steady_clock::now();
    while (!idle_.empty()) {
        auto c = std::move(idle_.back());
        idle_.pop_back();
        if (now - c->idle_since < max_idle_age && c->still_quiet()) {
            return c;
        }
        c->close();
    }
    return nullptr;
}

void upstream_pool::give_back(std::unique_ptr<upstream_conn> c) {
    if (idle_.size() >= max_idle_per_pool || !c->is_open()) {
        c->close();
        return;
    }
    c->idle_since = std::chrono::steady_clock::now();
    c->deadline.expires_never();
    if (c->buffer.size() == 0) {
        c->buffer.shrink_to_fit();
    }
    idle_.push_back(std::move(c));
}

void upstream_pool::close_all() noexcept {
    for (auto& c : idle_) {
        c->close();
    }
    idle_.clear();
}

// Copies, never the connection's own session object. OpenSSL marks a
// session not resumable when a connection holding it is freed without an
// exchange of close_notify (ssl_clear_bad_session, a rule from TLS 1.0), and
// the relay closes upstream connections so whenever a client leaves
// mid-answer or a pooled connection is let go. Shared with its connection,
// the remembered session was spoiled by the next such close: every new
// connection made a full handshake and verified the certificate chain again,
// about 5.6 million instructions (callgrind), where a resumption needs none
// of that (tests/integration/relay.test.mjs counts them at the
// provider's end). A TLS 1.3 ticket stays valid however a connection that
// used it ended; the provider decides how long, and how often, it is taken.
void upstream_pool::remember_session(upstream_conn& c) {
    if (!c.is_tls() || c.session_remembered) {
        return;
    }
    const SSL_SESSION* s = SSL_get0_session(c.ssl());
    if (s == nullptr || SSL_SESSION_is_resumable(s) == 0) {
        return;
    }
    SSL_SESSION* copy = SSL_SESSION_dup(s);
    if (copy == nullptr) {
        return;
    }
    c.session_remembered = true;
    if (session_ != nullptr) {
        SSL_SESSION_free(static_cast<SSL_SESSION*>(session_));
    }
    session_ = copy;
}

asio::awaitable<std::unique_ptr<upstream_conn>> upstream_pool::connect(std::chrono::seconds timeout,
                                                                       boost::system::error_code& ec) {
    using asio::as_tuple;
    using asio::use_awaitable;
    const auto give_up_at = std::chrono::steady_clock::now() + timeout;
    auto results = co_await resolve(give_up_at, ec);
    if (ec) {
        co_return nullptr;
    }
    auto c = std::make_unique<upstream_conn>(ioc_, tls_ctx_ ? tls_ctx_->native_handle() : nullptr);
    c->deadline.expires_after(give_up_at - std::chrono::steady_clock::now());
    auto [cec, ep] = co_await asio::async_connect(c->socket(), results, as_tuple(use_awaitable));
    if (cec = c->deadline.settle(cec); cec) {
        ec = cec;
        co_return nullptr;
    }
    c->socket().set_option(asio::ip::tcp::no_delay(true), ec);
    if (c->is_tls()) {
        SSL* ssl = c->ssl();
        // The certificate must name the host: a DNS name (no partial
        // wildcards), or an IP address in an IP SAN. SNI only for names
        // (RFC 6066 §3 forbids IP literals there).
        bool ok = false;
        if (is_ip_literal(prov_.host)) {
            ok = X509_VERIFY_PARAM_set1_ip_asc(SSL_get0_param(ssl), prov_.host.c_str()) == 1;
        } else {
            SSL_set_hostflags(ssl, X509_CHECK_FLAG_NO_PARTIAL_WILDCARDS);
            ok = SSL_set1_host(ssl, prov_.host.c_str()) == 1 &&
                 SSL_set_tlsext_host_name(ssl, prov_.host.c_str()) == 1;
        }
        if (!ok) {
            ec = asio::error::invalid_argument;
            co_return nullptr;
        }
        if (session_ != nullptr) {
            // A copy of its own, as in remember_session(): this connection
            // may die before the provider's next ticket replaces it.
            if (SSL_SESSION* s = SSL_SESSION_dup(static_cast<SSL_SESSION*>(session_)); s != nullptr) {
                SSL_set_session(ssl, s);
                SSL_SESSION_free(s);  // SSL_set_session took its own reference
            }
        }
        c->deadline.expires_after(timeout);
        if (const auto hec = co_await c->handshake()) {
            ec = hec;
            co_return nullptr;
        }
    }
    ec = {};
    co_return c;
}

asio::awaitable<asio::ip::tcp::resolver::results_type> upstream_pool::resolve(
    std::chrono::steady_clock::time_point give_up_at, boost::system::error_code& ec) {
    adopt_finished_lookup();
    if (!resolved_.empty() && std::chrono::steady_clock::now() - resolved_at_ < resolve_ttl) {
        ec = {};
        co_return resolved_;
    }
    // getaddrinfo runs on Asio's resolver thread and cannot be interrupted;
    // a request waits for it only until its connect deadline, and every
    // request that needs the name meanwhile waits for the same lookup.
    if (!resolving_) {
        resolving_ = std::make_shared<resolve_state>();
        resolver_.async_resolve(prov_.host, std::to_string(prov_.port),
                                [st = resolving_](const boost::system::error_code& rec,
                                                  asio::ip::tcp::resolver::results_type r) {
                                    st->ec = rec;
                                    st->results = std::move(r);
                                    st->finished = true;
                                    for (auto* t : st->waiters) {
                                        t->cancel();
                                    }
                                });
    }
    const auto st = resolving_;
    {
        // Registered while it sleeps, removed however the wait ends (also
        // when this coroutine is destroyed at shutdown).
        asio::steady_timer wait(ioc_);
        wait.expires_at(give_up_at);
        st->waiters.push_back(&wait);
        struct unregister {
            resolve_state& s;
            asio::steady_timer* t;
            ~unregister() { std::erase(s.waiters, t); }
        } const guard{*st, &wait};
        (void)co_await wait.async_wait(asio::as_tuple(asio::use_awaitable));
        if (!st->finished) {
            ec = beast::error::timeout;
            co_return asio::ip::tcp::resolver::results_type{};
        }
    }
    adopt_finished_lookup();
    ec = st->ec;
    co_return ec ? asio::ip::tcp::resolver::results_type{} : st->results;
}

void upstream_pool::adopt_finished_lookup() {
    if (!resolving_ || !resolving_->finished) {
        return;
    }
    if (!resolving_->ec) {
        resolved_ = resolving_->results;
        resolved_at_ = std::chrono::steady_clock::now();
    }
    resolving_.reset();
}

}  // namespace byok::relay
