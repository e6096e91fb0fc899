#include "crypto/encoding.hpp"

#include <cstring>

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

sha256_digest sha256(std::span<const unsigned char> in) noexcept {
    sha256_digest out;
    crypto_hash_sha256(out.data(), in.data(), in.size());
    return out;
}

sha256_stream::sha256_stream() noexcept {
    crypto_hash_sha256_init(reinterpret_cast<crypto_hash_sha256_state*>(state_.data()));
}

void sha256_stream::update(std::span<const unsigned char> in) noexcept {
    crypto_hash_sha256_update(reinterpret_cast<crypto_hash_sha256_state*>(state_.data()), in.data(),
                              in.size());
}

sha256_digest sha256_stream::finish() noexcept {
    sha256_digest out;
    crypto_hash_sha256_final(reinterpret_cast<crypto_hash_sha256_state*>(state_.data()), out.data());
    return out;
}

}  // namespace byok::crypto
