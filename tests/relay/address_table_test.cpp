#include "relay/address_table.hpp"

#include <doctest/doctest.h>

#include <atomic>
#include <chrono>
#include <cstdint>
#include <thread>
#include <vector>

using byok::relay::address_table;
using byok::relay::rate_limit;
using namespace std::chrono_literals;
namespace ip = boost::asio::ip;

namespace {

const address_table::clock::time_point t0{std::chrono::hours(1000)};

// The n-th address of 127.0.0.0/8 (16 million of them), as the relay sees loopback clients.
ip::address loopback(std::uint32_t n) { return ip::address_v4(0x7f000000u | (n & 0x00ffffffu)); }

address_table::key key_n(std::uint32_t n) { return address_table::key_of(loopback(n)); }

}  // namespace

TEST_CASE("address_table: 100,000 distinct addresses opened and closed leave no entry") {
    address_table t(256, rate_limit{});
    for (std::uint32_t n = 0; n < 100000; ++n) {
        REQUIRE(t.connection_opened(loopback(n)));
        t.connection_closed(loopback(n));
    }
    CHECK(t.size() == 0);
    // And with a few held open at a time, only those remain.
    for (std::uint32_t n = 0; n < 100000; ++n) {
        REQUIRE(t.connection_opened(key_n(n), t0));
        if (n >= 3) {
            t.connection_closed(key_n(n - 3), t0);
        }
    }
    CHECK(t.size(t0) == 3);
}

TEST_CASE("address_table: with a rate limit, an entry leaves once its bucket has refilled") {
    address_table t(256, rate_limit{10, 5});  // refills in 0.5 s after 5 requests
    for (std::uint32_t n = 0; n < 100000; ++n) {
        const auto now = t0 + std::chrono::milliseconds(n);  // 1,000 new addresses per second
        REQUIRE(t.connection_opened(key_n(n), now));
        REQUIRE(t.request(key_n(n), now) == 0);
        t.connection_closed(key_n(n), now);
    }
    // Only the addresses of the last 0.1 s (one token used, 0.1 s to refill) remain.
    const auto end = t0 + std::chrono::milliseconds(100000);
    CHECK(t.size(end) <= 101);
    CHECK(t.size(end + 1s) == 0);
    // A connection opened and closed without a request leaves nothing behind.
    REQUIRE(t.connection_opened(key_n(7), end + 1s));
    t.connection_closed(key_n(7), end + 1s);
    CHECK(t.size(end + 1s) == 0);
}

TEST_CASE("address_table: the connection cap is per address") {
    address_table t(3, rate_limit{});
    const auto a = key_n(1);
    const auto b = key_n(2);
    for (int i = 0; i < 3; ++i) {
        CHECK(t.connection_opened(a, t0));
    }
    CHECK_FALSE(t.connection_opened(a, t0));
    CHECK(t.connection_opened(b, t0));  // another address is not affected
    t.connection_closed(a, t0);
    CHECK(t.connection_opened(a, t0));
    CHECK_FALSE(t.connection_opened(a, t0));
    CHECK(t.size(t0) == 2);
    // Unmatched closes do not go below zero nor create entries.
    for (int i = 0; i < 5; ++i) {
        t.connection_closed(a, t0);
    }
    t.connection_closed(key_n(3), t0);
    CHECK(t.size(t0) == 1);

    address_table off(0, rate_limit{});  // 0 = no cap, and no entries at all
    for (int i = 0; i < 1000; ++i) {
        CHECK(off.connection_opened(a, t0));
    }
    CHECK(off.size(t0) == 0);
}

TEST_CASE("address_table: the token bucket spends a burst and refills at the rate") {
    address_table t(0, rate_limit{2, 3});
    const auto a = key_n(9);
    for (int i = 0; i < 3; ++i) {
        CHECK(t.request(a, t0) == 0);
    }
    CHECK(t.request(a, t0) == 1);  // empty: 1 token takes 0.5 s, rounded up
    CHECK(t.request(a, t0 + 400ms) == 1);
    CHECK(t.request(a, t0 + 500ms) == 0);  // 0.5 s after t0: one token back
    CHECK(t.request(a, t0 + 500ms) == 1);
    // A long pause refills to the burst, not beyond it.
    const auto later = t0 + 60s;
    for (int i = 0; i < 3; ++i) {
        CHECK(t.request(a, later) == 0);
    }
    CHECK(t.request(a, later) > 0);
    CHECK(t.request(key_n(10), later) == 0);  // another address has its own bucket
    CHECK(t.size(later) == 2);
    CHECK(t.size(later + 2s) == 0);  // both buckets full again: no entry is live

    address_table slow(0, rate_limit{0.1, 1});
    CHECK(slow.request(a, t0) == 0);
    CHECK(slow.request(a, t0) == 10);  // Retry-After: 1 token at 0.1/s
    address_table off(0, rate_limit{});
    for (int i = 0; i < 1000; ++i) {
        CHECK(off.request(a, t0) == 0);
    }
}

TEST_CASE("address_table: IPv4 and IPv4-mapped IPv6 are the same client") {
    const auto v4 = ip::make_address("192.0.2.1");
    const auto mapped = ip::make_address("::ffff:192.0.2.1");
    const auto compatible = ip::make_address("::192.0.2.1");  // not the same address
    CHECK(address_table::key_of(v4) == address_table::key_of(mapped));
    CHECK(address_table::key_of(v4) != address_table::key_of(compatible));
    CHECK(address_table::key_of(ip::make_address("2001:db8::1")) !=
          address_table::key_of(ip::make_address("2001:db8::2")));

    address_table t(1, rate_limit{1, 1});
    CHECK(t.connection_opened(v4));
    CHECK_FALSE(t.connection_opened(mapped));
    CHECK(t.connection_opened(compatible));
    CHECK(t.request(mapped) == 0);
    CHECK(t.request(v4) > 0);  // the same bucket
    t.connection_closed(mapped);
    CHECK(t.connection_opened(v4));
}

TEST_CASE("address_table: bounded: a full shard refuses new addresses, never forgets a live one") {
    address_table t(10, rate_limit{}, 64);  // 64 shards of one live entry
    REQUIRE(t.capacity() == 64);
    std::vector<address_table::key> held;
    std::uint32_t refused = 0;
    for (std::uint32_t n = 0; n < 1000; ++n) {
        if (t.connection_opened(key_n(n), t0)) {
            held.push_back(key_n(n));
        } else {
            ++refused;
        }
    }
    CHECK(held.size() <= 64);
    CHECK(refused == 1000 - held.size());
    CHECK(t.size(t0) == held.size());
    // Every held address keeps its count: its cap still applies.
    for (const auto& k : held) {
        for (int i = 1; i < 10; ++i) {
            CHECK(t.connection_opened(k, t0));
        }
        CHECK_FALSE(t.connection_opened(k, t0));
    }
    for (const auto& k : held) {
        for (int i = 0; i < 10; ++i) {
            t.connection_closed(k, t0);
        }
    }
    CHECK(t.size(t0) == 0);
    std::size_t again = 0;
    for (std::uint32_t n = 5000; n < 6000; ++n) {
        again += t.connection_opened(key_n(n), t0) ? 1 : 0;
    }
    CHECK(again == held.size());  // the same room, in whatever shards the new addresses fall

    // Buckets still refilling hold their room; refilled ones free it.
    address_table r(0, rate_limit{1, 1}, 64);
    std::size_t tracked = 0;
    for (std::uint32_t n = 0; n < 1000; ++n) {
        tracked += r.request(key_n(n), t0) == 0 ? 1 : 0;
    }
    CHECK(tracked <= 64);
    CHECK(r.request(key_n(0), t0) > 0);  // still limited, whether tracked or refused
    std::size_t later = 0;
    for (std::uint32_t n = 0; n < 1000; ++n) {
        later += r.request(key_n(n), t0 + 2s) == 0 ? 1 : 0;
    }
    CHECK(later == tracked);
}

TEST_CASE("address_table: two threads opening, requesting and closing the same addresses") {
    address_table t(2, rate_limit{1e9, 1e9});
    std::atomic<int> refused{0};
    auto run = [&](std::uint32_t seed) {
        for (std::uint32_t i = 0; i < 200000; ++i) {
            const auto k = key_n((i * 7919u + seed) % 1000);
            if (!t.connection_opened(k)) {
                refused.fetch_add(1);
                continue;
            }
            if (t.request(k) != 0) {
                refused.fetch_add(1);
            }
            t.connection_closed(k);
        }
    };
    std::thread a(run, 0);
    std::thread b(run, 0);  // the same sequence: the two threads collide on every address
    a.join();
    b.join();
    CHECK(refused.load() == 0);  // each thread holds at most one connection per address
    CHECK(t.size(address_table::clock::now() + 10s) == 0);
}
