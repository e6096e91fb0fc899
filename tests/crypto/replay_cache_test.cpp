#include "crypto/replay_cache.hpp"

#include <doctest/doctest.h>

#include <atomic>
#include <cstdint>
#include <thread>
#include <vector>

#include <sodium.h>

#include "crypto/secret.hpp"

using byok::crypto::replay_cache;
using result = replay_cache::insert_result;

namespace {

constexpr std::int64_t t0 = 1'700'000'000;
// The relay's defaults: seal_max_age_s 60, seal_max_future_s 30. A seal is
// remembered until iat + max_age + 1, so for at most window = 91 s.
constexpr std::int64_t max_age = 60;
constexpr std::int64_t max_future = 30;
constexpr std::int64_t window = max_age + max_future + 1;

replay_cache::id random_id() {
    byok::crypto::ensure_sodium();
    replay_cache::id v{};
    randombytes_buf(v.data(), v.size());
    return v;
}

std::vector<replay_cache::id> random_ids(std::size_t n) {
    std::vector<replay_cache::id> out(n);
    for (auto& v : out) {
        v = random_id();
    }
    return out;
}

}  // namespace

TEST_CASE("replay_cache: seals with iat in the future do not hold back the expiry of later ones") {
    replay_cache cache(1u << 16);
    // 256 seals with iat 30 s ahead: with 16 shards, every shard gets some
    // (a shard is missed with probability 16 * (15/16)^256, about 1e-6).
    const auto far = random_ids(256);
    for (const auto& v : far) {
        REQUIRE(cache.insert(v, t0 + max_future + max_age + 1, t0) == result::inserted);
    }
    // Then honest seals with iat = now, in the same shards, after them.
    const auto near = random_ids(1000);
    for (const auto& v : near) {
        REQUIRE(cache.insert(v, t0 + max_age + 1, t0) == result::inserted);
    }
    CHECK(cache.size() == 1256);

    // At their own deadline the honest entries are gone, all of them, though
    // older entries with later deadlines are still in their shards.
    for (const auto& v : near) {
        CHECK_FALSE(cache.contains(v, t0 + max_age + 1));
    }
    CHECK(cache.size() == 256);
    for (const auto& v : far) {
        CHECK(cache.contains(v, t0 + max_age + 1));
    }
    // Their room is free again at once.
    for (const auto& v : random_ids(1000)) {
        CHECK(cache.insert(v, t0 + 2 * max_age, t0 + max_age + 1) == result::inserted);
    }
}

TEST_CASE("replay_cache: a replay is detected until its deadline and not after") {
    replay_cache cache(1024);
    const auto v = random_id();
    const std::int64_t forget_at = t0 + max_age + 1;
    REQUIRE(cache.insert(v, forget_at, t0) == result::inserted);
    for (std::int64_t now = t0; now < forget_at; ++now) {
        CHECK(cache.contains(v, now));
        CHECK(cache.insert(v, forget_at, now) == result::replayed);
    }
    CHECK_FALSE(cache.contains(v, forget_at));
    CHECK(cache.size() == 0);
    CHECK(cache.insert(v, forget_at + 10, forget_at) == result::inserted);
    CHECK(cache.size() == 1);
}

TEST_CASE("replay_cache: deadlines further out than the wheel, and clocks that jump") {
    replay_cache cache(1024);
    const auto a = random_id();
    const auto b = random_id();
    const auto c = random_id();
    REQUIRE(cache.insert(a, t0 + 300, t0) == result::inserted);  // more than one turn of the wheel
    REQUIRE(cache.insert(b, t0 + 5, t0) == result::inserted);
    REQUIRE(cache.insert(c, t0 + 1000, t0) == result::inserted);
    // Second by second past a's slot once (t0 + 300 - 128 * 2 and - 128): a stays.
    for (std::int64_t now = t0; now < t0 + 300; ++now) {
        REQUIRE(cache.contains(a, now));
    }
    CHECK_FALSE(cache.contains(b, t0 + 299));
    CHECK_FALSE(cache.contains(a, t0 + 300));
    // A caller whose clock is a little behind sees the shard's time, not its own.
    CHECK(cache.contains(c, t0 + 299));
    // A jump of many turns at once: everything due goes, the rest stays.
    CHECK(cache.contains(c, t0 + 999));
    CHECK_FALSE(cache.contains(c, t0 + 5000));
    CHECK(cache.size() == 0);
}

TEST_CASE("replay_cache: full means refused, never forgotten early") {
    replay_cache cache(16);  // 16 shards of one entry each
    REQUIRE(cache.capacity() == 16);
    std::vector<replay_cache::id> kept;
    replay_cache::id refused{};
    bool full = false;
    for (int i = 0; i < 17 && !full; ++i) {  // 17 ids into 16 single-entry shards: one collides
        const auto v = random_id();
        const auto r = cache.insert(v, t0 + window, t0);
        if (r == result::inserted) {
            kept.push_back(v);
        } else {
            CHECK(r == result::full);
            refused = v;
            full = true;
        }
    }
    REQUIRE(full);
    // Until the entries' deadline the refused seal stays refused and every
    // accepted one stays remembered.
    for (std::int64_t now = t0; now < t0 + window; now += 10) {
        CHECK(cache.insert(refused, t0 + window + 60, now) == result::full);
        for (const auto& v : kept) {
            CHECK(cache.insert(v, t0 + window, now) == result::replayed);
        }
    }
    CHECK_FALSE(cache.contains(refused, t0 + window - 1));
    // At the deadline the room is back.
    CHECK(cache.insert(refused, t0 + 2 * window, t0 + window) == result::inserted);
}

TEST_CASE("replay_cache: a flood of accepted seals at the peak rate leaves room for an honest one") {
    // The attacker's seals all carry iat = now + max_future, so each is kept
    // the whole window; the honest client's carry iat = now. R is a scaled-down
    // peak rate (the relay's is about 60,000/s on 2 cores); the capacity comes
    // from the same formula the configuration uses.
    constexpr double rate = 2000;
    replay_cache cache(replay_cache::capacity_for(rate, window));
    std::size_t honest_refused = 0;
    std::size_t junk_refused = 0;
    std::size_t peak = 0;
    for (std::int64_t now = t0; now < t0 + 3 * window; ++now) {
        for (int i = 0; i < static_cast<int>(rate); ++i) {
            if (cache.insert(random_id(), now + max_future + max_age + 1, now) != result::inserted) {
                ++junk_refused;
            }
        }
        const auto honest = random_id();
        if (cache.insert(honest, now + max_age + 1, now) != result::inserted) {
            ++honest_refused;
        } else {
            CHECK(cache.insert(honest, now + max_age + 1, now) == result::replayed);
        }
        peak = std::max(peak, cache.size());
    }
    CHECK(honest_refused == 0);
    CHECK(junk_refused == 0);
    // Steady state: one window of junk plus 61 s of honest seals, never more.
    CHECK(peak <= static_cast<std::size_t>(rate) * window + max_age + 1);
    CHECK(peak >= static_cast<std::size_t>(rate) * (window - 1));
    // Once the flood stops, the cache empties by the deadlines alone (a
    // shard expires when it is used: 256 lookups reach every shard).
    for (int i = 0; i < 256; ++i) {
        CHECK_FALSE(cache.contains(random_id(), t0 + 4 * window));
    }
    CHECK(cache.size() == 0);
}

TEST_CASE("replay_cache: capacity_for covers the relay's peak") {
    // 30,000 seal-opens/s per core on 2 cores, window 60 + 30 + 1 s.
    const std::size_t need = replay_cache::capacity_for(2 * 30000.0, window);
    CHECK(need >= 60000u * window);
    CHECK(need <= 60000u * window * 102 / 100);  // the shard margin is about 1 % at this size
}

TEST_CASE("replay_cache: two threads racing on the same ids accept each exactly once") {
    replay_cache cache(1u << 16);
    const auto ids = random_ids(5000);
    std::atomic<int> inserted{0};
    std::atomic<int> replayed{0};
    auto run = [&] {
        for (const auto& v : ids) {
            switch (cache.insert(v, t0 + window, t0)) {
            case result::inserted: inserted.fetch_add(1); break;
            case result::replayed: replayed.fetch_add(1); break;
            case result::full: break;
            }
        }
    };
    std::thread a(run);
    std::thread b(run);
    a.join();
    b.join();
    CHECK(inserted.load() == 5000);
    CHECK(replayed.load() == 5000);
    CHECK(cache.size() == 5000);
}
