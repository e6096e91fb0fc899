#pragma once
// The relay's key pairs and the set of them it accepts seals to.
//
// A relay_key is what one key file holds: an X25519 key pair for libsodium's
// sealed box (protocol v1) and, in files written since HPKE was added, a
// second X25519 key pair for HPKE (RFC 9180, crypto/hpke.hpp), each with its
// own kid. Files without the HPKE half still load; they offer the sealed box
// only. A relay_key is immutable once built and move-only; its private halves
// live in secret memory. A keyring is an immutable, ordered list of keys (the
// first is the one clients should seal to); the server shares one as
// std::shared_ptr<const keyring> and swaps in a new one on reload, so any
// number of threads may read a keyring at once.
//
// Key file (JSON, mode 0600, written by `byok-relay keygen`):
//   {"v":1,"alg":"x25519-sealedbox","kid":"<kid>","pk":"<b64url>","sk":"<b64url>",
//    "hpke_kid":"<kid>","hpke_pk":"<b64url>","hpke_sk":"<b64url>",
//    "created":<unix s>,"exp":<unix s>}
// The three hpke_ fields are optional (all absent in older files; a relay
// from before HPKE ignores them and loads the file as it always did).
// So are "grant_kid" and "grant_sk": the symmetric key that seals scoped key
// grants (crypto/grant.hpp); a file without them loads, and its key makes
// no grants and opens none.

#include <array>
#include <cstdint>
#include <memory>
#include <optional>
#include <span>
#include <stdexcept>
#include <string>
#include <string_view>
#include <vector>

#include "crypto/hpke.hpp"
#include "crypto/secret.hpp"

namespace byok::crypto {

inline constexpr std::string_view sealed_box_alg = "x25519-sealedbox";
inline constexpr std::string_view hpke_alg = "hpke-x25519-sha256-aes128gcm";
// HPKE's info for a seal to the HPKE key `kid`: these bytes, then the kid.
inline constexpr std::string_view hpke_info_prefix = "byok-relay v1 ";

// Additional data of a grant token under the grant key `kid`: these bytes, then the kid.
inline constexpr std::string_view grant_ad_prefix = "byok-relay grant v1 ";

// Which algorithm a kid names.
enum class seal_alg { sealed_box, hpke };
inline constexpr std::int64_t default_key_lifetime_s = 90 * 24 * 3600;

using public_key = std::array<unsigned char, 32>;

// A key file could not be written or read; what() names the file and the
// reason, never key material.
class key_error : public std::runtime_error {
public:
    using std::runtime_error::runtime_error;
};

// kid = base64url(first 9 bytes of SHA-256(pk)): 12 URL-safe characters.
[[nodiscard]] std::string derive_kid(const public_key& pk);
// The kid of an HPKE key: the same scheme over the suite id and the key,
// base64url(first 9 bytes of SHA-256(hpke::suite_id || pk)).
[[nodiscard]] std::string derive_hpke_kid(const public_key& pk);
// The kid of a grant key (a secret): the same scheme over a fixed label and
// the key, base64url(first 9 bytes of SHA-256("byok-relay grant kid " || key)).
[[nodiscard]] std::string derive_grant_kid(std::span<const unsigned char> grant_key);

class relay_key {
public:
    // Both key pairs, fresh.
    [[nodiscard]] static relay_key generate(std::int64_t now, std::int64_t lifetime_s = default_key_lifetime_s);
    // Throws key_error if the file is missing, not a regular file, readable or
    // writable by group or others, malformed, or its pk/kid do not match sk.
    [[nodiscard]] static relay_key load_file(const std::string& path);

    // Writes a new key file with mode 0600. Refuses (key_error) to replace an
    // existing file.
    void write_new_file(const std::string& path) const;

    relay_key(relay_key&&) noexcept = default;
    relay_key& operator=(relay_key&&) noexcept = default;

    [[nodiscard]] const std::string& kid() const noexcept { return kid_; }
    [[nodiscard]] const public_key& pk() const noexcept { return pk_; }
    [[nodiscard]] std::int64_t created() const noexcept { return created_; }
    [[nodiscard]] std::int64_t exp() const noexcept { return exp_; }
    [[nodiscard]] bool expired(std::int64_t now) const noexcept { return now >= exp_; }

    // crypto_box_seal_open of `sealed` into `out` (sealed.size() - 48 bytes).
    // False if it does not open. Thread-safe.
    [[nodiscard]] bool open(std::span<const unsigned char> sealed, std::span<unsigned char> out) const noexcept;

    // The HPKE half; false for a file written before HPKE.
    [[nodiscard]] bool has_hpke() const noexcept { return hpke_.has_value(); }
    // Its kid ("" without an HPKE half) and public key (all zeros without).
    [[nodiscard]] const std::string& hpke_kid() const noexcept { return hpke_kid_; }
    [[nodiscard]] const public_key& hpke_pk() const noexcept;

    // HPKE base-mode single-shot open of `sealed` = enc || ct, with info
    // hpke_info_prefix + hpke_kid() and empty aad, into `out`
    // (sealed.size() - 48 bytes). False if it does not open or there is no
    // HPKE half. Thread-safe. Throws only std::bad_alloc.
    [[nodiscard]] bool open_hpke(std::span<const unsigned char> sealed, std::span<unsigned char> out) const;

    // The grant half (32-byte XChaCha20-Poly1305 key); false for a file
    // written before grants.
    [[nodiscard]] bool has_grant() const noexcept { return !grant_sk_.empty(); }
    [[nodiscard]] const std::string& grant_kid() const noexcept { return grant_kid_; }
    // nonce (24 bytes) || XChaCha20-Poly1305(plaintext), additional data
    // grant_ad_prefix + grant_kid(). Throws key_error without a grant half.
    [[nodiscard]] std::vector<unsigned char> seal_grant(std::span<const unsigned char> plaintext,
                                                        std::span<const unsigned char, 24> nonce) const;
    // The reverse, into `out` (sealed.size() - 40 bytes). False if it does
    // not open or there is no grant half. Thread-safe.
    [[nodiscard]] bool open_grant(std::span<const unsigned char> sealed, std::span<unsigned char> out) const noexcept;

private:
    relay_key() = default;
    static relay_key from_secret(secret_bytes sk, std::int64_t created, std::int64_t exp);
    void attach_hpke(hpke::private_key k);

    secret_bytes sk_;
    public_key pk_{};
    std::string kid_;
    std::int64_t created_ = 0;
    std::int64_t exp_ = 0;
    std::optional<hpke::private_key> hpke_;
    std::optional<hpke::schedule_context> hpke_context_;  // info = hpke_info_prefix + hpke_kid_, computed once
    std::string hpke_kid_;
    secret_bytes grant_sk_;  // empty without a grant half
    std::string grant_kid_;
};

class keyring {
public:
    // Loads each file in order (newest first). Throws key_error naming the
    // file at the first one that fails, or if two files hold the same key.
    [[nodiscard]] static std::shared_ptr<const keyring> load(const std::vector<std::string>& paths);
    [[nodiscard]] static std::shared_ptr<const keyring> from_keys(std::vector<relay_key> keys);

    // The key whose sealed-box kid is `kid`, or nullptr. Expired keys are
    // found too; the caller decides what an expired key means.
    [[nodiscard]] const relay_key* find(std::string_view kid) const noexcept;

    // The key that `kid` names with either of its two kids, and which
    // algorithm that kid is for; key is nullptr if none. Expired keys too.
    struct found {
        const relay_key* key = nullptr;
        seal_alg alg = seal_alg::sealed_box;
    };
    [[nodiscard]] found lookup(std::string_view kid) const noexcept;
    // The key whose grant kid is `kid`, or nullptr. Expired keys too.
    [[nodiscard]] const relay_key* find_grant(std::string_view kid) const noexcept;
    // The key new grants are sealed with: the first unexpired key that has a
    // grant half, or nullptr.
    [[nodiscard]] const relay_key* grant_signer(std::int64_t now) const noexcept;
    [[nodiscard]] std::span<const relay_key> keys() const noexcept { return keys_; }

    // The body of GET /v1/keys: the keys not yet expired, in order, first
    // every sealed-box entry, then every HPKE entry (a client that takes the
    // first entry without looking at "alg" keeps getting a sealed-box key).
    [[nodiscard]] std::string key_config_json(std::int64_t now) const;

private:
    explicit keyring(std::vector<relay_key> keys) : keys_(std::move(keys)) {}
    std::vector<relay_key> keys_;
};

}  // namespace byok::crypto
