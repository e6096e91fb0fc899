#include "relay/address_table.hpp"

#include <algorithm>
#include <cmath>
#include <cstring>
#include <utility>

#include <sodium.h>

#include "crypto/secret.hpp"

namespace byok::relay {

namespace {

constexpr std::size_t initial_slots = 16;

std::size_t next_pow2(std::size_t n) noexcept {
    std::size_t p = 1;
    while (p < n) {
        p *= 2;
    }
    return p;
}

}  // namespace

address_table::address_table(std::size_t max_connections, rate_limit rate, std::size_t max_entries)
    : max_connections_(max_connections),
      rate_(rate),
      shard_max_(std::max<std::size_t>(1, (max_entries + shard_count - 1) / shard_count)),
      shards_(std::make_unique<shard[]>(shard_count)) {
    crypto::ensure_sodium();
    randombytes_buf(hash_key_.data(), hash_key_.size());
    for (std::size_t i = 0; i < shard_count; ++i) {
        shards_[i].slots.resize(std::min(initial_slots, next_pow2(2 * shard_max_)));
    }
}

address_table::key address_table::key_of(const boost::asio::ip::address& a) noexcept {
    key k{};
    if (a.is_v4()) {
        const auto b = a.to_v4().to_bytes();
        k[10] = 0xff;
        k[11] = 0xff;
        std::memcpy(k.data() + 12, b.data(), b.size());
    } else {
        const auto b = a.to_v6().to_bytes();
        std::memcpy(k.data(), b.data(), k.size());
    }
    return k;
}

std::uint64_t address_table::hash(const key& k) const noexcept {
    // Keyed: a client choosing its addresses (an IPv6 /64 holds 2^64) cannot
    // aim them all at one shard or one probe run.
    std::array<unsigned char, crypto_shorthash_BYTES> h{};
    crypto_shorthash(h.data(), k.data(), k.size(), hash_key_.data());
    std::uint64_t out = 0;
    std::memcpy(&out, h.data(), sizeof out);
    return out;
}

bool address_table::idle(const entry& e, clock::rep now) const noexcept {
    if (e.connections > 0) {
        return false;
    }
    if (rate_.requests_per_s <= 0) {
        return true;
    }
    const auto dt = std::chrono::duration<double>(clock::duration(std::max<clock::rep>(0, now - e.refreshed)));
    return e.tokens + dt.count() * rate_.requests_per_s >= rate_.burst;
}

address_table::entry* address_table::find(shard& s, const key& k, std::uint64_t h) const noexcept {
    const std::size_t mask = s.slots.size() - 1;
    for (std::size_t i = home(s, h);; i = (i + 1) & mask) {
        entry& e = s.slots[i];
        if (!e.used) {
            return nullptr;
        }
        if (e.addr == k) {
            return &e;
        }
    }
}

void address_table::erase(shard& s, entry* e) noexcept {
    // Backward-shift deletion: later members of the probe run move up into
    // the hole, so lookups never need tombstones.
    const std::size_t mask = s.slots.size() - 1;
    std::size_t hole = static_cast<std::size_t>(e - s.slots.data());
    s.slots[hole].used = false;
    --s.used;
    for (std::size_t j = (hole + 1) & mask; s.slots[j].used; j = (j + 1) & mask) {
        const std::size_t want = home(s, hash(s.slots[j].addr));
        // Move j into the hole unless its home lies cyclically in (hole, j].
        const bool stays = hole <= j ? (hole < want && want <= j) : (hole < want || want <= j);
        if (!stays) {
            s.slots[hole] = s.slots[j];
            s.slots[j].used = false;
            hole = j;
        }
    }
}

void address_table::sweep(shard& s, clock::rep now) noexcept {
    for (std::size_t i = 0; i < s.slots.size();) {
        entry& e = s.slots[i];
        if (e.used && idle(e, now)) {
            erase(s, &e);  // something may have moved into i: look at it again
        } else {
            ++i;
        }
    }
}

void address_table::grow(shard& s) {
    const std::vector<entry> old = std::exchange(s.slots, std::vector<entry>(s.slots.size() * 2));
    const std::size_t mask = s.slots.size() - 1;
    for (const entry& e : old) {
        if (e.used) {
            std::size_t i = home(s, hash(e.addr));
            while (s.slots[i].used) {
                i = (i + 1) & mask;
            }
            s.slots[i] = e;
        }
    }
}

address_table::entry* address_table::find_or_add(shard& s, const key& k, std::uint64_t h, clock::rep now) {
    if (entry* e = find(s, k, h)) {
        return e;
    }
    if (s.used >= shard_max_) {
        sweep(s, now);
        if (s.used >= shard_max_) {
            return nullptr;
        }
    }
    // Keep the load at most 1/2; idle entries go before the table grows, and
    // it only grows if at least 3/8 is still live, so sweeps stay rare.
    if (2 * (s.used + 1) > s.slots.size()) {
        sweep(s, now);
        if (8 * (s.used + 1) > 3 * s.slots.size() && s.slots.size() < next_pow2(2 * shard_max_)) {
            grow(s);
        }
    }
    const std::size_t mask = s.slots.size() - 1;
    std::size_t i = home(s, h);
    while (s.slots[i].used) {
        i = (i + 1) & mask;
    }
    s.slots[i] = entry{k, 0, true, rate_.burst, now};
    ++s.used;
    return &s.slots[i];
}

bool address_table::connection_opened(const key& k, clock::time_point now) {
    if (max_connections_ == 0) {
        return true;
    }
    const std::uint64_t h = hash(k);
    shard& s = shards_[h % shard_count];
    std::lock_guard lock(s.mu);
    entry* e = find_or_add(s, k, h, now.time_since_epoch().count());
    if (e == nullptr || e->connections >= max_connections_) {
        return false;
    }
    ++e->connections;
    return true;
}

void address_table::connection_closed(const key& k, clock::time_point now) {
    if (max_connections_ == 0) {
        return;
    }
    const std::uint64_t h = hash(k);
    shard& s = shards_[h % shard_count];
    std::lock_guard lock(s.mu);
    entry* e = find(s, k, h);
    if (e == nullptr || e->connections == 0) {
        return;
    }
    --e->connections;
    if (idle(*e, now.time_since_epoch().count())) {
        erase(s, e);
    }
}

unsigned address_table::request(const key& k, clock::time_point now) {
    if (rate_.requests_per_s <= 0) {
        return 0;
    }
    const clock::rep t = now.time_since_epoch().count();
    const std::uint64_t h = hash(k);
    shard& s = shards_[h % shard_count];
    std::lock_guard lock(s.mu);
    entry* e = find_or_add(s, k, h, t);
    if (e == nullptr) {
        // No room to track a new address: it waits as if its bucket were empty.
        return static_cast<unsigned>(std::max(1.0, std::ceil(1 / rate_.requests_per_s)));
    }
    // Threads read the clock before taking the lock: never let time run back.
    const double dt = std::chrono::duration<double>(clock::duration(std::max<clock::rep>(0, t - e->refreshed))).count();
    e->tokens = std::min(rate_.burst, e->tokens + dt * rate_.requests_per_s);
    e->refreshed = std::max(e->refreshed, t);
    if (e->tokens >= 1) {
        e->tokens -= 1;
        return 0;
    }
    return static_cast<unsigned>(std::ceil((1 - e->tokens) / rate_.requests_per_s));
}

std::size_t address_table::size(clock::time_point now) const {
    const clock::rep t = now.time_since_epoch().count();
    std::size_t n = 0;
    for (std::size_t i = 0; i < shard_count; ++i) {
        const shard& s = shards_[i];
        std::lock_guard lock(s.mu);
        n += static_cast<std::size_t>(
            std::count_if(s.slots.begin(), s.slots.end(), [&](const entry& e) { return e.used && !idle(e, t); }));
    }
    return n;
}

}  // namespace byok::relay
