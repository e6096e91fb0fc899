#pragma once
// Scoped key grants (docs/protocol.md §13): a token only the relay can open,
// holding the user's provider key and the scope it may be used for, and the
// proof of possession that must come with every use.
//
//   Authorization: Grant <kid>.<base64url(nonce || XChaCha20-Poly1305(plaintext))>
//   Byok-Proof:    <compact JWS, ES256, typ byok-proof+jwt>
//
// The token is sealed with the grant key of a relay key file
// (crypto/keyring.hpp), additional data grant_ad_prefix + kid; its plaintext
// (binary, padded to a fixed bucket so its length does not tell the key's)
// holds the key, provider, paths, models, origin, iat, exp and the app's
// P-256 public key (whose RFC 7638 thumbprint is the grant's "cnf"). The
// relay keeps no table of grants: rotating the grant key out revokes every
// grant it sealed.
//
// The proof is a JWS signed by the app's non-extractable key over the
// request (htm, htu, iat, jti, body_sha256). Its jti is remembered in the
// seal checker's replay cache, so a captured request cannot be sent twice.
//
// This file has no network code. grant_checker is thread-safe; an
// opened_grant is owned by one thread like any value.

#include <array>
#include <cstdint>
#include <memory>
#include <optional>
#include <span>
#include <string>
#include <string_view>
#include <variant>
#include <vector>

#include "crypto/encoding.hpp"
#include "crypto/keyring.hpp"
#include "crypto/replay_cache.hpp"
#include "crypto/seal.hpp"
#include "crypto/secret.hpp"

namespace byok::crypto {

inline constexpr std::string_view grant_scheme = "Grant ";
inline constexpr std::string_view proof_typ = "byok-proof+jwt";

// Limits of a grant's scope (docs/protocol.md §13.2).
inline constexpr std::size_t max_grant_paths = 8;
inline constexpr std::size_t max_grant_path_bytes = 128;
inline constexpr std::size_t max_grant_models = 16;
inline constexpr std::size_t max_grant_model_bytes = 64;
inline constexpr std::size_t max_grant_provider_bytes = 64;
inline constexpr std::size_t max_grant_origin_bytes = 256;
// The plaintext is padded to the first of these that holds it.
inline constexpr std::array<std::size_t, 3> grant_buckets{1024, 2048, 4096};
// A Byok-Proof header longer than this is not a proof.
inline constexpr std::size_t max_proof_chars = 8192;

enum class grant_error {
    bad_grant,       // not "Grant <kid>.<token>", unknown or expired kid, does not open, malformed inside
    grant_expired,   // its exp has passed
    missing_proof,   // no Byok-Proof header
    bad_proof,       // malformed, wrong typ/alg, bad signature, iat outside the window, other method/path/body
    proof_replayed,  // this proof's jti was already accepted inside the window
    replay_cache_full,  // cannot remember another jti right now (the relay answers 503)
};

[[nodiscard]] std::string_view to_string(grant_error e) noexcept;

// An uncompressed P-256 public key without its 0x04 prefix: x || y.
using p256_point = std::array<unsigned char, 64>;

// The point of a JWK {"kty":"EC","crv":"P-256","x":..,"y":..} from its x and
// y (canonical base64url, 32 bytes each), if it is on the curve.
[[nodiscard]] std::optional<p256_point> p256_from_jwk(std::string_view x_b64, std::string_view y_b64);

// RFC 7638 thumbprint of the P-256 JWK of `pt`: base64url(SHA-256(
// {"crv":"P-256","kty":"EC","x":"<x>","y":"<y>"})).
[[nodiscard]] std::string jwk_thumbprint(const p256_point& pt);

// True if `sig` (r || s, 32 bytes each, as JWS ES256 has it) is a valid
// ECDSA P-256 SHA-256 signature of `message` by `pt`.
[[nodiscard]] bool es256_verify(const p256_point& pt, std::string_view message,
                                std::span<const unsigned char, 64> sig);

// What a grant allows, as minted (owned; not secret).
struct grant_scope {
    std::string provider;
    std::vector<std::string> paths;   // provider paths, e.g. "/v1/chat/completions"
    std::vector<std::string> models;  // empty: any model
    std::string origin;
    std::int64_t iat = 0;
    std::int64_t exp = 0;
    p256_point cnf{};
};

// The token (without "Grant ") for `key` with `scope`, sealed with the grant
// half of `relay` under a fresh random nonce. Throws key_error if `relay`
// has no grant half, std::invalid_argument if the scope or key exceed the
// limits above.
[[nodiscard]] std::string make_grant_token(const relay_key& relay, const grant_scope& scope, std::string_view key);
// The same with a given nonce: only for known-answer tests and the worked
// example of docs/protocol.md. A nonce must never be used twice.
[[nodiscard]] std::string make_grant_token(const relay_key& relay, const grant_scope& scope, std::string_view key,
                                           std::span<const unsigned char, 24> nonce);

// A grant opened and checked against its proof, in secret memory; views
// into it live as long as it. Move-only; wiped when destroyed.
class opened_grant {
public:
    opened_grant(opened_grant&&) noexcept = default;
    opened_grant& operator=(opened_grant&&) noexcept = default;

    [[nodiscard]] std::string_view provider() const noexcept { return provider_; }
    [[nodiscard]] std::string_view origin() const noexcept { return origin_; }
    [[nodiscard]] std::span<const std::string_view> paths() const noexcept { return {paths_.data(), n_paths_}; }
    [[nodiscard]] std::span<const std::string_view> models() const noexcept { return {models_.data(), n_models_}; }
    [[nodiscard]] std::int64_t iat() const noexcept { return iat_; }
    [[nodiscard]] std::int64_t exp() const noexcept { return exp_; }
    [[nodiscard]] const p256_point& cnf() const noexcept { return cnf_; }
    // The proof's replay identifier, and when it may be forgotten: what
    // grant_checker::claim_proof records (and a shared replay store may claim too).
    [[nodiscard]] const replay_cache::id& proof_id() const noexcept { return proof_id_; }
    [[nodiscard]] std::int64_t proof_forget_at() const noexcept { return proof_forget_at_; }

    // Hands the provider key over; the grant is empty afterwards.
    [[nodiscard]] opened_key take_key() &&;

    friend std::ostream& operator<<(std::ostream& os, const opened_grant&);

private:
    friend class grant_checker;
    opened_grant() = default;

    secret_bytes plain_;
    std::string_view key_;
    std::string_view provider_;
    std::string_view origin_;
    std::array<std::string_view, max_grant_paths> paths_{};
    std::size_t n_paths_ = 0;
    std::array<std::string_view, max_grant_models> models_{};
    std::size_t n_models_ = 0;
    std::int64_t iat_ = 0;
    std::int64_t exp_ = 0;
    p256_point cnf_{};
    replay_cache::id proof_id_{};
    std::int64_t proof_forget_at_ = 0;
};

class [[nodiscard]] grant_result {
public:
    grant_result(grant_error e) noexcept : v_(e) {}        // NOLINT: implicit on purpose
    grant_result(opened_grant g) noexcept : v_(std::move(g)) {}  // NOLINT
    [[nodiscard]] bool ok() const noexcept { return std::holds_alternative<opened_grant>(v_); }
    explicit operator bool() const noexcept { return ok(); }
    [[nodiscard]] grant_error error() const noexcept { return std::get<grant_error>(v_); }
    [[nodiscard]] const opened_grant& grant() const& { return std::get<opened_grant>(v_); }
    [[nodiscard]] opened_grant take() && { return std::move(std::get<opened_grant>(v_)); }

private:
    std::variant<grant_error, opened_grant> v_;
};

// What the relay received, as views into the request (not owned).
struct grant_request_facts {
    std::string_view authorization;  // "Grant <kid>.<token>"
    std::string_view proof;          // the Byok-Proof header value
    std::size_t proof_count = 0;     // how many Byok-Proof headers came (exactly one is accepted)
    std::string_view method;
    std::string_view path;           // the target as sent, public prefix and query included
    const sha256_digest* body_sha256 = nullptr;
};

// True if `authorization` asks for a grant ("Grant " ...), not a seal.
[[nodiscard]] inline bool is_grant_authorization(std::string_view authorization) noexcept {
    return authorization.starts_with(grant_scheme);
}

// Checks grants and their proofs. One per relay process, beside the seal
// checker, whose replay cache it shares (a seal's id and a proof's id cannot
// collide: the proof's is a hash with its own label). Thread-safe.
class grant_checker {
public:
    // `policy` is the seal window: a proof's iat must pass it too.
    grant_checker(seal_policy policy, replay_cache& replay) noexcept : policy_(policy), replay_(replay) {}

    // The checks that need no body and no AEAD: token syntax and kid, the
    // proof's presence, syntax, typ/alg, claims, iat window, and a replay
    // lookup of its jti. nullopt: open() may still accept. An error: open()
    // with the same headers, keyring and clock refuses with that error.
    [[nodiscard]] std::optional<grant_error> precheck(const keyring& keys, const grant_request_facts& req,
                                                      std::int64_t now) const;

    // All of precheck(), then: the token opens and is well formed, it has not
    // expired, the proof's signature verifies with the grant's key, and its
    // htm, htu and body_sha256 are this request's. Records nothing: the
    // caller checks the scope (origin, path, model) and then claim_proof().
    [[nodiscard]] grant_result open(const keyring& keys, const grant_request_facts& req, std::int64_t now) const;

    // The one point where a proof's jti is recorded as used. nullopt: it was
    // not used before and now is. Only for a grant open() accepted.
    [[nodiscard]] std::optional<grant_error> claim_proof(const opened_grant& g, std::int64_t now);

private:
    struct screened;
    [[nodiscard]] static std::unique_ptr<screened> new_screened();
    [[nodiscard]] std::optional<grant_error> screen(const keyring& keys, const grant_request_facts& req,
                                                    std::int64_t now, screened& out) const;

    seal_policy policy_;
    replay_cache& replay_;
};

// ---- Client side (tests, the load generator, the benchmark) --------------

// An ES256 key pair in OpenSSL. Move-only.
class es256_key {
public:
    [[nodiscard]] static es256_key generate();
    es256_key(es256_key&&) noexcept;
    es256_key& operator=(es256_key&&) noexcept;
    ~es256_key();

    [[nodiscard]] const p256_point& point() const noexcept { return point_; }
    // {"kty":"EC","crv":"P-256","x":"..","y":".."}
    [[nodiscard]] std::string public_jwk() const;
    // r || s over SHA-256(message).
    [[nodiscard]] std::array<unsigned char, 64> sign(std::string_view message) const;

private:
    es256_key() = default;
    void* pkey_ = nullptr;  // EVP_PKEY*
    p256_point point_{};
};

// A compact JWS Byok-Proof for one request.
[[nodiscard]] std::string make_proof(const es256_key& key, std::string_view htm, std::string_view htu,
                                     std::int64_t iat, std::string_view jti, const sha256_digest& body_sha256);

}  // namespace byok::crypto
