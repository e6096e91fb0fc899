#pragma once
// Scoped key grants on the relay's side (docs/protocol.md §13), as pure
// functions of the request and the config: what a mint request
// (POST /v1/grants) asks for and whether the config allows it, the 201
// answer, and the scope checks of a request that carries a grant (Origin,
// provider and path, model). The key itself never passes through here:
// relay/key_path.cpp opens the seal or the grant and calls these.
// Thread-safe (no state).

#include <cstdint>
#include <optional>
#include <span>
#include <string>
#include <string_view>
#include <utility>
#include <variant>

#include <boost/beast/http/fields.hpp>

#include "crypto/grant.hpp"
#include "relay/config.hpp"
#include "relay/errors.hpp"

namespace byok::relay {

inline constexpr std::string_view proof_header_name = "Byok-Proof";

// The Byok-Proof header's value (the first one) and how many came.
[[nodiscard]] std::pair<std::string_view, std::size_t> proof_header(const boost::beast::http::fields& h);

// The mint request's JSON body, checked against the config:
//   {"provider":"openai","paths":["/v1/chat/completions"],"models":["gpt-4o-mini"],
//    "ttl_s":1800,"origin":"https://app.example","cnf":{"jwk":{"kty":"EC","crv":"P-256","x":"..","y":".."}}}
// Errors: bad_request (not this shape, a member twice, a value outside the
// limits of crypto/grant.hpp, an unknown provider, a JWK that is not a P-256
// point), path_not_allowed (a path outside the provider's allowlist),
// origin_mismatch (an origin not in allow_origins), grant_too_long (ttl_s
// over grant_max_ttl_s). The scope's iat is `now`, its exp now + ttl_s.
[[nodiscard]] std::variant<error_code, crypto::grant_scope> parse_grant_request(const config& cfg,
                                                                               std::string_view body,
                                                                               std::int64_t now);

// The 201 body: {"grant":"<token>","exp":<unix s>,"scope":{"provider":..,
// "paths":[..],"models":[..] (only when limited),"origin":..,"iat":..,"cnf":{"jkt":"<thumbprint>"}}}
[[nodiscard]] std::string grant_response_body(std::string_view token, const crypto::grant_scope& scope);

// What a request that carries a grant asks for.
struct grant_use {
    const boost::beast::http::fields* headers = nullptr;  // for Origin
    std::string_view provider;   // the routed provider's name
    std::string_view rest_path;  // its path, without the provider prefix and the query
    std::string_view body;
};

// The scope checks, in order: the Origin header, when present, is the
// grant's origin (origin_mismatch); the provider is the grant's and the path
// lies under one of its paths (path_not_allowed); when the grant names
// models, the body is a JSON object whose top-level "model" is one of them
// (model_not_allowed).
[[nodiscard]] std::optional<error_code> check_grant_scope(const crypto::opened_grant& g, const grant_use& u);

// The model check of check_grant_scope: `body` is one JSON object (RFC 8259,
// strict: valid UTF-8, no lone surrogate, nesting at most 32 deep, integers
// within int64) with exactly one top-level member named "model" (after
// unescaping; members of nested objects do not count), a string equal to
// one of `models` (after unescaping).
[[nodiscard]] bool body_model_allowed(std::span<const std::string_view> models, std::string_view body);

}  // namespace byok::relay
