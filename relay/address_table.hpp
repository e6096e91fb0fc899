#pragma once
// Per-client-address limits, checked at accept and per request: a cap on
// concurrent connections (max_connections, 0 = off) and a token bucket of
// requests (rate_limit, requests_per_s 0 = off).
//
// An address has an entry only while it holds state worth keeping: an open
// connection, or a bucket that has not refilled yet. An entry whose count is
// 0 and whose bucket is full is the same as no entry; it is erased when its
// last connection closes, and otherwise counts as free room from the moment
// its bucket is full (reclaimed when its shard next needs the room).
//
// Memory is bounded: at most `max_entries` live addresses. When an address's
// shard is full of live entries a new address is refused (connection_opened
// returns false; request asks it to wait).
//
// Addresses are keyed by their 16 bytes (IPv4 as IPv4-mapped IPv6, so
// 192.0.2.1 and ::ffff:192.0.2.1 are one client). The table is cut in 64
// shards by a keyed SipHash of the address, each with its own mutex and its own
// open-addressing table: no lock is shared by all accepts, and no allocation
// is made per accept (a shard's table only grows, by doubling, up to its
// bound).
//
// Thread-safe: any thread may call any member. The `now` overloads exist so
// tests can drive the token bucket's clock.

#include <array>
#include <chrono>
#include <cstddef>
#include <cstdint>
#include <memory>
#include <mutex>
#include <vector>

#include <boost/asio/ip/address.hpp>

#include "relay/config.hpp"

namespace byok::relay {

class address_table {
public:
    using key = std::array<unsigned char, 16>;
    using clock = std::chrono::steady_clock;
    static constexpr std::size_t default_max_entries = 1u << 16;

    address_table(std::size_t max_connections, rate_limit rate, std::size_t max_entries = default_max_entries);
    address_table(const address_table&) = delete;
    address_table& operator=(const address_table&) = delete;

    [[nodiscard]] static key key_of(const boost::asio::ip::address& a) noexcept;

    // False if the address already holds max_connections, or is new and its
    // shard is full. Each true must be matched by one connection_closed.
    [[nodiscard]] bool connection_opened(const key& k) { return connection_opened(k, clock::now()); }
    [[nodiscard]] bool connection_opened(const key& k, clock::time_point now);
    void connection_closed(const key& k) { connection_closed(k, clock::now()); }
    void connection_closed(const key& k, clock::time_point now);
    // 0 if allowed; otherwise the seconds to wait (for Retry-After).
    [[nodiscard]] unsigned request(const key& k) { return rate_.requests_per_s > 0 ? request(k, clock::now()) : 0; }
    [[nodiscard]] unsigned request(const key& k, clock::time_point now);

    [[nodiscard]] bool connection_opened(const boost::asio::ip::address& a) { return connection_opened(key_of(a)); }
    void connection_closed(const boost::asio::ip::address& a) { connection_closed(key_of(a)); }
    [[nodiscard]] unsigned request(const boost::asio::ip::address& a) { return request(key_of(a)); }

    // Live entries (for /metrics): addresses with a connection open or a bucket still refilling.
    [[nodiscard]] std::size_t size() const { return size(clock::now()); }
    [[nodiscard]] std::size_t size(clock::time_point now) const;
    [[nodiscard]] std::size_t capacity() const noexcept { return shard_max_ * shard_count; }

private:
    static constexpr std::size_t shard_count = 64;

    struct entry {
        key addr;
        std::uint32_t connections;
        bool used;
        double tokens;
        clock::rep refreshed;  // clock ticks of the last bucket update
    };
    struct alignas(64) shard {
        mutable std::mutex mu;
        std::vector<entry> slots;  // linear probing, no tombstones; size is a power of two
        std::size_t used = 0;
    };

    [[nodiscard]] std::uint64_t hash(const key& k) const noexcept;
    [[nodiscard]] bool idle(const entry& e, clock::rep now) const noexcept;
    [[nodiscard]] entry* find(shard& s, const key& k, std::uint64_t h) const noexcept;
    // Finds or makes the entry; nullptr if the shard is full of live entries.
    [[nodiscard]] entry* find_or_add(shard& s, const key& k, std::uint64_t h, clock::rep now);
    void erase(shard& s, entry* e) noexcept;
    void sweep(shard& s, clock::rep now) noexcept;
    void grow(shard& s);
    [[nodiscard]] std::size_t home(const shard& s, std::uint64_t h) const noexcept {
        return static_cast<std::size_t>(h / shard_count) & (s.slots.size() - 1);
    }

    std::size_t max_connections_;
    rate_limit rate_;
    std::size_t shard_max_;  // live entries per shard
    std::array<unsigned char, 16> hash_key_{};
    std::unique_ptr<shard[]> shards_;
};

}  // namespace byok::relay
