#pragma once
// The one list of errors the relay answers with, and the one mapping from an
// error to its HTTP status and JSON body. Clients get a short fixed message
// per code, never internals, never anything from the request.
//
// Body shape (what OpenAI's client libraries already parse):
//   {"error":{"message":"...","type":"relay_error","code":"<code>"}}

#include <string>
#include <string_view>

#include "crypto/grant.hpp"
#include "crypto/seal.hpp"

namespace byok::relay {

enum class error_code {
    missing_seal,
    unknown_kid,
    bad_seal,
    seal_expired,
    seal_mismatch,
    seal_replayed,
    bad_request,
    unknown_route,
    method_not_allowed,
    request_timeout,
    body_too_large,
    headers_too_large,
    rate_limited,
    upstream_unreachable,
    upstream_bad_response,
    upstream_timeout,
    overloaded,
    internal_error,
    // Scoped key grants (docs/protocol.md §13).
    missing_proof,
    bad_proof,
    proof_replayed,
    bad_grant,
    grant_expired,
    origin_mismatch,
    model_not_allowed,
    path_not_allowed,
    grant_too_long,
};

struct error_info {
    unsigned status;
    std::string_view code;
    std::string_view message;
};

[[nodiscard]] const error_info& describe(error_code e) noexcept;
[[nodiscard]] error_code from_seal_error(crypto::seal_error e) noexcept;
[[nodiscard]] error_code from_grant_error(crypto::grant_error e) noexcept;
// The JSON body for `e`.
[[nodiscard]] std::string error_body(error_code e);

}  // namespace byok::relay
