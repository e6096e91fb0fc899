#include "relay/replay_store.hpp"

#include <boost/asio/as_tuple.hpp>
#include <boost/asio/co_spawn.hpp>
#include <boost/asio/detached.hpp>
#include <boost/asio/use_awaitable.hpp>
#include <boost/asio/use_future.hpp>
#include <boost/asio/write.hpp>
#include <doctest/doctest.h>

#include <array>
#include <functional>
#include <string>
#include <vector>

// GCC 12's false -Wmismatched-new-delete on Asio's awaitable frames (see relay/session.cpp).
#if defined(__GNUC__) && !defined(__clang__)
#pragma GCC diagnostic ignored "-Wmismatched-new-delete"
#endif

using namespace byok::relay;
namespace asio = boost::asio;
using asio::as_tuple;
using asio::use_awaitable;
using asio::ip::tcp;

// The store side is a scripted fake Redis on loopback, in the same
// io_context: it answers the connection's PING, then whatever a test says.
namespace {

struct fake_redis {
    asio::io_context ioc;
    tcp::acceptor acceptor{ioc, {asio::ip::address_v4::loopback(), 0}};
    tcp::socket sock{ioc};
    std::string received;
    metrics stats{std::vector<std::string>{}};
    replay_store_config cfg;
    std::unique_ptr<replay_store> store;

    fake_redis() {
        cfg.url = "redis://127.0.0.1";
        cfg.host = "127.0.0.1";
        cfg.port = acceptor.local_endpoint().port();
        cfg.timeout_ms = 200;
        stats.replay_store_configured = true;
        store = std::make_unique<replay_store>(ioc, cfg, stats);
    }

    static std::size_t count(const std::string& hay, std::string_view needle) {
        std::size_t n = 0;
        for (auto at = hay.find(needle); at != std::string::npos; at = hay.find(needle, at + 1)) {
            ++n;
        }
        return n;
    }
    // Reads until `n` SET commands in all have arrived on this connection.
    asio::awaitable<bool> read_sets(std::size_t n) {
        std::array<char, 4096> buf;
        while (count(received, "\r\nSET\r\n") < n) {
            auto [ec, got] = co_await sock.async_read_some(asio::buffer(buf), as_tuple(use_awaitable));
            if (ec) {
                co_return false;
            }
            received.append(buf.data(), got);
        }
        co_return true;
    }
    // Accepts the store's connection and answers its PING.
    asio::awaitable<void> accept() {
        sock = tcp::socket(ioc);
        received.clear();
        co_await acceptor.async_accept(sock, use_awaitable);
        std::array<char, 256> buf;
        while (received.find("PING") == std::string::npos) {
            const std::size_t got = co_await sock.async_read_some(asio::buffer(buf), use_awaitable);
            received.append(buf.data(), got);
        }
        received.clear();
        co_await asio::async_write(sock, asio::buffer(std::string_view("+PONG\r\n")), use_awaitable);
    }
    asio::awaitable<void> send(std::string_view bytes) {
        co_await asio::async_write(sock, asio::buffer(bytes), use_awaitable);
    }
    // Polls `done` every 5 ms (the test's own coroutines run meanwhile).
    asio::awaitable<void> until(const std::function<bool()>& done) {
        asio::steady_timer t(ioc);
        while (!done()) {
            t.expires_after(std::chrono::milliseconds(5));
            co_await t.async_wait(use_awaitable);
        }
    }
    // Starts a claim on its own coroutine; `done` turns true with its outcome.
    void claim_async(const std::array<unsigned char, 16>& id, claim_outcome& out, bool& done,
                     std::chrono::milliseconds ttl = std::chrono::milliseconds(1000)) {
        asio::co_spawn(ioc, [this, &id, &out, &done, ttl]() -> asio::awaitable<void> {
            out = co_await store->claim(id, ttl);
            done = true;
        }, asio::detached);
    }
    asio::awaitable<void> until_connected(std::int64_t want = 1) {
        co_await until([&] { return stats.replay_store_connected.load() == want; });
    }
    // Runs `body` to its end, then stops the store's reconnect loop with the context.
    void run(asio::awaitable<void> body) {
        store->start();
        auto fut = asio::co_spawn(ioc, std::move(body), asio::use_future);
        while (fut.wait_for(std::chrono::seconds(0)) != std::future_status::ready) {
            ioc.run_one_for(std::chrono::milliseconds(50));
        }
        fut.get();
    }
};

const std::array<unsigned char, 16> id_a{0x00, 0x01, 0xab, 0xff};
const std::array<unsigned char, 16> id_b{0x02};
const std::array<unsigned char, 16> id_c{0x03};

}  // namespace

TEST_CASE("replay_store: pipelined claims get their own replies, in order") {
    fake_redis f;
    std::vector<claim_outcome> got(3, claim_outcome::unavailable);
    f.run([&]() -> asio::awaitable<void> {
        co_await f.accept();
        co_await f.until_connected();
        std::array<bool, 3> done{};
        f.claim_async(id_a, got[0], done[0], std::chrono::milliseconds(91000));
        f.claim_async(id_b, got[1], done[1]);
        f.claim_async(id_c, got[2], done[2]);
        REQUIRE(co_await f.read_sets(3));
        // The key names the id in hex; the claim expires with the seal.
        CHECK(f.received.find("byok:r:0001abff000000000000000000000000") != std::string::npos);
        CHECK(f.received.find("\r\nNX\r\n$2\r\nPX\r\n$5\r\n91000\r\n") != std::string::npos);
        co_await f.send("+OK\r\n$-1\r\n-READONLY You can't write against a read only replica.\r\n");
        co_await f.until([&] { return done[0] && done[1] && done[2]; });
    }());
    CHECK(got[0] == claim_outcome::claimed);
    CHECK(got[1] == claim_outcome::replayed);
    CHECK(got[2] == claim_outcome::unavailable);
    const std::string m = f.stats.render();
    CHECK(m.find("byok_replay_store_errors_total{reason=\"error_reply\"} 1") != std::string::npos);
}

TEST_CASE("replay_store: a claim not answered in time is unavailable; the next reply still lines up") {
    fake_redis f;
    claim_outcome first = claim_outcome::claimed;
    claim_outcome second = claim_outcome::unavailable;
    f.run([&]() -> asio::awaitable<void> {
        co_await f.accept();
        co_await f.until_connected();
        first = co_await f.store->claim(id_a, std::chrono::milliseconds(1000));  // no reply within 200 ms
        bool done = false;
        f.claim_async(id_b, second, done);
        REQUIRE(co_await f.read_sets(2));
        co_await f.send("+OK\r\n$-1\r\n");  // the late answer to the first, then the second's
        co_await f.until([&] { return done; });
    }());
    CHECK(first == claim_outcome::unavailable);
    CHECK(second == claim_outcome::replayed);
    CHECK(f.stats.render().find("byok_replay_store_errors_total{reason=\"timeout\"} 1") != std::string::npos);
}

TEST_CASE("replay_store: a lost connection fails what waits, and the store reconnects by itself") {
    fake_redis f;
    claim_outcome cut = claim_outcome::claimed;
    claim_outcome before = claim_outcome::claimed;
    claim_outcome after = claim_outcome::unavailable;
    f.run([&]() -> asio::awaitable<void> {
        before = co_await f.store->claim(id_a, std::chrono::milliseconds(1000));  // not connected yet
        co_await f.accept();
        co_await f.until_connected();
        bool done = false;
        f.claim_async(id_b, cut, done);
        REQUIRE(co_await f.read_sets(1));
        f.sock.close();
        co_await f.until([&] { return done; });
        co_await f.until_connected(0);
        co_await f.accept();  // the store comes back within its backoff
        co_await f.until_connected();
        bool again = false;
        f.claim_async(id_c, after, again);
        REQUIRE(co_await f.read_sets(1));
        co_await f.send("+OK\r\n");
        co_await f.until([&] { return again; });
    }());
    CHECK(before == claim_outcome::unavailable);
    CHECK(cut == claim_outcome::unavailable);
    CHECK(after == claim_outcome::claimed);
    CHECK(f.stats.render().find("byok_replay_store_errors_total{reason=\"down\"} 2") != std::string::npos);
}
