#pragma once
// base64url (RFC 4648 §5, no padding) and SHA-256, the two encodings the wire
// protocol uses. Pure functions; thread-safe.

#include <array>
#include <cstddef>
#include <optional>
#include <span>
#include <string>
#include <string_view>

namespace byok::crypto {

using sha256_digest = std::array<unsigned char, 32>;

[[nodiscard]] std::string base64url_encode(std::span<const unsigned char> in);

// Upper bound of the decoded size of n base64url characters.
[[nodiscard]] constexpr std::size_t base64url_decoded_max(std::size_t n) noexcept {
    return n / 4 * 3 + 2;
}

// Strict decode: the URL-safe alphabet only, no padding, no white space, and
// the unused low bits of the last character must be zero (one encoding per
// value). Returns the number of bytes written, or nullopt if `in` is not
// canonical base64url or does not fit in `out`.
[[nodiscard]] std::optional<std::size_t> base64url_decode(std::string_view in,
                                                          std::span<unsigned char> out) noexcept;

// The same strict decode, table-driven and so variable-time: only for data
// that is public anyway (a sealed box is ciphertext, body_sha256 a hash).
// Several times faster than the constant-time decoder above, which the key
// file loader keeps using for the secret key.
[[nodiscard]] std::optional<std::size_t> base64url_decode_public(std::string_view in,
                                                                 std::span<unsigned char> out) noexcept;

// SHA-256 through OpenSSL, which uses the CPU's SHA extensions where present.
[[nodiscard]] sha256_digest sha256(std::span<const unsigned char> in) noexcept;
[[nodiscard]] inline sha256_digest sha256(std::string_view in) noexcept {
    return sha256(std::span(reinterpret_cast<const unsigned char*>(in.data()), in.size()));
}

// Incremental SHA-256, for input that comes in pieces. Short input (a
// header list, a labelled id: what the request path hashes) is gathered and
// hashed once by sha256() above, with OpenSSL's SHA extensions; input that
// outgrows the buffer streams through libsodium.
class sha256_stream {
public:
    sha256_stream() noexcept = default;
    void update(std::span<const unsigned char> in) noexcept;
    void update(std::string_view in) noexcept {
        update(std::span(reinterpret_cast<const unsigned char*>(in.data()), in.size()));
    }
    [[nodiscard]] sha256_digest finish() noexcept;

private:
    std::array<unsigned char, 256> gathered_;  // the first gathered_len_ bytes are input
    std::size_t gathered_len_ = 0;
    bool streaming_ = false;  // state_ holds everything so far; gathered_ is unused
    alignas(16) std::array<unsigned char, 128> state_;  // crypto_hash_sha256_state, opaque here
};

}  // namespace byok::crypto
