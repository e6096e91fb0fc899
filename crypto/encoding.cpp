#include "crypto/encoding.hpp"

#include <array>
#include <cstring>
#include <memory>

#include <openssl/evp.h>
#include <sodium.h>

#include "crypto/secret.hpp"

namespace byok::crypto {

static_assert(sizeof(crypto_hash_sha256_state) <= 128, "sha256_stream state buffer too small");

std::string base64url_encode(std::span<const unsigned char> in) {
    const int variant = sodium_base64_VARIANT_URLSAFE_NO_PADDING;
    std::string out(sodium_base64_ENCODED_LEN(in.size(), variant), '\0');
    sodium_bin2base64(out.data(), out.size(), in.data(), in.size(), variant);
    out.resize(out.size() - 1);  // the encoder writes a terminating NUL
    return out;
}

std::optional<std::size_t> base64url_decode(std::string_view in, std::span<unsigned char> out) noexcept {
    std::size_t written = 0;
    const char* end = nullptr;
    if (in.size() % 4 == 1) {
        return std::nullopt;  // no whole byte fits in one trailing character
    }
    // libsodium 1.0.18's URL-safe decoder reads every byte from 0x80 to 0xff
    // as '_' (a signed-char comparison), so "Q\xf1" would decode like "Q_":
    // the alphabet is checked here first.
    for (const char c : in) {
        if (!((c >= 'A' && c <= 'Z') || (c >= 'a' && c <= 'z') || (c >= '0' && c <= '9') || c == '-' || c == '_')) {
            return std::nullopt;
        }
    }
    if (sodium_base642bin(out.data(), out.size(), in.data(), in.size(), nullptr, &written, &end,
                          sodium_base64_VARIANT_URLSAFE_NO_PADDING) != 0) {
        return std::nullopt;
    }
    if (end != in.data() + in.size()) {
        return std::nullopt;
    }
    return written;
}

namespace {

// 0..63 for the URL-safe alphabet, 0xFF for everything else (high bytes included).
constexpr std::array<unsigned char, 256> decode_table = [] {
    std::array<unsigned char, 256> t{};
    t.fill(0xFF);
    const char* alphabet = "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789-_";
    for (unsigned i = 0; i < 64; ++i) {
        t[static_cast<unsigned char>(alphabet[i])] = static_cast<unsigned char>(i);
    }
    return t;
}();

}  // namespace

std::optional<std::size_t> base64url_decode_public(std::string_view in, std::span<unsigned char> out) noexcept {
    const std::size_t rem = in.size() % 4;
    if (rem == 1) {
        return std::nullopt;
    }
    const std::size_t n = in.size() / 4 * 3 + (rem == 0 ? 0 : rem - 1);
    if (n > out.size()) {
        return std::nullopt;
    }
    const auto* p = reinterpret_cast<const unsigned char*>(in.data());
    unsigned char* w = out.data();
    std::size_t i = 0;
    for (; i + 4 <= in.size(); i += 4) {
        const unsigned a = decode_table[p[i]];
        const unsigned b = decode_table[p[i + 1]];
        const unsigned c = decode_table[p[i + 2]];
        const unsigned d = decode_table[p[i + 3]];
        if ((a | b | c | d) & 0x80) {
            return std::nullopt;
        }
        const unsigned v = (a << 18) | (b << 12) | (c << 6) | d;
        *w++ = static_cast<unsigned char>(v >> 16);
        *w++ = static_cast<unsigned char>(v >> 8);
        *w++ = static_cast<unsigned char>(v);
    }
    if (rem == 2) {
        const unsigned a = decode_table[p[i]];
        const unsigned b = decode_table[p[i + 1]];
        if (((a | b) & 0x80) || (b & 0x0F) != 0) {  // the unused low bits must be zero
            return std::nullopt;
        }
        *w++ = static_cast<unsigned char>((a << 2) | (b >> 4));
    } else if (rem == 3) {
        const unsigned a = decode_table[p[i]];
        const unsigned b = decode_table[p[i + 1]];
        const unsigned c = decode_table[p[i + 2]];
        if (((a | b | c) & 0x80) || (c & 0x03) != 0) {
            return std::nullopt;
        }
        const unsigned v = (a << 10) | (b << 4) | (c >> 2);
        *w++ = static_cast<unsigned char>(v >> 8);
        *w++ = static_cast<unsigned char>(v);
    }
    return n;
}

sha256_digest sha256(std::span<const unsigned char> in) noexcept {
    // OpenSSL's SHA-256 uses the CPU's SHA extensions (a 64 MiB upload hashes
    // several times faster than with libsodium's portable code), but its
    // one-shot SHA256() looks the algorithm up in the provider store and
    // allocates a context on every call (EVP_Q_digest, three allocations
    // and a lock a request: docs/benchmarks.md). The algorithm is fetched
    // once, and each thread keeps one context, which EVP_DigestInit_ex2
    // resets without allocating when the algorithm is the same.
    static EVP_MD* const md = EVP_MD_fetch(nullptr, "SHA256", nullptr);
    thread_local const std::unique_ptr<EVP_MD_CTX, decltype(&EVP_MD_CTX_free)> ctx(EVP_MD_CTX_new(),
                                                                                    &EVP_MD_CTX_free);
    sha256_digest out;
    unsigned int len = 0;
    if (md == nullptr || ctx == nullptr || EVP_DigestInit_ex2(ctx.get(), md, nullptr) != 1 ||
        EVP_DigestUpdate(ctx.get(), in.data(), in.size()) != 1 || EVP_DigestFinal_ex(ctx.get(), out.data(), &len) != 1 ||
        len != out.size()) {
        crypto_hash_sha256(out.data(), in.data(), in.size());  // the same function, without OpenSSL
    }
    return out;
}

void sha256_stream::update(std::span<const unsigned char> in) noexcept {
    auto* const st = reinterpret_cast<crypto_hash_sha256_state*>(state_.data());
    if (!streaming_) {
        if (in.size() <= gathered_.size() - gathered_len_) {
            std::copy(in.begin(), in.end(), gathered_.begin() + static_cast<std::ptrdiff_t>(gathered_len_));
            gathered_len_ += in.size();
            return;
        }
        crypto_hash_sha256_init(st);
        crypto_hash_sha256_update(st, gathered_.data(), gathered_len_);
        streaming_ = true;
    }
    crypto_hash_sha256_update(st, in.data(), in.size());
}

sha256_digest sha256_stream::finish() noexcept {
    if (!streaming_) {
        return sha256(std::span<const unsigned char>(gathered_.data(), gathered_len_));
    }
    sha256_digest out;
    crypto_hash_sha256_final(reinterpret_cast<crypto_hash_sha256_state*>(state_.data()), out.data());
    return out;
}

}  // namespace byok::crypto
