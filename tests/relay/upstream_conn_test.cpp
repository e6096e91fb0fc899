#include "relay/upstream.hpp"

#include <array>
#include <string_view>

#include <boost/asio/co_spawn.hpp>
#include <boost/asio/detached.hpp>
#include <boost/asio/io_context.hpp>
#include <boost/asio/ip/tcp.hpp>
#include <boost/asio/read.hpp>
#include <doctest/doctest.h>

using namespace byok::relay;
namespace asio = boost::asio;
using asio::ip::tcp;

namespace {

// An upstream_conn connected the way upstream_pool::connect does it (an
// async_connect, which makes Asio register EPOLLOUT for the descriptor), and
// the provider's side of the connection.
struct connected_conn {
    asio::io_context ioc;
    tcp::acceptor acc{ioc, {asio::ip::address_v4::loopback(), 0}};
    upstream_conn conn{ioc, nullptr};
    tcp::socket provider{ioc};

    connected_conn() {
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
