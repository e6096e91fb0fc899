#pragma once
// HPKE (RFC 9180) in base mode, for one suite:
//   KEM  DHKEM(X25519, HKDF-SHA256)  0x0020
//   KDF  HKDF-SHA256                 0x0001
//   AEAD AES-128-GCM                 0x0001
// on libsodium (X25519: crypto_scalarmult) and OpenSSL 3.0 (HMAC-SHA-256
// for HKDF's Extract and Expand, AES-128-GCM); Debian 12's OpenSSL 3.0 has
// no OSSL_HPKE_* (they arrived in 3.2).
//
// Pure and synchronous: no I/O, no clock; randomness only in
// private_key::generate() and sender::setup(). Objects are move-only; a
// private_key and a schedule_context are immutable once built and may be
// shared between threads. A context (sender, recipient) carries a sequence
// number and is owned by one thread at a time.
//
// Secrets (a private key, the X25519 output, the KEM shared secret, the key
// schedule's secret, key, base nonce and exporter secret, plaintexts) live
// only in secret_bytes and are wiped. OpenSSL's own copies (the HMAC pads
// and the AES key schedule) live in contexts that exist for one call and
// that OpenSSL cleanses when it frees them.
//
// Failures are values: a factory returns nullopt, an open returns false.
// Which step failed is not reported; to the relay every failure is bad_seal.

#include <array>
#include <cstddef>
#include <cstdint>
#include <optional>
#include <span>
#include <string_view>
#include <vector>

#include "crypto/secret.hpp"

namespace byok::crypto::hpke {

inline constexpr std::uint16_t kem_id = 0x0020;
inline constexpr std::uint16_t kdf_id = 0x0001;
inline constexpr std::uint16_t aead_id = 0x0001;
// suite_id of RFC 9180 §5.1: "HPKE" || I2OSP(kem_id, 2) || I2OSP(kdf_id, 2) || I2OSP(aead_id, 2).
inline constexpr std::array<unsigned char, 10> suite_id = {'H', 'P', 'K', 'E', 0x00, 0x20, 0x00, 0x01, 0x00, 0x01};

inline constexpr std::size_t n_enc = 32;     // encapsulated key: the sender's ephemeral X25519 public key
inline constexpr std::size_t n_pk = 32;
inline constexpr std::size_t n_sk = 32;
inline constexpr std::size_t n_secret = 32;  // KEM shared secret
inline constexpr std::size_t n_k = 16;       // AEAD key
inline constexpr std::size_t n_n = 12;       // AEAD nonce
inline constexpr std::size_t n_h = 32;       // KDF output (exporter secret)
inline constexpr std::size_t n_t = 16;       // AEAD tag
inline constexpr std::size_t schedule_context_bytes = 1 + 2 * n_h;

using public_key = std::array<unsigned char, n_pk>;

// An X25519 private key and its public key. Thread-safe to share.
class private_key {
public:
    // A fresh random key. Throws std::runtime_error if libsodium or OpenSSL cannot start.
    [[nodiscard]] static private_key generate();
    // DeriveKeyPair(ikm) of RFC 9180 §7.1.3.
    [[nodiscard]] static private_key derive(std::span<const unsigned char> ikm);
    // From the raw 32 bytes (a key file); nullopt if `sk` is not 32 bytes.
    [[nodiscard]] static std::optional<private_key> from_bytes(secret_bytes sk);

    private_key(private_key&&) noexcept = default;
    private_key& operator=(private_key&&) noexcept = default;

    [[nodiscard]] const public_key& pk() const noexcept { return pk_; }
    // The raw secret key, to write a key file. Never log it.
    [[nodiscard]] std::span<const unsigned char> secret() const noexcept { return sk_.span(); }

private:
    private_key() = default;
    secret_bytes sk_;
    public_key pk_{};
};

// The key schedule's context for base mode and one `info`:
// mode (0x00) || psk_id_hash || info_hash (RFC 9180 §5.1). Public data; it
// depends on `info` alone, so a caller whose info is fixed (the relay: one
// per key) computes it once, and each setup then costs two HMACs less.
class schedule_context {
public:
    [[nodiscard]] static schedule_context base(std::span<const unsigned char> info);
    [[nodiscard]] static schedule_context base(std::string_view info) {
        return base(std::span(reinterpret_cast<const unsigned char*>(info.data()), info.size()));
    }
    [[nodiscard]] std::span<const unsigned char, schedule_context_bytes> bytes() const noexcept { return bytes_; }

private:
    schedule_context() = default;
    std::array<unsigned char, schedule_context_bytes> bytes_{};
};

// What the key schedule derives, in one block of secret memory.
class schedule {
public:
    schedule(schedule&&) noexcept = default;
    schedule& operator=(schedule&&) noexcept = default;
    // True once moved from (a context that was used up): the accessors below
    // must not be called then.
    [[nodiscard]] bool empty() const noexcept { return bytes_.empty(); }
    [[nodiscard]] std::span<const unsigned char> key() const noexcept { return bytes_.span().subspan(0, n_k); }
    [[nodiscard]] std::span<const unsigned char> base_nonce() const noexcept {
        return bytes_.span().subspan(n_k, n_n);
    }
    [[nodiscard]] std::span<const unsigned char> exporter_secret() const noexcept {
        return bytes_.span().subspan(n_k + n_n, n_h);
    }

private:
    friend schedule key_schedule(std::span<const unsigned char> shared_secret, const schedule_context& ctx);
    explicit schedule(secret_bytes b) noexcept : bytes_(std::move(b)) {}
    secret_bytes bytes_;
};

// The steps of a setup, exposed so that RFC 9180's test vectors can check
// each intermediate value. sender::setup and recipient::setup call them.
//
// Decap(enc, skR): the KEM shared secret; nullopt if enc is not 32 bytes or
// the X25519 output is all zeros (a low-order point).
[[nodiscard]] std::optional<secret_bytes> decap(std::span<const unsigned char> enc, const private_key& sk_r);
// Encap(pkR) with the ephemeral key given (deterministic): the shared secret;
// nullopt if the X25519 output is all zeros. enc is sk_e.pk().
[[nodiscard]] std::optional<secret_bytes> encap(const public_key& pk_r, const private_key& sk_e);
// KeySchedule in base mode: key, base_nonce, exporter_secret.
[[nodiscard]] schedule key_schedule(std::span<const unsigned char> shared_secret, const schedule_context& ctx);

// ContextR of RFC 9180 §5.2, base mode.
class recipient {
public:
    // SetupBaseR(enc, skR, info). nullopt if enc is not 32 bytes or is a
    // low-order point.
    [[nodiscard]] static std::optional<recipient> setup(std::span<const unsigned char> enc, const private_key& sk_r,
                                                        const schedule_context& ctx);

    recipient(recipient&&) noexcept = default;
    recipient& operator=(recipient&&) noexcept = default;

    // The one message of a single-shot context; consumes the context (its
    // secrets are wiped on return). `plaintext` must be ct.size() - 16 bytes.
    // False if ct does not authenticate; `plaintext` is then all zeros.
    [[nodiscard]] bool open(std::span<const unsigned char> aad, std::span<const unsigned char> ct,
                            std::span<unsigned char> plaintext) &&;
    // The next message of a multi-message context (sequence numbers 0, 1, ...),
    // with open()'s contract.
    [[nodiscard]] bool open_next(std::span<const unsigned char> aad, std::span<const unsigned char> ct,
                                 std::span<unsigned char> plaintext) &;
    // Export(exporter_context, length) of RFC 9180 §5.3; length <= 255 * 32.
    [[nodiscard]] secret_bytes export_secret(std::span<const unsigned char> exporter_context,
                                             std::size_t length) const;

private:
    explicit recipient(schedule s) noexcept : s_(std::move(s)) {}
    schedule s_;
    std::uint64_t seq_ = 0;
};

// ContextS of RFC 9180 §5.2, base mode: for clients written in C++ (the load
// generator, tests, benchmarks). Ciphertext is public, so it is returned in a
// plain vector.
class sender {
public:
    // SetupBaseS(pkR, info) with a fresh ephemeral key; nullopt if pkR is a
    // low-order point.
    [[nodiscard]] static std::optional<sender> setup(const public_key& pk_r, const schedule_context& ctx);
    // The same with the ephemeral key given: deterministic, for test vectors.
    [[nodiscard]] static std::optional<sender> setup(const public_key& pk_r, const schedule_context& ctx,
                                                     const private_key& sk_e);

    sender(sender&&) noexcept = default;
    sender& operator=(sender&&) noexcept = default;

    [[nodiscard]] const public_key& enc() const noexcept { return enc_; }
    // The one message of a single-shot context; consumes the context.
    [[nodiscard]] std::vector<unsigned char> seal(std::span<const unsigned char> aad,
                                                  std::span<const unsigned char> plaintext) &&;
    [[nodiscard]] std::vector<unsigned char> seal_next(std::span<const unsigned char> aad,
                                                       std::span<const unsigned char> plaintext) &;
    [[nodiscard]] secret_bytes export_secret(std::span<const unsigned char> exporter_context,
                                             std::size_t length) const;

private:
    sender(schedule s, const public_key& enc) noexcept : s_(std::move(s)), enc_(enc) {}
    schedule s_;
    public_key enc_{};
    std::uint64_t seq_ = 0;
};

}  // namespace byok::crypto::hpke
