#include "relay/idle_park.hpp"

#include <boost/asio/read.hpp>
#include <boost/asio/write.hpp>
#include <doctest/doctest.h>
#include "loopback.hpp"

#include <memory>
#include <optional>
#include <vector>

using namespace byok::relay;
namespace asio = boost::asio;
using asio::ip::tcp;
using namespace std::chrono_literals;

namespace {

// A parked server side and the client side of one loopback connection.
struct conn_pair {
    tcp::socket client;
    tcp::socket server;
};

conn_pair open_pair(asio::io_context& ioc) {
    conn_pair p{tcp::socket(ioc), tcp::socket(ioc)};
    test::connect_loopback(ioc, p.client, p.server);
    return p;
}

struct fixture {
    asio::io_context ioc;
    std::vector<client_conn> woken;
    int closed = 0;
    std::unique_ptr<idle_park> park;

    explicit fixture(std::chrono::steady_clock::duration timeout) {
        park = std::make_unique<idle_park>(
            ioc, timeout, [this](client_conn&& c) { woken.push_back(std::move(c)); },
            [this](const client_conn& c) {
                CHECK_FALSE(c.socket.is_open());
                ++closed;
            });
    }
    // Runs handlers until `done` or nothing is left to run.
    template <class Pred>
    void run_until(Pred done) {
        ioc.restart();
        while (!done() && ioc.run_one() > 0) {
        }
    }
};

client_conn parked(tcp::socket s) {
    client_conn c{std::move(s)};
    c.peer[15] = 7;
    c.counted = true;
    return c;
}

}  // namespace

TEST_CASE("idle_park: a connection whose next request arrives is handed back, its bytes unread") {
    fixture f(1h);
    auto p = open_pair(f.ioc);
    f.park->park(parked(std::move(p.server)));
    CHECK(f.park->size() == 1);
    asio::write(p.client, asio::buffer(std::string_view("GET / HTTP/1.1\r\n\r\n")));
    f.run_until([&] { return !f.woken.empty(); });
    REQUIRE(f.woken.size() == 1);
    CHECK(f.closed == 0);
    CHECK(f.park->size() == 0);
    client_conn& c = f.woken.front();
    CHECK(c.resumed);
    CHECK(c.counted);
    CHECK(c.peer[15] == 7);
    REQUIRE(c.socket.is_open());
    char buf[18];
    asio::read(c.socket, asio::buffer(buf));
    CHECK(std::string_view(buf, sizeof buf) == "GET / HTTP/1.1\r\n\r\n");
}

TEST_CASE("idle_park: a client that closes while parked is handed back too: its session reads the end") {
    fixture f(1h);
    auto p = open_pair(f.ioc);
    f.park->park(parked(std::move(p.server)));
    p.client.close();
    f.run_until([&] { return !f.woken.empty(); });
    REQUIRE(f.woken.size() == 1);
    char byte = 0;
    boost::system::error_code ec;
    f.woken.front().socket.read_some(asio::buffer(&byte, 1), ec);
    CHECK(ec == asio::error::eof);
}

TEST_CASE("idle_park: connections idle past the timeout are closed by the one timer, each reported once") {
    fixture f(50ms);
    std::vector<conn_pair> pairs;
    for (int i = 0; i < 3; ++i) {
        pairs.push_back(open_pair(f.ioc));
        f.park->park(parked(std::move(pairs.back().server)));
    }
    CHECK(f.park->size() == 3);
    f.run_until([&] { return f.closed == 3; });
    CHECK(f.closed == 3);
    CHECK(f.woken.empty());
    CHECK(f.park->size() == 0);
    for (auto& p : pairs) {
        char byte = 0;
        boost::system::error_code ec;
        p.client.read_some(asio::buffer(&byte, 1), ec);
        CHECK(ec == asio::error::eof);  // the relay's side is gone
    }
    // The park stays usable: a connection parked after the sweep is timed anew.
    auto late = open_pair(f.ioc);
    f.park->park(parked(std::move(late.server)));
    f.run_until([&] { return f.closed == 4; });
    CHECK(f.closed == 4);
}

TEST_CASE("idle_park: close_all (draining) closes every parked connection and wakes none") {
    fixture f(1h);
    std::vector<conn_pair> pairs;
    for (int i = 0; i < 4; ++i) {
        pairs.push_back(open_pair(f.ioc));
        f.park->park(parked(std::move(pairs.back().server)));
    }
    // One has its next request on the way as draining starts: it is closed all the same.
    asio::write(pairs[1].client, asio::buffer(std::string_view("GET / HTTP/1.1\r\n\r\n")));
    f.park->close_all();
    f.run_until([&] { return f.closed == 4; });
    CHECK(f.closed == 4);
    CHECK(f.woken.empty());
    CHECK(f.park->size() == 0);
}

TEST_CASE("idle_park: destroyed with connections parked, it closes them without reporting") {
    fixture f(1h);
    auto p = open_pair(f.ioc);
    f.park->park(parked(std::move(p.server)));
    f.park.reset();
    CHECK(f.closed == 0);
    char byte = 0;
    boost::system::error_code ec;
    p.client.read_some(asio::buffer(&byte, 1), ec);
    CHECK(ec == asio::error::eof);
}
