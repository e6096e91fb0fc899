#include "relay/block_cache.hpp"

#include <cstdint>
#include <cstring>
#include <thread>
#include <vector>

#include <boost/beast/core/flat_buffer.hpp>
#include <doctest/doctest.h>

namespace bc = byok::relay::block_cache;

namespace {

// Gives every block this thread's cache keeps back to malloc's, so that each
// case starts from an empty cache whatever ran before it on this thread.
void empty_cache() {
    for (const std::size_t n : {4'096U, 8'192U, 16'712U}) {
        std::vector<void*> taken;
        while (bc::thread_counters().kept > 0 && taken.size() < 3 * bc::per_class) {
            const auto before = bc::thread_counters().hits;
            void* p = bc::allocate(n);
            if (bc::thread_counters().hits == before) {
                std::free(p);  // NOLINT: nothing of this class was kept; this block is malloc's
                break;
            }
            taken.push_back(p);
        }
        for (void* p : taken) {
            std::free(p);  // NOLINT: the cache's blocks come from malloc
        }
    }
}

bool aligned(const void* p) {
    return reinterpret_cast<std::uintptr_t>(p) % alignof(std::max_align_t) == 0;
}

}  // namespace

TEST_CASE("a freed block of a cached size class is what the thread's next request of that class gets") {
    empty_cache();
    const auto before = bc::thread_counters();
    void* p = bc::allocate(16'712);  // OpenSSL's read buffer
    std::memset(p, 0x5a, 16'712);
    bc::deallocate(p, 16'712);
    void* q = bc::allocate(16'492);  // its write buffer: the same class
    const auto after = bc::thread_counters();
    if (bc::enabled()) {
        CHECK(q == p);
        CHECK(after.hits == before.hits + 1);
        CHECK(after.misses == before.misses + 1);
    } else {
        CHECK(after.hits == before.hits);  // under AddressSanitizer nothing is kept
    }
    std::memset(q, 0, 16'492);  // the whole request is usable
    bc::deallocate(q, 16'492);
    CHECK(bc::thread_counters().kept == (bc::enabled() ? 1U : 0U));
    empty_cache();
}

TEST_CASE("the cache keeps at most per_class blocks of a class; the rest go back to malloc") {
    empty_cache();
    std::vector<void*> blocks;
    for (std::size_t i = 0; i < 2 * bc::per_class; ++i) {
        blocks.push_back(bc::allocate(8'192));
        CHECK(aligned(blocks.back()));
    }
    for (void* p : blocks) {
        bc::deallocate(p, 8'192);
    }
    CHECK(bc::thread_counters().kept == (bc::enabled() ? bc::per_class : 0U));
    const auto before = bc::thread_counters();
    blocks.clear();
    for (std::size_t i = 0; i < 2 * bc::per_class; ++i) {
        blocks.push_back(bc::allocate(8'192));
    }
    const auto after = bc::thread_counters();
    CHECK(after.hits - before.hits == (bc::enabled() ? bc::per_class : 0U));
    CHECK(after.kept == 0U);
    for (void* p : blocks) {
        bc::deallocate(p, 8'192);
    }
    empty_cache();
}

TEST_CASE("sizes outside the three classes are neither cached nor counted") {
    empty_cache();
    const auto before = bc::thread_counters();
    for (const std::size_t n : {1U, 1'032U, 3'584U, 4'609U, 7'168U, 8'705U, 15'360U, 17'409U, 100'000U}) {
        void* p = bc::allocate(n);
        std::memset(p, 1, n);
        bc::deallocate(p, n);
    }
    const auto after = bc::thread_counters();
    CHECK(after.hits == before.hits);
    CHECK(after.misses == before.misses);
    CHECK(after.kept == 0U);
}

TEST_CASE("a block freed on another thread goes to that thread's cache, not to the allocating one's") {
    empty_cache();
    void* p = bc::allocate(4'096);
    std::uint64_t kept_there = 0;
    std::thread t([&] {
        bc::deallocate(p, 4'096);
        kept_there = bc::thread_counters().kept;
    });  // its exit gives the kept block back to malloc
    t.join();
    CHECK(kept_there == (bc::enabled() ? 1U : 0U));
    CHECK(bc::thread_counters().kept == 0U);
}

TEST_CASE("OpenSSL's functions: a freed block's class from its usable size, realloc keeps the bytes across classes") {
    empty_cache();
    using namespace bc::openssl;
    CHECK(malloc_fn(0, __FILE__, __LINE__) == nullptr);  // as OpenSSL's own CRYPTO_malloc
    free_fn(nullptr, __FILE__, __LINE__);

    auto* p = static_cast<unsigned char*>(malloc_fn(16'712, __FILE__, __LINE__));
    REQUIRE(p != nullptr);
    CHECK(aligned(p));
    for (std::size_t i = 0; i < 16'712; ++i) {
        p[i] = static_cast<unsigned char>(i * 7);
    }
    // Cached class -> uncached size, bytes kept.
    auto* q = static_cast<unsigned char*>(realloc_fn(p, 40'000, __FILE__, __LINE__));
    REQUIRE(q != nullptr);
    bool same = true;
    for (std::size_t i = 0; i < 16'712; ++i) {
        same = same && q[i] == static_cast<unsigned char>(i * 7);
    }
    CHECK(same);
    // Uncached -> uncached (glibc's realloc), then -> a cached class.
    q = static_cast<unsigned char*>(realloc_fn(q, 100, __FILE__, __LINE__));
    REQUIRE(q != nullptr);
    q = static_cast<unsigned char*>(realloc_fn(q, 8'000, __FILE__, __LINE__));
    REQUIRE(q != nullptr);
    same = true;
    for (std::size_t i = 0; i < 100; ++i) {
        same = same && q[i] == static_cast<unsigned char>(i * 7);
    }
    CHECK(same);
    std::memset(q, 0, 8'000);
    // Freeing finds the class from the block's usable size: the 8 KiB class.
    const auto kept = bc::thread_counters().kept;
    free_fn(q, __FILE__, __LINE__);
    CHECK(bc::thread_counters().kept == kept + (bc::enabled() ? 1U : 0U));
    void* r = bc::allocate(8'192);
    if (bc::enabled()) {
        CHECK(r == static_cast<void*>(q));
    }
    bc::deallocate(r, 8'192);

    void* n = realloc_fn(nullptr, 10, __FILE__, __LINE__);  // realloc of nothing allocates
    REQUIRE(n != nullptr);
    CHECK(realloc_fn(n, 0, __FILE__, __LINE__) == nullptr);  // and of 0 bytes frees
    empty_cache();
}

TEST_CASE("a flat_buffer over the cache gives its block back when shrunk, and gets it again") {
    empty_cache();
    boost::beast::basic_flat_buffer<bc::allocator<char>> b;
    auto m = b.prepare(4'096);
    std::memset(m.data(), 'x', m.size());
    b.commit(4'096);
    const void* first = b.data().data();
    b.consume(4'096);
    b.shrink_to_fit();
    CHECK(bc::thread_counters().kept == (bc::enabled() ? 1U : 0U));
    (void)b.prepare(4'098);  // what upstream_response::fill asks for
    if (bc::enabled()) {
        CHECK(static_cast<const void*>(b.prepare(4'098).data()) == first);
    }
    b.shrink_to_fit();
    empty_cache();
}
