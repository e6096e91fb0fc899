#include "crypto/secret.hpp"

#include <array>
#include <mutex>
#include <new>
#include <ostream>
#include <stdexcept>
#include <utility>

namespace byok::crypto {

[[gnu::noinline]] void wipe_stack_below() noexcept {
    unsigned char area[stack_wipe_bytes];
    sodium_memzero(area, sizeof area);
    __asm__ __volatile__("" : : "r"(area) : "memory");  // keep the frame
}

void ensure_sodium() {
    static const int rc = sodium_init();
    if (rc < 0) {
        throw std::runtime_error("libsodium could not be initialized");
    }
}

namespace {

// Every request opens one seal, so it needs one small secret buffer.
// sodium_malloc costs mmap + mprotect + mlock (and the reverse on free);
// keeping a few locked blocks per thread removes those system calls from the
// request path while keeping the guard pages and the lock.
constexpr std::size_t pooled_capacity = secret_bytes::pool_block_size;
// Deep enough for every request a thread has between seal check and upstream
// write at once (256 blocks: 1 MiB locked at most); a shallow pool sent the
// overflow to sodium_malloc, whose mmap/mprotect/munmap cost TLB-shootdown
// IPIs on every request (perf, docs/benchmarks.md).
constexpr std::size_t pool_depth = 256;

// A secret_bytes can outlive its thread's pool: one owned by an object of
// static storage duration (a keyring held in a global, say) is released
// after the main thread's thread_local objects are destroyed. This flag is
// trivially destructible, so it can still be read then; once the pool is
// gone, blocks are freed directly instead of touching a destroyed object.
enum class pool_state : unsigned char { unborn, alive, gone };
constinit thread_local pool_state local_pool_state = pool_state::unborn;

struct block_pool {
    std::array<unsigned char*, pool_depth> blocks{};
    std::size_t count = 0;

    block_pool() noexcept { local_pool_state = pool_state::alive; }
    block_pool(const block_pool&) = delete;
    block_pool& operator=(const block_pool&) = delete;
    ~block_pool() {
        local_pool_state = pool_state::gone;
        for (std::size_t i = 0; i < count; ++i) {
            sodium_free(blocks[i]);
        }
        count = 0;
    }
};

// This thread's pool, or nullptr once it has been destroyed (thread exit).
block_pool* local_pool() noexcept {
    if (local_pool_state == pool_state::gone) {
        return nullptr;
    }
    thread_local block_pool pool;
    return &pool;
}

}  // namespace

secret_bytes secret_bytes::allocate(std::size_t n) {
    ensure_sodium();
    secret_bytes out;
    const std::size_t capacity = n <= pooled_capacity ? pooled_capacity : n;
    block_pool* pool = local_pool();
    if (capacity == pooled_capacity && pool != nullptr && pool->count > 0) {
        out.data_ = pool->blocks[--pool->count];
    } else {
        void* p = sodium_malloc(capacity == 0 ? 1 : capacity);
        if (p == nullptr) {
            throw std::bad_alloc();
        }
        out.data_ = static_cast<unsigned char*>(p);
        // sodium_malloc fills with 0xdb; callers are promised zeroes.
        sodium_memzero(out.data_, capacity);
    }
    out.size_ = n;
    out.capacity_ = capacity;
    return out;
}

secret_bytes::secret_bytes(secret_bytes&& other) noexcept
    : data_(std::exchange(other.data_, nullptr)),
      size_(std::exchange(other.size_, 0)),
      capacity_(std::exchange(other.capacity_, 0)) {}

secret_bytes& secret_bytes::operator=(secret_bytes&& other) noexcept {
    if (this != &other) {
        release();
        data_ = std::exchange(other.data_, nullptr);
        size_ = std::exchange(other.size_, 0);
        capacity_ = std::exchange(other.capacity_, 0);
    }
    return *this;
}

secret_bytes::~secret_bytes() { release(); }

void secret_bytes::shrink(std::size_t n) noexcept {
    if (n < size_) {
        sodium_memzero(data_ + n, size_ - n);
        size_ = n;
    }
}

void secret_bytes::release() noexcept {
    if (data_ == nullptr) {
        return;
    }
    block_pool* pool = local_pool();
    if (capacity_ == pooled_capacity && pool != nullptr && pool->count < pool_depth) {
        // A pooled block is all zeroes while it waits (a fresh one is wiped
        // whole in allocate(), and shrink() wipes what it drops), so only the
        // bytes this owner could write need wiping: a request's payload is a
        // few hundred bytes of a 4 KiB block, and wiping the rest on every
        // request was a visible part of the relay's memset time.
        sodium_memzero(data_, size_);
        pool->blocks[pool->count++] = data_;
    } else {
        sodium_memzero(data_, capacity_);
        sodium_free(data_);
    }
    data_ = nullptr;
    size_ = 0;
    capacity_ = 0;
}

std::ostream& operator<<(std::ostream& os, const secret_bytes&) { return os << "<redacted>"; }

}  // namespace byok::crypto
