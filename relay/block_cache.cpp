#include "relay/block_cache.hpp"

#include <malloc.h>
#include <openssl/crypto.h>

#include <algorithm>
#include <array>
#include <cstdlib>
#include <cstring>

#include "relay/sanitizer.hpp"

namespace byok::relay::block_cache {
namespace {

// Under AddressSanitizer every block goes to malloc and free, so that a use
// after free is still reported.
constexpr bool cache_on = !address_sanitizer_build;

// Requests of more than `above` and at most `block` bytes get a block of
// `block` bytes: the 4 KiB read buffers (4,096 and 4,098), the pump's pieces
// (8,192), OpenSSL's record buffers (16,492 and 16,712).
struct size_class {
    std::size_t above;
    std::size_t block;
};
constexpr std::array<size_class, 3> classes{{{3'584, 4'608}, {7'168, 8'704}, {15'360, 17'408}}};

constexpr int class_of(std::size_t n) noexcept {
    if (!cache_on || n <= classes.front().above || n > classes.back().block) {
        return -1;  // most of OpenSSL's allocations: one comparison
    }
    for (std::size_t i = 0; i < classes.size(); ++i) {
        if (n > classes[i].above && n <= classes[i].block) {
            return static_cast<int>(i);
        }
    }
    return -1;
}

// Trivially destructible: still usable when a block is freed after the
// drainer below ran at thread exit (OpenSSL's own thread and exit cleanup
// frees after C++ thread_local destructors).
struct thread_stacks {
    std::array<std::array<void*, per_class>, classes.size()> blocks;
    std::array<std::size_t, classes.size()> count;
    bool drainer_armed;
    bool closed;
    std::uint64_t hits;
    std::uint64_t misses;
};
constinit thread_local thread_stacks stacks{};

struct drainer {
    drainer() = default;
    drainer(const drainer&) = delete;
    drainer& operator=(const drainer&) = delete;
    ~drainer() {
        stacks.closed = true;
        for (std::size_t c = 0; c < classes.size(); ++c) {
            for (std::size_t i = 0; i < stacks.count[c]; ++i) {
                std::free(stacks.blocks[c][i]);  // NOLINT: the blocks came from malloc
            }
            stacks.count[c] = 0;
        }
    }
};
thread_local drainer drain_at_exit;

void* malloc_or_throw(std::size_t n) {
    void* p = std::malloc(std::max<std::size_t>(n, 1));  // NOLINT: a raw block is what is asked for
    if (p == nullptr) {
        throw std::bad_alloc();
    }
    return p;
}

// OpenSSL frees without a size. A block whose usable size is at least a
// class's block (and not much more) can serve any request of that class,
// wherever it came from; glibc knows each block's usable size.
constexpr std::size_t usable_slack = 256;

int class_of_usable(std::size_t u) noexcept {
    if (!cache_on || u < classes.front().block || u > classes.back().block + usable_slack) {
        return -1;
    }
    for (std::size_t i = 0; i < classes.size(); ++i) {
        if (u >= classes[i].block && u <= classes[i].block + usable_slack) {
            return static_cast<int>(i);
        }
    }
    return -1;
}

}  // namespace

void* allocate(std::size_t n) {
    const int c = class_of(n);
    if (c < 0) {
        return malloc_or_throw(n);
    }
    auto& s = stacks;
    if (s.count[c] > 0) {
        ++s.hits;
        return s.blocks[c][--s.count[c]];
    }
    ++s.misses;
    return malloc_or_throw(classes[c].block);
}

void deallocate(void* p, std::size_t n) noexcept {
    if (p == nullptr) {
        return;
    }
    const int c = class_of(n);
    auto& s = stacks;
    if (c >= 0 && !s.closed && s.count[c] < per_class) {
        if (!s.drainer_armed) {
            (void)&drain_at_exit;  // constructs it on this thread, so that it runs at thread exit
            s.drainer_armed = true;
        }
        s.blocks[c][s.count[c]++] = p;
        return;
    }
    std::free(p);  // NOLINT: from malloc_or_throw
}

bool install_for_openssl() noexcept {
    return CRYPTO_set_mem_functions(&openssl::malloc_fn, &openssl::realloc_fn, &openssl::free_fn) == 1;
}

counters thread_counters() noexcept {
    std::uint64_t kept = 0;
    for (const auto k : stacks.count) {
        kept += k;
    }
    return {stacks.hits, stacks.misses, kept};
}

bool enabled() noexcept {
    return cache_on;
}

namespace openssl {

void* malloc_fn(std::size_t n, const char* /*file*/, int /*line*/) noexcept {
    if (n == 0) {
        return nullptr;  // as OpenSSL's own CRYPTO_malloc
    }
    try {
        return allocate(n);
    } catch (const std::bad_alloc&) {
        return nullptr;
    }
}

void free_fn(void* p, const char* /*file*/, int /*line*/) noexcept {
    if (p == nullptr) {
        return;
    }
    if constexpr (cache_on) {
        const int c = class_of_usable(malloc_usable_size(p));
        if (c >= 0) {
            deallocate(p, classes[c].block);
            return;
        }
    }
    std::free(p);  // NOLINT: OpenSSL's blocks come from malloc
}

void* realloc_fn(void* p, std::size_t n, const char* file, int line) noexcept {
    if (p == nullptr) {
        return malloc_fn(n, file, line);
    }
    if (n == 0) {
        free_fn(p, file, line);
        return nullptr;
    }
    const std::size_t old = malloc_usable_size(p);
    if (class_of_usable(old) < 0 && class_of(n) < 0) {
        return std::realloc(p, n);  // NOLINT: neither size is cached; glibc may grow the block in place
    }
    void* q = malloc_fn(n, file, line);
    if (q == nullptr) {
        return nullptr;  // p stays valid, as realloc's contract says
    }
    std::memcpy(q, p, std::min(old, n));
    free_fn(p, file, line);
    return q;
}

}  // namespace openssl
}  // namespace byok::relay::block_cache
