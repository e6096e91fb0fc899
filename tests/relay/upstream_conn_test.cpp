#include "relay/upstream.hpp"

#include "mock_certs.hpp"

#include <array>
#include <chrono>
#include <future>
#include <memory>
#include <string_view>
#include <thread>
#include <tuple>

#include <openssl/err.h>
#include <openssl/ssl.h>
#include <sys/socket.h>

#include <boost/asio/co_spawn.hpp>
#include <boost/asio/detached.hpp>
#include <boost/asio/io_context.hpp>
#include <boost/asio/ip/tcp.hpp>
#include <boost/asio/post.hpp>
#include <boost/asio/read.hpp>
#include <boost/asio/ssl/context.hpp>
#include <doctest/doctest.h>

using namespace byok::relay;
namespace asio = boost::asio;
using asio::ip::tcp;

namespace {

// An upstream_conn connected the way upstream_pool::connect does it (an
// async_connect, which makes Asio register EPOLLOUT for the descriptor), and
// the provider's side of the connection. Plain TCP, or TLS with `tls`.
struct connected_conn {
    asio::io_context ioc;
    tcp::acceptor acc{ioc, {asio::ip::address_v4::loopback(), 0}};
    upstream_conn conn;
    tcp::socket provider{ioc};

    explicit connected_conn(SSL_CTX* tls = nullptr) : conn(ioc, tls) {
        boost::system::error_code cec;
        conn.socket().async_connect(acc.local_endpoint(), [&](const boost::system::error_code& ec) { cec = ec; });
        acc.accept(provider);
        ioc.run();
        ioc.restart();
        REQUIRE_FALSE(cec);
    }

    // Starts a wait for the provider's bytes and runs what the thread finds
    // ready at once: how many handlers ran, the wait's start included.
    std::size_t wait_and_poll(bool& woke) {
        woke = false;
        asio::co_spawn(
            ioc,
            [&]() -> asio::awaitable<void> {
                (void)co_await conn.wait_readable();
                woke = true;
            },
            asio::detached);
        return ioc.poll();
    }
};

}  // namespace

TEST_CASE("upstream_conn: after register_for_reads, a wait with nothing to read does not wake the thread") {
    connected_conn c;
    connected_conn as_connected;
    bool woke = false;
    const std::size_t runs_as_connected = as_connected.wait_and_poll(woke);
    CHECK_FALSE(woke);
    REQUIRE_FALSE(c.conn.register_for_reads());
    CHECK(c.conn.is_open());
    const std::size_t runs = c.wait_and_poll(woke);
    MESSAGE("handlers run: " << runs << ", " << runs_as_connected << " with EPOLLOUT registered");
    CHECK(runs < runs_as_connected);  // the spurious wake-up for writability is gone
    CHECK_FALSE(woke);
    // Bytes from the provider still end the wait.
    const char byte = 'x';
    c.provider.send(asio::buffer(&byte, 1));
    c.ioc.run_one();
    CHECK(woke);
}

TEST_CASE("upstream_conn: register_for_reads keeps the connection usable both ways") {
    connected_conn c;
    REQUIRE_FALSE(c.conn.register_for_reads());
    CHECK(c.conn.socket().non_blocking());
    const std::array<asio::const_buffer, 1> req{asio::buffer(std::string_view("ping"))};
    boost::system::error_code wec = asio::error::fault;
    asio::co_spawn(c.ioc, [&]() -> asio::awaitable<void> { wec = co_await c.conn.write(req); }, asio::detached);
    c.ioc.run();
    c.ioc.restart();
    CHECK_FALSE(wec);
    char got[4]{};
    asio::read(c.provider, asio::buffer(got));
    CHECK(std::string_view(got, 4) == "ping");
}

namespace {

struct ssl_free {
    void operator()(SSL* p) const noexcept { SSL_free(p); }
};

}  // namespace

TEST_CASE("upstream_conn: an error another connection left on the thread's OpenSSL queue does not fail a TLS read") {
    // SSL_get_error takes any error on the calling thread's queue as the
    // call's own, so the queue must be empty before each TLS call. Other work
    // on a relay thread (a failed handshake with another provider, a refused
    // grant) can leave errors there. A read that finds nothing yet must then
    // wait, as it would have, not fail as if the provider broke the session.

    // The mock provider's own test PKI (tests/mock_provider/mock_certs.hpp).
    const byok::mock::tls_material pki = byok::mock::generate_tls_material();
    asio::ssl::context server_ctx(asio::ssl::context::tls_server);
    server_ctx.use_certificate_chain(asio::buffer(pki.cert_pem));
    server_ctx.use_private_key(asio::buffer(pki.key_pem), asio::ssl::context::pem);
    asio::ssl::context client_ctx(asio::ssl::context::tls_client);  // verifies nothing: not what is tested

    connected_conn c{client_ctx.native_handle()};
    upstream_conn& conn = c.conn;
    const int provider_fd = c.provider.native_handle();

    // The provider, blocking on a thread of its own: the handshake, then one
    // record once the client is waiting for it. Every wait has a limit, so
    // that a broken build fails the test instead of hanging it.
    std::promise<void> client_waits;
    int accepted = 0;
    int written = 0;
    std::thread server([&, waits = client_waits.get_future()]() mutable {
        const std::unique_ptr<SSL, ssl_free> s(SSL_new(server_ctx.native_handle()));
        SSL_set_fd(s.get(), provider_fd);
        accepted = SSL_accept(s.get());
        if (accepted == 1 && waits.wait_for(std::chrono::seconds(10)) == std::future_status::ready) {
            written = SSL_write(s.get(), "hello", 5);
        }
        SSL_shutdown(s.get());
        ::shutdown(provider_fd, SHUT_RDWR);  // the client sees the end, whatever happened
    });

    boost::system::error_code hec = asio::error::fault;
    boost::system::error_code rec = asio::error::fault;
    std::size_t got = 0;
    char buf[16]{};
    asio::co_spawn(
        c.ioc,
        [&]() -> asio::awaitable<void> {
            conn.deadline.expires_after(std::chrono::seconds(10));
            hec = co_await conn.handshake();
            if (hec) {
                client_waits.set_value();
                c.ioc.stop();  // the deadline's timer would keep run() going
                co_return;
            }
            ERR_raise(ERR_LIB_SSL, SSL_R_BAD_PACKET);  // left by other work on this thread
            // Nothing has been sent yet: the read has to wait for the record.
            bool told = false;
            asio::post(c.ioc, [&] {
                told = true;
                client_waits.set_value();
            });
            conn.deadline.expires_after(std::chrono::seconds(10));
            std::tie(rec, got) = co_await conn.read_some(asio::buffer(buf));
            if (!told) {
                client_waits.set_value();  // the read did not wait (it failed at once)
            }
            c.ioc.stop();
        },
        asio::detached);
    c.ioc.run();
    server.join();
    ERR_clear_error();
    CHECK(accepted == 1);
    REQUIRE_FALSE(hec);
    CHECK(written == 5);
    CHECK_MESSAGE(!rec, rec.message());
    CHECK(std::string_view(buf, got) == "hello");
}
