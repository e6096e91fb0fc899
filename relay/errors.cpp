#include "relay/errors.hpp"

#include <array>

namespace byok::relay {
namespace {

// Indexed by error_code; the order must follow the enum.
constexpr std::array<error_info, 27> table{{
    {401, "missing_seal", "This relay needs an 'Authorization: Sealed <kid>.<seal>' header; see GET /v1/keys."},
    {401, "unknown_kid", "The seal is for a key this relay does not hold (it may have rotated); fetch GET /v1/keys and seal again."},
    {401, "bad_seal", "The seal could not be opened or its payload is malformed."},
    {401, "seal_expired", "The seal's iat is outside the accepted window; check your clock against this response's Date header and seal again."},
    {401, "seal_mismatch", "The seal was made for a different method, path or body than this request."},
    {401, "seal_replayed", "This seal has already been used; every request needs a fresh seal."},
    {400, "bad_request", "The request is not valid HTTP/1.1 this relay accepts."},
    {404, "unknown_route", "No such route on this relay."},
    {405, "method_not_allowed", "Method not allowed on this route."},
    {408, "request_timeout", "The request did not arrive in time."},
    {413, "body_too_large", "The request body is larger than this relay accepts."},
    {431, "headers_too_large", "The request headers are larger than this relay accepts."},
    {429, "rate_limited", "Too many requests from this client; retry after the time in Retry-After."},
    {502, "upstream_unreachable", "The provider could not be reached over a verified connection."},
    {502, "upstream_bad_response", "The provider sent a response this relay could not read."},
    {504, "upstream_timeout", "The provider did not answer in time."},
    {503, "overloaded", "The relay is at capacity; retry shortly."},
    {500, "internal_error", "The relay failed to handle this request."},
    {401, "missing_proof", "A request with a grant needs a 'Byok-Proof' header signed with the grant's key."},
    {401, "bad_proof", "The Byok-Proof is malformed, not signed with the grant's key, stale, or made for a different method, path or body."},
    {401, "proof_replayed", "This proof has already been used; every request needs a fresh proof."},
    {401, "bad_grant", "The grant could not be opened (unknown or rotated key, or altered); request a new grant."},
    {401, "grant_expired", "The grant has expired; request a new grant."},
    {403, "origin_mismatch", "The grant was made for another origin."},
    {403, "model_not_allowed", "The grant does not allow this model."},
    {403, "path_not_allowed", "The grant does not allow this provider or path."},
    {400, "grant_too_long", "The requested grant lifetime is longer than this relay allows."},
}};
static_assert(table.size() == static_cast<std::size_t>(error_code::grant_too_long) + 1);

}  // namespace

const error_info& describe(error_code e) noexcept { return table[static_cast<std::size_t>(e)]; }

error_code from_seal_error(crypto::seal_error e) noexcept {
    switch (e) {
    case crypto::seal_error::missing_seal: return error_code::missing_seal;
    case crypto::seal_error::unknown_kid: return error_code::unknown_kid;
    case crypto::seal_error::bad_seal: return error_code::bad_seal;
    case crypto::seal_error::seal_expired: return error_code::seal_expired;
    case crypto::seal_error::seal_mismatch: return error_code::seal_mismatch;
    case crypto::seal_error::seal_replayed: return error_code::seal_replayed;
    case crypto::seal_error::replay_cache_full: return error_code::overloaded;
    }
    return error_code::internal_error;
}

error_code from_grant_error(crypto::grant_error e) noexcept {
    switch (e) {
    case crypto::grant_error::bad_grant: return error_code::bad_grant;
    case crypto::grant_error::grant_expired: return error_code::grant_expired;
    case crypto::grant_error::missing_proof: return error_code::missing_proof;
    case crypto::grant_error::bad_proof: return error_code::bad_proof;
    case crypto::grant_error::proof_replayed: return error_code::proof_replayed;
    case crypto::grant_error::replay_cache_full: return error_code::overloaded;
    }
    return error_code::internal_error;
}

std::string error_body(error_code e) {
    const auto& d = describe(e);
    std::string out;
    out.reserve(64 + d.message.size() + d.code.size());
    out.append(R"({"error":{"message":")").append(d.message).append(R"(","type":"relay_error","code":")")
        .append(d.code).append(R"("}})");
    return out;
}

}  // namespace byok::relay
