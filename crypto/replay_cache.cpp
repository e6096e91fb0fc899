#include "crypto/replay_cache.hpp"

#include <algorithm>
#include <cmath>
#include <cstring>
#include <utility>

#include <sodium.h>

#include "crypto/secret.hpp"

namespace byok::crypto {

namespace {

constexpr std::size_t initial_buckets = 64;

std::size_t wheel_slot(std::int64_t second, std::size_t slots) noexcept {
    // Two's complement wrap keeps this consistent for any second, even negative ones.
    return static_cast<std::size_t>(static_cast<std::uint64_t>(second) & (slots - 1));
}

}  // namespace

std::uint64_t replay_cache::hasher::operator()(const id& v) const noexcept {
    std::array<unsigned char, crypto_shorthash_BYTES> h{};
    crypto_shorthash(h.data(), v.data(), v.size(), key.data());
    std::uint64_t out = 0;
    std::memcpy(&out, h.data(), sizeof out);
    return out;
}

replay_cache::shard::shard() : buckets(initial_buckets, nil) { wheel.fill(nil); }

replay_cache::replay_cache(std::size_t max_entries)
    : shard_capacity_(std::clamp<std::size_t>((max_entries + shard_count - 1) / shard_count, 1, nil - 1)) {
    ensure_sodium();
    randombytes_buf(hasher_.key.data(), hasher_.key.size());
    for (auto& s : shards_) {
        s = std::make_unique<shard>();
    }
}

replay_cache::id replay_cache::make_id(std::span<const unsigned char> sealed_box) noexcept {
    id out{};
    std::memcpy(out.data(), sealed_box.data(), std::min(out.size(), sealed_box.size()));
    return out;
}

std::size_t replay_cache::capacity_for(double seals_per_s, std::int64_t window_s) noexcept {
    const double mean = std::max(0.0, seals_per_s) * static_cast<double>(std::max<std::int64_t>(window_s, 0)) /
                        static_cast<double>(shard_count);
    // Each accepted id lands in a shard chosen by a keyed hash: the load of a
    // shard is binomial, so mean + 6 sigma (+ a few for small means) is never
    // exceeded in practice.
    const double per_shard = std::ceil(mean + 6 * std::sqrt(mean) + 8);
    return static_cast<std::size_t>(per_shard) * shard_count;
}

std::uint32_t replay_cache::find(shard& s, const id& v, std::uint64_t h) const noexcept {
    for (std::uint32_t i = s.buckets[bucket_of(s, h)]; i != nil; i = s.at(i).hash_next) {
        if (s.at(i).seal_id == v) {
            return i;
        }
    }
    return nil;
}

void replay_cache::unlink(shard& s, std::uint32_t index) {
    node& n = s.at(index);
    std::uint32_t* link = &s.buckets[bucket_of(s, hasher_(n.seal_id))];
    while (*link != index) {
        link = &s.at(*link).hash_next;
    }
    *link = n.hash_next;
    n.hash_next = s.free_head;
    s.free_head = index;
    --s.count;
}

void replay_cache::grow_buckets(shard& s) {
    const std::vector<std::uint32_t> old =
        std::exchange(s.buckets, std::vector<std::uint32_t>(s.buckets.size() * 2, nil));
    for (std::uint32_t head : old) {
        while (head != nil) {
            node& n = s.at(head);
            const std::uint32_t next = n.hash_next;
            std::uint32_t& b = s.buckets[bucket_of(s, hasher_(n.seal_id))];
            n.hash_next = b;
            b = head;
            head = next;
        }
    }
}

void replay_cache::expire(shard& s, std::int64_t now) {
    if (!s.clock_started) {
        // Nothing can have been inserted before the first call.
        s.clock_started = true;
        s.expired_through = now;
        return;
    }
    if (now <= s.expired_through) {
        return;  // a caller with a slightly older clock: this shard's time does not go back
    }
    // Visit the slot of every second since the last call (each slot once at
    // most); a slot may also hold entries due a whole turn later, which stay.
    const auto seconds = static_cast<std::uint64_t>(now - s.expired_through);
    const std::size_t visits = seconds < wheel_slots ? static_cast<std::size_t>(seconds) : wheel_slots;
    for (std::size_t k = 1; k <= visits; ++k) {
        std::uint32_t* link = &s.wheel[wheel_slot(s.expired_through + static_cast<std::int64_t>(k), wheel_slots)];
        while (*link != nil) {
            const std::uint32_t i = *link;
            node& n = s.at(i);
            if (n.forget_at <= now) {
                *link = n.wheel_next;
                unlink(s, i);
            } else {
                link = &n.wheel_next;
            }
        }
    }
    s.expired_through = now;
}

bool replay_cache::contains(const id& seal_id, std::int64_t now) {
    const std::uint64_t h = hasher_(seal_id);
    auto& s = *shards_[h % shard_count];
    std::lock_guard lock(s.mu);
    expire(s, now);
    return find(s, seal_id, h) != nil;
}

replay_cache::insert_result replay_cache::insert(const id& seal_id, std::int64_t forget_at, std::int64_t now) {
    // The keyed hash picks the shard (low bits) and the bucket (the rest).
    const std::uint64_t h = hasher_(seal_id);
    auto& s = *shards_[h % shard_count];
    std::lock_guard lock(s.mu);
    expire(s, now);
    if (find(s, seal_id, h) != nil) {
        return insert_result::replayed;
    }
    if (forget_at <= s.expired_through) {
        return insert_result::inserted;  // already forgotten: nothing to remember
    }
    if (s.count >= shard_capacity_) {
        return insert_result::full;
    }
    std::uint32_t i = s.free_head;
    if (i != nil) {
        s.free_head = s.at(i).hash_next;
    } else {
        if (s.allocated % chunk_nodes == 0) {
            s.chunks.push_back(std::make_unique_for_overwrite<node[]>(chunk_nodes));
        }
        i = s.allocated++;
    }
    node& n = s.at(i);
    n.seal_id = seal_id;
    n.forget_at = forget_at;
    std::uint32_t& b = s.buckets[bucket_of(s, h)];
    n.hash_next = b;
    b = i;
    std::uint32_t& w = s.wheel[wheel_slot(forget_at, wheel_slots)];
    n.wheel_next = w;
    w = i;
    if (++s.count > s.buckets.size()) {
        grow_buckets(s);
    }
    return insert_result::inserted;
}

std::size_t replay_cache::size() const {
    std::size_t n = 0;
    for (const auto& s : shards_) {
        std::lock_guard lock(s->mu);
        n += s->count;
    }
    return n;
}

}  // namespace byok::crypto
