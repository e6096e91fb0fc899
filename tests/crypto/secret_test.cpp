#include "crypto/secret.hpp"

#include <doctest/doctest.h>

#include <algorithm>
#include <array>
#include <cstring>
#include <list>
#include <new>
#include <string>
#include <string_view>
#include <thread>
#include <type_traits>
#include <vector>

#include <boost/beast/http/fields.hpp>

using byok::crypto::secret_bytes;
using byok::crypto::secret_string;
using byok::crypto::wiping_allocator;

namespace {

// Memory that is never given back: a freed block keeps its bytes and stays
// readable, so a test can look at what a container left behind when it freed
// it. (With std::allocator the block would go back to malloc, and reading it
// would be undefined behaviour and an ASan error.)
struct arena {
    alignas(std::max_align_t) std::array<unsigned char, 1 << 16> bytes{};
    std::size_t used = 0;
    std::size_t deallocations = 0;

    [[nodiscard]] std::string_view contents() const {
        return {reinterpret_cast<const char*>(bytes.data()), used};
    }
    [[nodiscard]] bool holds(std::string_view needle) const { return contents().find(needle) != std::string_view::npos; }
};

template <class T>
class arena_allocator {
public:
    using value_type = T;

    explicit arena_allocator(arena& a) noexcept : arena_(&a) {}
    template <class U>
    arena_allocator(const arena_allocator<U>& other) noexcept : arena_(other.get()) {}  // NOLINT: rebind

    T* allocate(std::size_t n) {
        const std::size_t align = alignof(T);
        const std::size_t start = (arena_->used + align - 1) / align * align;
        if (n > (arena_->bytes.size() - start) / sizeof(T)) {
            throw std::bad_alloc();
        }
        arena_->used = start + n * sizeof(T);
        return reinterpret_cast<T*>(arena_->bytes.data() + start);
    }
    void deallocate(T*, std::size_t) noexcept { ++arena_->deallocations; }  // the bytes stay where they are

    [[nodiscard]] arena* get() const noexcept { return arena_; }
    template <class U>
    friend bool operator==(const arena_allocator& a, const arena_allocator<U>& b) noexcept {
        return a.get() == b.get();
    }

private:
    arena* arena_;
};

constexpr std::string_view known_secret = "sk-proj-KNOWN-SECRET-0123456789abcdefghijklmnopqrstuvwxyz";

using wiping_arena_string =
    std::basic_string<char, std::char_traits<char>, wiping_allocator<char, arena_allocator<char>>>;
using plain_arena_string = std::basic_string<char, std::char_traits<char>, arena_allocator<char>>;

// Puts the secret in a string, grows the string (the first block is freed),
// then destroys it (the second block is freed). Returns whether the old block
// still held the secret right after the growth.
template <class String, class Alloc>
bool secret_left_in_old_block(arena& a, const Alloc& alloc) {
    String s(known_secret, alloc);
    const char* old_block = s.data();
    REQUIRE(old_block >= reinterpret_cast<const char*>(a.bytes.data()));
    const std::size_t before = a.deallocations;
    s.append(4 * s.capacity(), 'x');  // must move to a bigger block
    REQUIRE(s.data() != old_block);
    REQUIRE(a.deallocations == before + 1);
    return std::string_view(old_block, known_secret.size()) == known_secret;
}

}  // namespace

TEST_CASE("secret_string is a basic_string over the wiping allocator") {
    static_assert(std::is_same_v<secret_string::allocator_type, wiping_allocator<char>>);
    static_assert(std::allocator_traits<wiping_allocator<char>>::is_always_equal::value);
    secret_string s(known_secret);
    s += "tail";
    CHECK(std::string_view(s) == std::string(known_secret) + "tail");
}

TEST_CASE("control: with a plain (non-wiping) allocator the secret stays in freed memory") {
    // This is what the wiping tests below would see if the allocator did not wipe.
    arena a;
    CHECK(secret_left_in_old_block<plain_arena_string>(a, arena_allocator<char>(a)));
    CHECK(a.holds(known_secret));
}

TEST_CASE("wiping_allocator: a secret string's freed blocks are zero, on growth and on destruction") {
    arena a;
    const wiping_allocator<char, arena_allocator<char>> alloc{arena_allocator<char>(a)};
    CHECK_FALSE(secret_left_in_old_block<wiping_arena_string>(a, alloc));
    REQUIRE(a.deallocations == 2);
    REQUIRE(a.used > known_secret.size());
    CHECK_FALSE(a.holds(known_secret));
    CHECK_FALSE(a.holds("sk-proj"));
    // Every byte either string block ever used is zero now.
    CHECK(std::all_of(a.bytes.begin(), a.bytes.begin() + static_cast<std::ptrdiff_t>(a.used),
                      [](unsigned char c) { return c == 0; }));
}

TEST_CASE("wiping_allocator: blocks freed through rebind (node containers) are wiped") {
    using block = std::array<char, known_secret.size()>;
    block secret_block{};
    std::memcpy(secret_block.data(), known_secret.data(), known_secret.size());

    arena plain;
    {
        std::list<block, arena_allocator<block>> l{arena_allocator<block>(plain)};
        l.push_back(secret_block);
    }
    CHECK(plain.holds(known_secret));  // control

    arena wiped;
    {
        // std::list allocates nodes: wiping_allocator<block> is rebound to the node type.
        using alloc = wiping_allocator<block, arena_allocator<block>>;
        std::list<block, alloc> l{alloc{arena_allocator<block>(wiped)}};
        l.push_back(secret_block);
        l.push_back(secret_block);
        l.pop_front();
        CHECK(wiped.holds(known_secret));  // the live node
    }
    CHECK(wiped.deallocations == 2);
    CHECK_FALSE(wiped.holds(known_secret));
}

TEST_CASE("wiping_allocator works with Beast's basic_fields: a freed header value is wiped") {
    const std::string value = "Sealed kid." + std::string(known_secret);
    arena plain;
    {
        boost::beast::http::basic_fields<arena_allocator<char>> f{arena_allocator<char>(plain)};
        f.set(boost::beast::http::field::authorization, value);
    }
    CHECK(plain.holds(known_secret));  // control

    arena wiped;
    {
        using alloc = wiping_allocator<char, arena_allocator<char>>;
        boost::beast::http::basic_fields<alloc> f{alloc{arena_allocator<char>(wiped)}};
        f.set(boost::beast::http::field::authorization, value);
        f.set("X-Other", "x");
        CHECK(wiped.holds(known_secret));
        f.erase(boost::beast::http::field::authorization);
        CHECK_FALSE(wiped.holds(known_secret));  // erased: freed and wiped at once
        f.set(boost::beast::http::field::authorization, value);
    }
    CHECK_FALSE(wiped.holds(known_secret));
}

TEST_CASE("secret_bytes: allocate gives zeroes; release wipes the pooled block before reuse") {
    auto a = secret_bytes::allocate(100);
    CHECK(std::all_of(a.data(), a.data() + a.size(), [](unsigned char c) { return c == 0; }));
    std::memset(a.data(), 0xAA, a.size());
    const unsigned char* block = a.data();
    a = secret_bytes();  // release: the block goes back to this thread's pool
    CHECK(a.empty());
    CHECK(a.data() == nullptr);

    // The pool hands the same block out again and does not clear it on the
    // way out (release is the only wipe): so what we see here is what the
    // release left behind. The full pooled capacity is checked.
    auto b = secret_bytes::allocate(secret_bytes::pool_block_size);
    REQUIRE(b.data() == block);
    CHECK(std::all_of(b.data(), b.data() + b.size(), [](unsigned char c) { return c == 0; }));
}

TEST_CASE("secret_bytes: a long secret in a pooled block is wiped in full, not just the new size") {
    auto a = secret_bytes::allocate(secret_bytes::pool_block_size);
    std::memset(a.data(), 0x5C, a.size());
    a.shrink(8);  // shrink wipes the tail at once
    CHECK(a.size() == 8);
    const unsigned char* block = a.data();
    CHECK(std::all_of(block + 8, block + secret_bytes::pool_block_size, [](unsigned char c) { return c == 0; }));
    a = secret_bytes();
    auto b = secret_bytes::allocate(16);
    REQUIRE(b.data() == block);
    CHECK(std::all_of(b.data(), b.data() + 16, [](unsigned char c) { return c == 0; }));
}

TEST_CASE("secret_bytes: moves transfer ownership; large buffers work") {
    auto a = secret_bytes::allocate(32);
    a.data()[0] = 7;
    secret_bytes b(std::move(a));
    CHECK(a.data() == nullptr);  // NOLINT: checking the moved-from state on purpose
    CHECK(a.size() == 0);
    CHECK(b.size() == 32);
    CHECK(b.data()[0] == 7);
    auto big = secret_bytes::allocate(100000);
    CHECK(big.size() == 100000);
    CHECK(big.data()[99999] == 0);
    big.data()[99999] = 1;
    CHECK(b.view().size() == 32);
}

TEST_CASE("secret_bytes: released on a thread that is exiting, after its pool is gone (smoke test)") {
    // A thread_local that outlives the pool (it was constructed first, so it
    // is destroyed last) releases its block after the pool's destructor ran.
    // The block must then be freed directly, not pushed into a dead pool.
    std::thread t([] {
        struct holder {
            secret_bytes s;
        };
        thread_local holder h;
        h.s = secret_bytes::allocate(64);  // creates the pool after h
        h.s.data()[0] = 1;
    });
    t.join();
    CHECK(true);
}
