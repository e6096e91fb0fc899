#pragma once
// Remembers which seals were accepted, so none is accepted twice.
//
// A sealed box begins with its own one-time ephemeral public key; that key is
// the seal's identifier. The cache stores the first 16 bytes of it (an
// attacker who does not know a victim's seal cannot predict them), each
// until the moment the seal's iat can no longer pass the age check, and then
// forgets it. Memory is bounded: past `max_entries` it refuses to insert
// (the caller answers "overloaded") rather than forget early, which would
// let a replay through.
//
// Each entry leaves at its own deadline, not in insertion order: a seal with
// an iat in the future (remembered up to max_age + max_future + 1 s) does not
// hold back the seals accepted after it. Per shard, entries are threaded on a
// timing wheel of one-second slots, so expiry touches only the entries whose
// second has come. An entry costs about 38 bytes of RSS, measured (a 32-byte
// node in a pool plus its share of the bucket array; the unordered_set and
// deque this replaced cost 65); the pool keeps its peak size.
//
// Sizing: every accepted seal (honest or made with a junk key) is remembered
// for at most `window` = max_age + max_future + 1 seconds, so a relay that can
// accept R seals/s needs capacity_for(R, window) entries for a flood at its
// peak rate to leave room for an honest seal.
//
// Thread-safe: 16 shards, each behind its own mutex. Hashing is keyed
// SipHash with a random key, so chosen identifiers cannot flood one bucket
// or one shard.

#include <array>
#include <cstddef>
#include <cstdint>
#include <memory>
#include <mutex>
#include <span>
#include <vector>

namespace byok::crypto {

class replay_cache {
public:
    using id = std::array<unsigned char, 16>;
    enum class insert_result { inserted, replayed, full };

    explicit replay_cache(std::size_t max_entries);
    replay_cache(const replay_cache&) = delete;
    replay_cache& operator=(const replay_cache&) = delete;

    [[nodiscard]] static id make_id(std::span<const unsigned char> sealed_box) noexcept;

    // The `max_entries` that lets `seals_per_s` accepted seals, each remembered
    // for `window_s` seconds, all fit, with margin for the uneven (random)
    // spread over shards: six standard deviations per shard.
    [[nodiscard]] static std::size_t capacity_for(double seals_per_s, std::int64_t window_s) noexcept;

    // True if `seal_id` was inserted and not yet forgotten at `now`.
    [[nodiscard]] bool contains(const id& seal_id, std::int64_t now);
    // Inserts `seal_id`, to be forgotten once now >= forget_at.
    [[nodiscard]] insert_result insert(const id& seal_id, std::int64_t forget_at, std::int64_t now);

    [[nodiscard]] std::size_t size() const;
    [[nodiscard]] std::size_t capacity() const noexcept { return shard_capacity_ * shard_count; }

private:
    static constexpr std::size_t shard_count = 16;
    // One slot per second; a power of two above the default window (91 s).
    // A longer window still works: a slot then holds several rounds.
    static constexpr std::size_t wheel_slots = 128;
    static constexpr std::uint32_t nil = 0xffffffffu;
    static constexpr std::size_t chunk_nodes = 1024;  // 32 KiB per pool chunk

    struct hasher {
        std::array<unsigned char, 16> key;
        std::uint64_t operator()(const id& v) const noexcept;
    };
    struct node {
        id seal_id;
        std::int64_t forget_at;
        std::uint32_t hash_next;   // next node in the same bucket, or the free list
        std::uint32_t wheel_next;  // next node in the same wheel slot
    };
    struct shard {
        mutable std::mutex mu;
        std::vector<std::uint32_t> buckets;  // heads of chains; size is a power of two
        std::array<std::uint32_t, wheel_slots> wheel;
        std::vector<std::unique_ptr<node[]>> chunks;
        std::uint32_t free_head = nil;
        std::uint32_t allocated = 0;  // nodes handed out from the chunks so far
        std::size_t count = 0;
        std::int64_t expired_through = 0;  // every deadline <= this has been removed
        bool clock_started = false;

        shard();
        node& at(std::uint32_t i) noexcept { return chunks[i / chunk_nodes][i % chunk_nodes]; }
    };

    void expire(shard& s, std::int64_t now);
    [[nodiscard]] std::uint32_t find(shard& s, const id& v, std::uint64_t h) const noexcept;
    void unlink(shard& s, std::uint32_t index);
    void grow_buckets(shard& s);
    [[nodiscard]] std::size_t bucket_of(const shard& s, std::uint64_t h) const noexcept {
        return static_cast<std::size_t>(h / shard_count) & (s.buckets.size() - 1);
    }

    hasher hasher_;
    std::size_t shard_capacity_;
    std::array<std::unique_ptr<shard>, shard_count> shards_;
};

}  // namespace byok::crypto
