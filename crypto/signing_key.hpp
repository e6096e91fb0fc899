#pragma once
// The key-list signing key: an Ed25519 key pair (libsodium crypto_sign) whose
// public half the app pins and whose private half signs the relay's key list
// offline (relay/key_list.hpp). It never needs to be on the relay: the relay
// serves the signed list verbatim and holds no signing key.
//
// Immutable once built, move-only; the private half lives in secret memory.
// Thread-safe for concurrent const use.
//
// File (JSON, mode 0600, written by `byok-relay keygen --signing FILE`):
//   {"v":1,"alg":"ed25519","use":"byok-relay key list","pk":"<b64url 32>",
//    "sk":"<b64url 32-byte seed>","created":<unix s>}

#include <array>
#include <cstdint>
#include <span>
#include <string>

#include "crypto/secret.hpp"

namespace byok::crypto {

using ed25519_public_key = std::array<unsigned char, 32>;
using ed25519_signature = std::array<unsigned char, 64>;

class signing_key {
public:
    [[nodiscard]] static signing_key generate(std::int64_t now);
    // Throws key_error for a missing, malformed or group/other-accessible
    // file, or one whose pk does not belong to its sk.
    [[nodiscard]] static signing_key load_file(const std::string& path);
    // Mode 0600; refuses (key_error) to replace an existing file.
    void write_new_file(const std::string& path) const;

    signing_key(signing_key&&) noexcept = default;
    signing_key& operator=(signing_key&&) noexcept = default;

    [[nodiscard]] const ed25519_public_key& pk() const noexcept { return pk_; }
    // The detached Ed25519 signature of `message`.
    [[nodiscard]] ed25519_signature sign(std::span<const unsigned char> message) const noexcept;

private:
    signing_key() = default;
    static signing_key from_seed(secret_bytes seed, std::int64_t created);

    secret_bytes sk_;  // libsodium's 64-byte form: seed || pk
    ed25519_public_key pk_{};
    std::int64_t created_ = 0;
};

// Whether `sig` is `pk`'s Ed25519 signature of `message`.
[[nodiscard]] bool verify_signature(const ed25519_public_key& pk, std::span<const unsigned char> message,
                                    const ed25519_signature& sig) noexcept;

}  // namespace byok::crypto
