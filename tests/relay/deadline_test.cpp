#include "relay/deadline.hpp"

#include <boost/asio/io_context.hpp>
#include <boost/asio/read.hpp>
#include <boost/asio/steady_timer.hpp>
#include <boost/asio/write.hpp>
#include <boost/beast/core/error.hpp>
#include <doctest/doctest.h>
#include "loopback.hpp"

#include <optional>
#include <string_view>

using namespace byok::relay;
namespace asio = boost::asio;
using asio::ip::tcp;
using namespace std::chrono_literals;

namespace {

struct socket_pair {
    asio::io_context ioc;
    tcp::socket a{ioc};
    tcp::socket b{ioc};
    socket_pair() { test::connect_loopback(ioc, a, b); }
};

// Starts a read on `p.a` under `d` and returns its settled result (a
// deadline's timer may still sleep afterwards: run until the read is done).
boost::system::error_code read_once(socket_pair& p, socket_deadline& d) {
    static char buf[16];
    std::optional<boost::system::error_code> result;
    p.a.async_read_some(asio::buffer(buf), [&](boost::system::error_code ec, std::size_t) { result = d.settle(ec); });
    p.ioc.restart();
    while (!result && p.ioc.run_one() > 0) {
    }
    REQUIRE(result.has_value());
    return *result;
}

}  // namespace

TEST_CASE("socket_deadline: a limit that passes cancels the pending read, reported as a timeout") {
    socket_pair p;
    socket_deadline d(p.a);
    d.expires_after(30ms);
    CHECK(read_once(p, d) == boost::beast::error::timeout);
}

TEST_CASE("socket_deadline: a nearer limit set while a far one sleeps still applies") {
    socket_pair p;
    socket_deadline d(p.a);
    d.expires_after(1h);
    (void)d.settle({});
    d.expires_after(30ms);
    CHECK(read_once(p, d) == boost::beast::error::timeout);
}

TEST_CASE("socket_deadline: a read that completes in time is not touched, and a stale limit cancels nothing later") {
    socket_pair p;
    socket_deadline d(p.a);
    d.expires_after(40ms);
    asio::write(p.b, asio::buffer("x", 1));
    CHECK(read_once(p, d) == boost::system::error_code{});

    // The 40 ms limit was settled; its timer still fires later and must not
    // cancel the next read, which runs under a limit of an hour and gets its
    // byte after 80 ms.
    d.expires_after(1h);
    asio::steady_timer later(p.ioc, 80ms);
    later.async_wait([&](boost::system::error_code) { asio::write(p.b, asio::buffer("y", 1)); });
    CHECK(read_once(p, d) == boost::system::error_code{});
}

TEST_CASE("socket_deadline: cancelling the socket for another reason stays operation_aborted") {
    socket_pair p;
    socket_deadline d(p.a);
    d.expires_after(1h);
    asio::steady_timer soon(p.ioc, 20ms);
    soon.async_wait([&](boost::system::error_code) { p.a.cancel(); });
    CHECK(read_once(p, d) == asio::error::operation_aborted);
}

TEST_CASE("socket_deadline: the owner may go away while its timer sleeps") {
    socket_pair p;
    {
        socket_deadline d(p.a);
        d.expires_after(10ms);
    }
    p.ioc.restart();
    p.ioc.run();  // the sleeping handler runs (aborted) after the owner is gone; must not touch it
    CHECK(p.a.is_open());
}

TEST_CASE("socket_deadline: a limit that passes while no step is pending still ends the operation") {
    // A composed operation (async_write, a header read) may be between two
    // steps when its limit passes; the next step must fail, not run unbounded.
    socket_pair p;
    socket_deadline d(p.a);
    d.expires_after(20ms);
    asio::steady_timer gap(p.ioc, 60ms);
    bool waited = false;
    gap.async_wait([&](boost::system::error_code) { waited = true; });
    while (!waited && p.ioc.run_one() > 0) {
    }
    CHECK(read_once(p, d) == boost::beast::error::timeout);
    CHECK_FALSE(p.a.is_open());
}

TEST_CASE("socket_deadline: on_expiry::cancel aborts the wait as a timeout and leaves the socket open and usable") {
    socket_pair p;
    socket_deadline d(p.a);
    d.expires_after(30ms, socket_deadline::on_expiry::cancel);
    CHECK(read_once(p, d) == boost::beast::error::timeout);
    REQUIRE(p.a.is_open());
    // The connection still carries bytes both ways.
    asio::write(p.b, asio::buffer(std::string_view("next")));
    char buf[4];
    CHECK(asio::read(p.a, asio::buffer(buf)) == 4);
    CHECK(std::string_view(buf, 4) == "next");
    // The next limit closes again, as by default.
    d.expires_after(30ms);
    CHECK(read_once(p, d) == boost::beast::error::timeout);
    CHECK_FALSE(p.a.is_open());
}
