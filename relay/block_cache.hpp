#pragma once
// A per-thread cache of the few large blocks the request path frees and
// takes back around every wait.
//
// Between two reads a stream holds no buffer (so a slow stream costs less
// memory than nginx's): OpenSSL's record buffers (16,712 and 16,492 bytes,
// SSL_MODE_RELEASE_BUFFERS and SSL_free_buffers), the pump's two pieces
// (8 KiB), the upstream read buffer and a session's read buffer (4 KiB) are
// freed before each wait and allocated again after it: about 22 such blocks
// for a 20-event stream sent back to back, 6 for a plain request. Each is
// above glibc's per-thread cache (1,032 bytes), so each malloc searches the
// large bins after merging the fast bins (malloc_consolidate), and each free
// coalesces. Here a freed block of one of three size classes goes onto a
// per-thread stack of at most `per_class` blocks and the next request for
// that class on the thread takes it back: no lock, no search. The memory it
// keeps is bounded per thread (about 240 KiB), not per connection.
//
// Blocks of other sizes go to malloc and free unchanged. Under
// AddressSanitizer nothing is kept, so a use after free is still reported.
#include <cstddef>
#include <cstdint>
#include <new>

namespace byok::relay::block_cache {

inline constexpr std::size_t per_class = 8;

// A block of at least `n` bytes, aligned as malloc's; throws std::bad_alloc.
[[nodiscard]] void* allocate(std::size_t n);
// Gives back a block from allocate(n), with the same `n`.
void deallocate(void* p, std::size_t n) noexcept;

// Routes OpenSSL's allocations through the cache (CRYPTO_set_mem_functions).
// OpenSSL accepts this only before its first allocation: call it first thing
// in main. False if it was too late (OpenSSL then keeps its own functions).
bool install_for_openssl() noexcept;

// What this thread's cache did (for tests).
struct counters {
    std::uint64_t hits = 0;    // allocations served from the cache
    std::uint64_t misses = 0;  // allocations of a cached size class that went to malloc
    std::uint64_t kept = 0;    // blocks on this thread's stacks now
};
[[nodiscard]] counters thread_counters() noexcept;
// False under AddressSanitizer: every block goes to malloc and free.
[[nodiscard]] bool enabled() noexcept;

// The three functions install_for_openssl() hands to OpenSSL, here so that a
// test can call them without owning the process's OpenSSL. OpenSSL frees
// without a size: free_fn keeps a block whose usable size (malloc_usable_size)
// is at least a class's block size and at most 256 bytes more.
namespace openssl {
void* malloc_fn(std::size_t n, const char* file, int line) noexcept;
void* realloc_fn(void* p, std::size_t n, const char* file, int line) noexcept;
void free_fn(void* p, const char* file, int line) noexcept;
}  // namespace openssl

// A standard allocator over the cache (for flat_buffer and the like).
template <class T>
struct allocator {
    static_assert(alignof(T) <= alignof(std::max_align_t));
    using value_type = T;
    allocator() = default;
    template <class U>
    allocator(const allocator<U>& /*other*/) noexcept {}  // NOLINT: allocator rebind
    [[nodiscard]] T* allocate(std::size_t n) { return static_cast<T*>(block_cache::allocate(n * sizeof(T))); }
    void deallocate(T* p, std::size_t n) noexcept { block_cache::deallocate(p, n * sizeof(T)); }
    template <class U>
    friend bool operator==(const allocator& /*a*/, const allocator<U>& /*b*/) noexcept {
        return true;
    }
};

// unique_ptr<char[], deleter<N>> for a block from allocate(N).
template <std::size_t N>
struct deleter {
    void operator()(char* p) const noexcept { deallocate(p, N); }
};

}  // namespace byok::relay::block_cache
