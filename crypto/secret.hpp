#pragma once
// Secret memory: where the user's provider key and every opened seal live.
//
// secret_bytes  - a move-only buffer in sodium_malloc memory: guard pages on
//                 both sides, locked (mlock) so it never reaches swap, excluded
//                 from core dumps (libsodium applies MADV_DONTDUMP), wiped on
//                 release.
// wiping_allocator - an allocator that zeroes every block before handing it
//                 back, for the containers a secret has to pass through
//                 (std::basic_string, Beast's basic_fields).
//
// Thread safety: a secret_bytes is owned by one thread at a time, like any
// value. Allocation and release may happen on any thread.

#include <cstddef>
#include <iosfwd>
#include <memory>
#include <span>
#include <string>
#include <string_view>

#include <sodium.h>

namespace byok::crypto {

// Initializes libsodium once; every factory in crypto/ calls it. Thread-safe.
// Throws std::runtime_error if libsodium cannot start (no entropy source).
void ensure_sodium();

class secret_bytes {
public:
    // Buffers up to this size are one locked page each and are pooled per
    // thread (sodium_malloc adds a 16-byte canary and rounds up to pages).
    // The largest sealed payload the relay accepts (4048 bytes) fits.
    static constexpr std::size_t pool_block_size = 4096 - 16;

    // n zero bytes of secret memory. Throws std::bad_alloc. Small buffers come
    // from a per-thread cache of already-locked pages, so the per-request path
    // makes no system calls; they are wiped before they go back to the cache.
    [[nodiscard]] static secret_bytes allocate(std::size_t n);

    secret_bytes() noexcept = default;
    secret_bytes(secret_bytes&& other) noexcept;
    secret_bytes& operator=(secret_bytes&& other) noexcept;
    secret_bytes(const secret_bytes&) = delete;
    secret_bytes& operator=(const secret_bytes&) = delete;
    ~secret_bytes();

    [[nodiscard]] unsigned char* data() noexcept { return data_; }
    [[nodiscard]] const unsigned char* data() const noexcept { return data_; }
    [[nodiscard]] std::size_t size() const noexcept { return size_; }
    [[nodiscard]] bool empty() const noexcept { return size_ == 0; }
    [[nodiscard]] std::span<unsigned char> span() noexcept { return {data_, size_}; }
    [[nodiscard]] std::span<const unsigned char> span() const noexcept { return {data_, size_}; }
    [[nodiscard]] std::span<char> chars() noexcept { return {reinterpret_cast<char*>(data_), size_}; }
    [[nodiscard]] std::string_view view() const noexcept {
        return {reinterpret_cast<const char*>(data_), size_};
    }

    // Wipes everything past n and makes n the size. n <= size().
    void shrink(std::size_t n) noexcept;

    // Prints "<redacted>", never the bytes.
    friend std::ostream& operator<<(std::ostream& os, const secret_bytes&);

private:
    void release() noexcept;

    unsigned char* data_ = nullptr;
    std::size_t size_ = 0;
    std::size_t capacity_ = 0;
};

// Zeroes n bytes in a way the compiler may not remove.
inline void wipe(void* p, std::size_t n) noexcept { sodium_memzero(p, n); }

// Zeroes the 16 KiB of stack below the caller's frame. For right after a
// library call that handled secret bytes and may have left copies in its
// own stack frames, which it does not wipe: libsodium 1.0.18's secretbox
// open (the first 32 bytes of a payload; crypto/seal.cpp), and whatever
// writing the upstream request head leaves (relay/key_path.cpp runs it from
// the top of the event loop, after the write). Those frames lie below the
// caller's, where later calls may or may not happen to overwrite them.
// An open writes about 2.6 KiB deep (tests/crypto/stack_residue_test.cpp).
void wipe_stack_below() noexcept;
inline constexpr std::size_t stack_wipe_bytes = 16384;

// An allocator that wipes every block it frees, then passes it to Upstream.
// Upstream is std::allocator unless a test wants to look at freed memory.
template <class T, class Upstream = std::allocator<T>>
class wiping_allocator {
    using up_traits = std::allocator_traits<Upstream>;

public:
    using value_type = T;
    using upstream_type = Upstream;
    template <class U>
    struct rebind {
        using other = wiping_allocator<U, typename up_traits::template rebind_alloc<U>>;
    };

    wiping_allocator() = default;
    explicit wiping_allocator(const Upstream& up) noexcept : up_(up) {}
    template <class U, class UU>
    wiping_allocator(const wiping_allocator<U, UU>& other) noexcept  // NOLINT: allocator rebind
        : up_(other.upstream()) {}

    [[nodiscard]] T* allocate(std::size_t n) { return up_traits::allocate(up_, n); }
    void deallocate(T* p, std::size_t n) noexcept {
        sodium_memzero(static_cast<void*>(p), n * sizeof(T));
        up_traits::deallocate(up_, p, n);
    }

    [[nodiscard]] const Upstream& upstream() const noexcept { return up_; }

    template <class U, class UU>
    friend bool operator==(const wiping_allocator& a, const wiping_allocator<U, UU>& b) noexcept {
        return a.upstream() == b.upstream();
    }

private:
    [[no_unique_address]] Upstream up_{};
};

// A string whose heap block is wiped when it is freed or grows. Short strings
// live inside the object itself (the small-string buffer), which the
// allocator never sees: do not put a secret shorter than 16 bytes in one.
using secret_string = std::basic_string<char, std::char_traits<char>, wiping_allocator<char>>;

}  // namespace byok::crypto
