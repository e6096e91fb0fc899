#include "relay/upstream.hpp"

#include <boost/asio/as_tuple.hpp>
#include <boost/asio/connect.hpp>
#include <boost/asio/ip/address.hpp>
#include <boost/asio/ssl/host_name_verification.hpp>
#include <boost/asio/use_awaitable.hpp>
#include <openssl/ssl.h>

#include <cerrno>

#include <sys/socket.h>

namespace byok::relay {
namespace {

constexpr std::size_t max_idle_per_pool = 64;
// Providers close idle keep-alive connections after some time; reusing one
// that is about to be closed fails the request, so idle ones are retired early.
constexpr auto max_idle_age = std::chrono::seconds(20);

bool is_ip_literal(const std::string& host) {
    boost::system::error_code ec;
    (void)asio::ip::make_address(host, ec);
    return !ec;
}

// An idle HTTP/1.1 connection has nothing to read. If the provider closed it
// (FIN, RST, or a TLS close_notify waiting in the socket), reusing it would
// fail the request after the key was sent; such a connection is dropped here.
bool still_quiet(upstream_conn& c) {
    char byte = 0;
    const ssize_t r = ::recv(c.tcp().socket().native_handle(), &byte, 1, MSG_PEEK | MSG_DONTWAIT);
    return r < 0 && (errno == EAGAIN || errno == EWOULDBLOCK);
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
    // Idle pooled connections give their record buffers back (about 34 KiB each).
    SSL_CTX_set_mode(ctx->native_handle(), SSL_MODE_RELEASE_BUFFERS);
    return ctx;
}

upstream_conn::upstream_conn(asio::io_context& ioc, std::shared_ptr<asio::ssl::context> tls) {
    if (tls) {
        tls_.emplace(beast::tcp_stream(ioc), *tls);
    } else {
        plain_.emplace(ioc);
    }
}

void upstream_conn::close() noexcept {
    boost::system::error_code ignored;
    tcp().socket().close(ignored);
}

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
        if (now - c->idle_since < max_idle_age && c->tcp().socket().is_open() && still_quiet(*c)) {
            return c;
        }
        c->close();
    }
    return nullptr;
}

void upstream_pool::give_back(std::unique_ptr<upstream_conn> c) {
    if (idle_.size() >= max_idle_per_pool || !c->tcp().socket().is_open()) {
        c->close();
        return;
    }
    c->idle_since = std::chrono::steady_clock::now();
    c->tcp().expires_never();
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

void upstream_pool::remember_session(upstream_conn& c) {
    if (!c.is_tls()) {
        return;
    }
    SSL_SESSION* s = SSL_get1_session(c.tls().native_handle());
    if (s == nullptr) {
        return;
    }
    if (SSL_SESSION_is_resumable(s) == 0) {
        SSL_SESSION_free(s);
        return;
    }
    if (session_ != nullptr) {
        SSL_SESSION_free(static_cast<SSL_SESSION*>(session_));
    }
    session_ = s;
}

asio::awaitable<std::unique_ptr<upstream_conn>> upstream_pool::connect(std::chrono::seconds timeout,
                                                                       boost::system::error_code& ec) {
    using asio::as_tuple;
    using asio::use_awaitable;
    auto [rec, results] = co_await resolver_.async_resolve(prov_.host, std::to_string(prov_.port),
                                                           as_tuple(use_awaitable));
    if (rec) {
        ec = rec;
        co_return nullptr;
    }
    auto c = std::make_unique<upstream_conn>(ioc_, tls_ctx_);
    c->tcp().expires_after(timeout);
    auto [cec, ep] = co_await c->tcp().async_connect(results, as_tuple(use_awaitable));
    if (cec) {
        ec = cec;
        co_return nullptr;
    }
    c->tcp().socket().set_option(asio::ip::tcp::no_delay(true), ec);
    if (c->is_tls()) {
        SSL* ssl = c->tls().native_handle();
        // SNI only for names (RFC 6066 §3 forbids IP literals there).
        if (!is_ip_literal(prov_.host) && SSL_set_tlsext_host_name(ssl, prov_.host.c_str()) != 1) {
            ec = asio::error::invalid_argument;
            co_return nullptr;
        }
        c->tls().set_verify_callback(asio::ssl::host_name_verification(prov_.host));
        if (session_ != nullptr) {
            SSL_set_session(ssl, static_cast<SSL_SESSION*>(session_));
        }
        c->tcp().expires_after(timeout);
        auto [hec] = co_await c->tls().async_handshake(asio::ssl::stream_base::client, as_tuple(use_awaitable));
        if (hec) {
            ec = hec;
            co_return nullptr;
        }
    }
    ec = {};
    co_return c;
}

}  // namespace byok::relay
