#pragma once
// Protocol v1: checking a sealed request, and (for clients written in C++,
// such as the load generator and the tests) making one. docs/protocol.md is
// the specification; this is its implementation.
//
//   Authorization: Sealed <kid>.<base64url(crypto_box_seal(payload, pk[kid]))>
//   Authorization: Sealed <kid>.<base64url(enc || ct)>     (kid of an HPKE key)
//   payload = {"key":"...","iat":<unix s>,"method":"POST",
//              "path":"/openai/v1/chat/completions","body_sha256":"<b64url>",
//              "headers_sha256":"<b64url>"}   (optional in a sealed box, required in HPKE)
// The kid says which algorithm sealed the payload: a sealed-box kid
// (x25519-sealedbox) or an HPKE kid (hpke-x25519-sha256-aes128gcm: RFC 9180
// base mode, info "byok-relay v1 " + kid, aad empty). Both seal the same
// payload, checked the same way.

#include <array>
#include <cstdint>
#include <optional>
#include <span>
#include <string>
#include <string_view>
#include <variant>

#include "crypto/encoding.hpp"
#include "crypto/keyring.hpp"
#include "crypto/replay_cache.hpp"
#include "crypto/secret.hpp"

namespace byok::crypto {

enum class seal_error {
    missing_seal,   // no Authorization header, or it does not begin with exactly "Sealed "
    unknown_kid,    // kid not loaded, or its key has expired
    bad_seal,       // bad base64url, does not open, not JSON, fields missing or of the wrong type
    seal_expired,   // iat too old or too far in the future
    seal_mismatch,  // method, path or body hash differ from the request
    seal_replayed,  // this seal was already accepted inside the window
    replay_cache_full,  // cannot remember another seal right now (the relay answers 503)
};

[[nodiscard]] std::string_view to_string(seal_error e) noexcept;

// A kid's characters: base64url's alphabet.
[[nodiscard]] bool is_kid_char(char c) noexcept;
// A provider key goes into an HTTP header: visible ASCII only (0x21-0x7E),
// so a key can never smuggle a CR/LF (header injection) or a space into the
// upstream request. The same rule for a key in a seal or in a grant.
[[nodiscard]] bool valid_key_chars(std::string_view key) noexcept;

struct seal_policy {
    std::int64_t max_age_s = 60;     // iat at most this old
    std::int64_t max_future_s = 30;  // iat at most this far ahead of the relay's clock
    std::size_t max_key_bytes = 1024;
    // iat at least this (unix s). The relay sets it to the second before it
    // started: a restarted relay has forgotten the seals it accepted, so it
    // refuses every seal made earlier than that (seal_expired; the client
    // reseals). One second of grace, because a client that corrects its clock
    // from Date (whole seconds, docs/protocol.md §6.2) can land one second low.
    std::int64_t not_before = 0;
};

// What the relay received, as views into the request (not owned).
struct request_facts {
    std::string_view method;         // e.g. "POST"
    std::string_view path;           // the target as the client sent it (any public prefix included), with query
    const sha256_digest* body_sha256 = nullptr;  // SHA-256 of the exact body bytes
    std::string_view authorization;  // the Authorization header value; empty if absent
    // headers_sha256() of the request's header fields, or nullptr for a
    // caller that forwards none of them. With a digest, a seal's
    // "headers_sha256" must match it (seal_mismatch) and an HPKE seal must
    // carry one (bad_seal); without, a seal's "headers_sha256" is not checked.
    const sha256_digest* headers_sha256 = nullptr;
};

// The client header fields a seal's "headers_sha256" covers: those the relay
// forwards upstream that a client sets itself (so not user-agent or accept,
// which a browser sets). Sorted.
inline constexpr std::array<std::string_view, 7> sealed_header_names = {
    "anthropic-beta", "anthropic-version", "content-type", "idempotency-key",
    "openai-beta", "openai-organization", "openai-project"};

struct header_field {
    std::string_view name;   // any case
    std::string_view value;  // as received (without surrounding white space)
};

// SHA-256 of the canonical header list: of `fields`, those whose name
// (compared case-insensitively) is in sealed_header_names, each as
// "<name in lower case>:<value>\n", ordered by name, fields of the same name
// in the order given. No field: SHA-256 of nothing. docs/protocol.md §3.5.
[[nodiscard]] sha256_digest headers_sha256(std::span<const header_field> fields) noexcept;

// The user's provider key, opened from a seal, in secret memory. Move-only;
// wiped when destroyed. Printing it prints "<redacted>".
class opened_key {
public:
    opened_key(opened_key&&) noexcept = default;
    opened_key& operator=(opened_key&&) noexcept = default;

    [[nodiscard]] std::string_view value() const noexcept { return value_; }
    friend std::ostream& operator<<(std::ostream& os, const opened_key&);

private:
    friend class seal_checker;
    friend class opened_grant;  // a key that arrived in a grant (crypto/grant.hpp)
    opened_key(secret_bytes plaintext, std::string_view value) noexcept
        : plaintext_(std::move(plaintext)), value_(value) {}
    secret_bytes plaintext_;  // owns the bytes value_ points into
    std::string_view value_;
};

// An accepted seal's identity, for a replay store shared by several relays
// (relay/replay_store.hpp): the same id the local replay cache keeps (not
// secret: it is the start of the box's ephemeral public key, sent in clear),
// and the unix second from which the seal can no longer pass the age check.
struct accepted_seal {
    replay_cache::id id{};
    std::int64_t forget_at = 0;
};

class [[nodiscard]] check_result {
public:
    check_result(seal_error e) noexcept : v_(e) {}   // NOLINT: implicit on purpose
    check_result(opened_key k, accepted_seal a) noexcept : v_(std::move(k)), accepted_(a) {}
    [[nodiscard]] bool ok() const noexcept { return std::holds_alternative<opened_key>(v_); }
    explicit operator bool() const noexcept { return ok(); }
    [[nodiscard]] seal_error error() const noexcept { return std::get<seal_error>(v_); }
    [[nodiscard]] const opened_key& key() const& { return std::get<opened_key>(v_); }
    [[nodiscard]] opened_key take_key() && { return std::move(std::get<opened_key>(v_)); }
    // Only when ok().
    [[nodiscard]] const accepted_seal& accepted() const noexcept { return accepted_; }

private:
    std::variant<seal_error, opened_key> v_;
    accepted_seal accepted_;
};

// Checks seals and remembers the accepted ones. One per relay process;
// thread-safe (the keyring is passed per call, so a reload takes effect at once).
class seal_checker {
public:
    // A decoded box is at most this long (a payload of up to 4048 bytes: room
    // for a key of max_key_bytes and a long path); a header claiming more is
    // not a seal.
    static constexpr std::size_t max_sealed_bytes = 4096;

    seal_checker(seal_policy policy, std::size_t replay_capacity);

    // One seal-open, no heap allocation but the replay entry. `now` is unix seconds.
    [[nodiscard]] check_result check(const keyring& keys, const request_facts& req, std::int64_t now);

    // The cheap checks of check() on the Authorization header alone, for
    // before the body is read: the exact spelling "Sealed <kid>.<box>", kid
    // known and not expired, canonical base64url of a plausible length, and
    // a replay lookup. No X25519, no secret memory, records nothing.
    // nullopt: check() may still accept this header. An error: check() with
    // the same header, keyring and clock refuses it with that same error.
    [[nodiscard]] std::optional<seal_error> precheck(const keyring& keys, std::string_view authorization,
                                                     std::int64_t now) const;

    [[nodiscard]] const seal_policy& policy() const noexcept { return policy_; }
    [[nodiscard]] std::size_t replay_entries() const { return replay_.size(); }
    // The replay cache, shared with the grant checker (crypto/grant.hpp),
    // which records proofs' jti in it: one cache, one capacity, one window.
    [[nodiscard]] replay_cache& replay() const noexcept { return replay_; }

private:
    struct screened {
        const relay_key* key = nullptr;
        seal_alg alg = seal_alg::sealed_box;
        std::span<const unsigned char> sealed;  // the decoded box, in the caller's buffer
        replay_cache::id seal_id{};
    };
    // The header checks shared by check() and precheck(), so the two cannot disagree.
    [[nodiscard]] std::optional<seal_error> screen(const keyring& keys, std::string_view authorization,
                                                   std::int64_t now, std::span<unsigned char, max_sealed_bytes> buf,
                                                   screened& out) const;

    seal_policy policy_;
    mutable replay_cache replay_;  // thread-safe; contains() forgets expired entries, hence mutable
};

// ---- Client side -----------------------------------------------------------

// The payload JSON for one request, in secret memory (it holds the key).
// With headers_sha256, the payload carries that field too.
[[nodiscard]] secret_bytes make_payload(std::string_view key, std::int64_t iat, std::string_view method,
                                        std::string_view path, const sha256_digest& body_sha256,
                                        const sha256_digest* headers_sha256 = nullptr);

// "Sealed <kid>.<base64url(crypto_box_seal(payload, pk))>".
[[nodiscard]] std::string seal_header(std::string_view kid, const public_key& pk,
                                      std::span<const unsigned char> payload);

// "Sealed <kid>.<base64url(enc || ct)>": HPKE base mode to the HPKE key
// (kid, pk), info "byok-relay v1 " + kid, aad empty. nullopt if pk is a
// low-order point.
[[nodiscard]] std::optional<std::string> hpke_seal_header(std::string_view kid, const public_key& pk,
                                                          std::span<const unsigned char> payload);

}  // namespace byok::crypto
