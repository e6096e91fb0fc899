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
// Thread-safe: 16 shards, each behind its own mutex. Hashing is keyed
// SipHash with a random key, so chosen identifiers cannot flood one bucket.

#include <array>
#include <cstddef>
#include <cstdint>
#include <deque>
#include <memory>
#include <mutex>
#include <span>
#include <unordered_set>

namespace byok::crypto {

class replay_cache {
public:
    using id = std::array<unsigned char, 16>;
    enum class insert_result { inserted, replayed, full };

    explicit replay_cache(std::size_t max_entries);
    replay_cache(const replay_cache&) = delete;
    replay_cache& operator=(const replay_cache&) = delete;

    [[nodiscard]] static id make_id(std::span<const unsigned char> sealed_box) noexcept;

    // True if `seal_id` was inserted and not yet forgotten at `now`.
    [[nodiscard]] bool contains(const id& seal_id, std::int64_t now);
    // Inserts `seal_id`, to be forgotten once now >= forget_at.
    [[nodiscard]] insert_result insert(const id& seal_id, std::int64_t forget_at, std::int64_t now);

    [[nodiscard]] std::size_t size() const;
    [[nodiscard]] std::size_t capacity() const noexcept { return shard_capacity_ * shard_count; }

private:
    static constexpr std::size_t shard_count = 16;

    struct hasher {
        std::array<unsigned char, 16> key;
        std::size_t operator()(const id& v) const noexcept;
    };
    struct entry {
        std::int64_t forget_at;
        id seal_id;
    };
    struct shard {
        mutable std::mutex mu;
        std::unordered_set<id, hasher> ids;
        std::deque<entry> order;  // insertion order; forget_at grows with it in practice
        explicit shard(const hasher& h) : ids(0, h) {}
    };

    void expire(shard& s, std::int64_t now);
    shard& shard_for(const id& v) noexcept;

    hasher hasher_;
    std::size_t shard_capacity_;
    std::array<std::unique_ptr<shard>, shard_count> shards_;
};

}  // namespace byok::crypto
