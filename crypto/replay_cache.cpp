#include "crypto/replay_cache.hpp"

#include <algorithm>
#include <cstring>

#include <sodium.h>

#include "crypto/secret.hpp"

namespace byok::crypto {

std::size_t replay_cache::hasher::operator()(const id& v) const noexcept {
    std::array<unsigned char, crypto_shorthash_BYTES> h{};
    crypto_shorthash(h.data(), v.data(), v.size(), key.data());
    std::size_t out = 0;
    std::memcpy(&out, h.data(), sizeof out);
    return out;
}

replay_cache::replay_cache(std::size_t max_entries)
    : shard_capacity_(std::max<std::size_t>(1, (max_entries + shard_count - 1) / shard_count)) {
    ensure_sodium();
    randombytes_buf(hasher_.key.data(), hasher_.key.size());
    for (auto& s : shards_) {
        s = std::make_unique<shard>(hasher_);
    }
}

replay_cache::id replay_cache::make_id(std::span<const unsigned char> sealed_box) noexcept {
    id out{};
    std::memcpy(out.data(), sealed_box.data(), std::min(out.size(), sealed_box.size()));
    return out;
}

replay_cache::shard& replay_cache::shard_for(const id& v) noexcept {
    // The id is uniformly random for honest clients; the low bits of the
    // keyed hash spread chosen ones too.
    return *shards_[hasher_(v) % shard_count];
}

void replay_cache::expire(shard& s, std::int64_t now) {
    while (!s.order.empty() && s.order.front().forget_at <= now) {
        s.ids.erase(s.order.front().seal_id);
        s.order.pop_front();
    }
}

bool replay_cache::contains(const id& seal_id, std::int64_t now) {
    auto& s = shard_for(seal_id);
    std::lock_guard lock(s.mu);
    expire(s, now);
    return s.ids.contains(seal_id);
}

replay_cache::insert_result replay_cache::insert(const id& seal_id, std::int64_t forget_at, std::int64_t now) {
    auto& s = shard_for(seal_id);
    std::lock_guard lock(s.mu);
    expire(s, now);
    if (s.ids.contains(seal_id)) {
        return insert_result::replayed;
    }
    if (s.ids.size() >= shard_capacity_) {
        return insert_result::full;
    }
    s.ids.insert(seal_id);
    s.order.push_back(entry{forget_at, seal_id});
    return insert_result::inserted;
}

std::size_t replay_cache::size() const {
    std::size_t n = 0;
    for (const auto& s : shards_) {
        std::lock_guard lock(s->mu);
        n += s->ids.size();
    }
    return n;
}

}  // namespace byok::crypto
