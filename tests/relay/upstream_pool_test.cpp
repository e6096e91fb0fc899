#include "relay/upstream.hpp"

#include <array>
#include <memory>
#include <string_view>

#include <poll.h>

#include <boost/asio/co_spawn.hpp>
#include <boost/asio/io_context.hpp>
#include <boost/asio/read.hpp>
#include <boost/asio/use_future.hpp>
#include <doctest/doctest.h>

using namespace byok::relay;
namespace asio = boost::asio;
using asio::ip::tcp;

namespace {

// A plain-TCP provider on loopback and a pool of connections to it.
struct pool_rig {
    asio::io_context ioc;
    tcp::acceptor acc{ioc, {asio::ip::address_v4::loopback(), 0}};
    provider prov;
    std::unique_ptr<upstream_pool> pool;

    pool_rig() {
        prov.name = "fake";
        prov.tls = false;
        prov.host = "127.0.0.1";
        prov.port = acc.local_endpoint().port();
        pool = std::make_unique<upstream_pool>(ioc, prov, nullptr);
    }

    // A new connection through the pool, and the provider's side of it.
    std::unique_ptr<upstream_conn> connect(tcp::socket& provider_side) {
        boost::system::error_code ec;
        auto fut = asio::co_spawn(ioc, pool->connect(std::chrono::seconds(5), ec), asio::use_future);
        acc.async_accept(provider_side, [](const boost::system::error_code&) {});
        ioc.run();
        ioc.restart();
        auto c = fut.get();
        REQUIRE(c);
        REQUIRE_FALSE(ec);
        return c;
    }
};

// Blocks until the provider's close (FIN) has reached `c`'s socket, without reading it.
void wait_for_close(upstream_conn& c) {
    pollfd p{c.socket().native_handle(), POLLRDHUP, 0};
    REQUIRE(::poll(&p, 1, 5000) == 1);
}

}  // namespace

TEST_CASE("upstream_pool: a pooled connection the provider closed is not reused, however recently it was pooled") {
    // A provider may close an idle keep-alive connection at any time (its
    // idle timeout, a restart). Reusing it would fail a request after the key
    // was written; take() must see the close even moments after give_back.
    pool_rig rig;
    tcp::socket p1(rig.ioc);
    tcp::socket p2(rig.ioc);
    auto quiet = rig.connect(p1);
    auto closed = rig.connect(p2);
    const upstream_conn* const quiet_ptr = quiet.get();
    upstream_conn* const closed_ptr = closed.get();
    rig.pool->give_back(std::move(quiet));
    rig.pool->give_back(std::move(closed));  // taken first: the most recently pooled
    p2.close();
    wait_for_close(*closed_ptr);
    auto taken = rig.pool->take();
    CHECK(taken.get() == quiet_ptr);  // the closed one was skipped (and closed)
    CHECK(rig.pool->take() == nullptr);
    // The quiet one still carries an exchange.
    REQUIRE(taken);
    const std::array<asio::const_buffer, 1> req{asio::buffer(std::string_view("ping"))};
    auto fut = asio::co_spawn(rig.ioc, taken->write(req), asio::use_future);
    rig.ioc.run();
    CHECK_FALSE(fut.get());
    char got[4]{};
    asio::read(p1, asio::buffer(got));
    CHECK(std::string_view(got, 4) == "ping");
}
