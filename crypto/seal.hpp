#pragma once
// Protocol v1: checking a sealed request, and (for clients written in C++,
// such as the load generator and the tests) making one. docs/protocol.md is
// the specification; this is its implementation.
//
//   Authorization: Sealed <kid>.<base64url(crypto_box_seal(payload, pk[kid]))>
//   payload = {"key":"...","iat":<unix s>,"method":"POST",
//              "path":"/openai/v1/chat/completions","body_sha256":"<b64url>"}

#include <cstdint>
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
    missing_seal,   // no Authorization header, or not the Sealed scheme
    unknown_kid,    // kid not loaded, or its key has expired
    bad_seal,       // bad base64url, does not open, not JSON, fields missing or of the wrong type
    seal_expired,   // iat too old or too far in the future
    seal_mismatch,  // method, path or body hash differ from the request
    seal_replayed,  // this seal was already accepted inside the window
    replay_cache_full,  // cannot remember another seal right now (the relay answers 503)
};

[[nodiscard]] std::string_view to_string(seal_error e) noexcept;

struct seal_policy {
    std::int64_t max_age_s = 60;     // iat at most this old
    std::int64_t max_future_s = 30;  // iat at most this far ahead of the relay's clock
    std::size_t max_key_bytes = 1024;
};

// What the relay received, as views into the request (not owned).
struct request_facts {
    std::string_view method;         // e.g. "POST"
    std::string_view path;           // the target as the client sent it (any public prefix included), with query
    const sha256_digest* body_sha256 = nullptr;  // SHA-256 of the exact body bytes
    std::string_view authorization;  // the Authorization header value; empty if absent
};

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
    opened_key(secret_bytes plaintext, std::string_view value) noexcept
        : plaintext_(std::move(plaintext)), value_(value) {}
    secret_bytes plaintext_;  // owns the bytes value_ points into
    std::string_view value_;
};

class [[nodiscard]] check_result {
public:
    check_result(seal_error e) noexcept : v_(e) {}   // NOLINT: implicit on purpose
    check_result(opened_key k) noexcept : v_(std::move(k)) {}  // NOLINT
    [[nodiscard]] bool ok() const noexcept { return std::holds_alternative<opened_key>(v_); }
    explicit operator bool() const noexcept { return ok(); }
    [[nodiscard]] seal_error error() const noexcept { return std::get<seal_error>(v_); }
    [[nodiscard]] const opened_key& key() const& { return std::get<opened_key>(v_); }
    [[nodiscard]] opened_key take_key() && { return std::move(std::get<opened_key>(v_)); }

private:
    std::variant<seal_error, opened_key> v_;
};

// Checks seals and remembers the accepted ones. One per relay process;
// thread-safe (the keyring is passed per call, so a reload takes effect at once).
class seal_checker {
public:
    seal_checker(seal_policy policy, std::size_t replay_capacity);

    // One seal-open, no heap allocation but the replay entry. `now` is unix seconds.
    [[nodiscard]] check_result check(const keyring& keys, const request_facts& req, std::int64_t now);

    [[nodiscard]] const seal_policy& policy() const noexcept { return policy_; }
    [[nodiscard]] std::size_t replay_entries() const { return replay_.size(); }

private:
    seal_policy policy_;
    replay_cache replay_;
};

// ---- Client side -----------------------------------------------------------

// The payload JSON for one request, in secret memory (it holds the key).
[[nodiscard]] secret_bytes make_payload(std::string_view key, std::int64_t iat, std::string_view method,
                                        std::string_view path, const sha256_digest& body_sha256);

// "Sealed <kid>.<base64url(crypto_box_seal(payload, pk))>".
[[nodiscard]] std::string seal_header(std::string_view kid, const public_key& pk,
                                      std::span<const unsigned char> payload);

}  // namespace byok::crypto
