#pragma once
// The user's key, from seal to wire, in one place (relay/key_path.cpp):
// open and check the seal (or the grant and its proof), take an in-flight slot, get a verified upstream
// connection, build the request head in locked secret memory sized once,
// write it, wipe it, and wipe the stack the writing used. Nothing else in
// the relay ever sees the key. docs/security.md walks through this file.
//
// Called on the client connection's worker thread; the pool belongs to that
// thread.
//
// The other way a key passes through the relay, minting a grant
// (POST /v1/grants), is here too: the key arrives in a seal and leaves in a
// grant token, never anywhere else.

#include <atomic>
#include <cstdint>
#include <memory>
#include <optional>
#include <span>
#include <string>
#include <string_view>
#include <vector>

#include <boost/asio/awaitable.hpp>
#include <boost/beast/http/fields.hpp>

#include "crypto/grant.hpp"
#include "crypto/keyring.hpp"
#include "crypto/seal.hpp"
#include "relay/admission.hpp"
#include "relay/config.hpp"
#include "relay/errors.hpp"
#include "relay/metrics.hpp"
#include "relay/replay_store.hpp"
#include "relay/upstream.hpp"

namespace byok::relay {

// The request as the client sent it (views; the caller keeps them alive).
struct sealed_request {
    std::string_view method;
    std::string_view sealed_path;   // public prefix + target: what the seal names
    std::string_view upstream_target;
    std::string_view provider_path;  // the target after the provider prefix, without the query (grant scope)
    const boost::beast::http::fields* headers = nullptr;  // forwarded by the allowlist
    std::string_view body;
    const crypto::sha256_digest* body_sha256 = nullptr;
};

struct key_path_env {
    crypto::seal_checker& checker;
    crypto::grant_checker& grants;
    const crypto::keyring& keys;
    std::atomic<std::int64_t>& in_flight;
    std::size_t max_in_flight;
    upstream_pool& pool;
    const provider& prov;
    const config& cfg;
    replay_store* store = nullptr;  // this worker's shared replay store; null without one
    metrics* stats = nullptr;       // for the store's fallbacks and refusals
    // prov.moderation's `via` when it is another provider (with an operator key), and its pool.
    const provider* moderation_prov = nullptr;
    upstream_pool* moderation_pool = nullptr;
};

// What is left once the key is gone: on success a connection on which the
// request was written, and the in-flight slot the exchange holds.
struct sent_request {
    bool ok = false;
    error_code error = error_code::internal_error;  // when !ok
    bool seal_refused = false;                       // the error came from the seal (or grant) check
    bool grant = false;                              // the key was to come from a grant
    bool key_opened = false;                         // every check passed (a later error is upstream's or load)
    std::unique_ptr<upstream_conn> conn;
    in_flight_slot slot = in_flight_slot::none();
    std::vector<std::string> flagged_categories;  // error content_flagged: what the moderation check flagged
    double moderation_s = -1;                     // the moderation check's time, when one was made
};

// The one claim point (issue 15): whatever authorizes a request once (a
// seal's replay id; a grant proof's jti; the seal of a grant's mint) goes
// through here after the local checks accepted it and before the key is
// written anywhere. Without a shared store it is a no-op. With one, the id is
// used only if the store says this relay claimed it first (`SET NX`);
// `seal_replayed` if another relay did; if the store cannot confirm,
// `overloaded` (503 with Retry-After) under on_error "refuse", and go ahead
// on the local cache alone, counted, under "local". nullopt: go ahead.
// `forget_at`: unix second from which the id can no longer be accepted
// anyway (the store forgets it then).
[[nodiscard]] boost::asio::awaitable<std::optional<error_code>> claim_once(replay_store* store, metrics* stats,
                                                                           std::span<const unsigned char> id,
                                                                           std::int64_t forget_at,
                                                                           std::int64_t now_unix);

// Opens the seal (or, for "Authorization: Grant", the grant and its
// proof) for `rq` and, if it checks, sends the one request it allows (after
// the provider's moderation pre-check, when it has one: that check goes
// first, with the same key, on the same provider).
[[nodiscard]] boost::asio::awaitable<sent_request> open_and_send(const key_path_env& env, const sealed_request& rq,
                                                                 std::int64_t now_unix);

// POST /v1/grants: the scope in the body is checked against the config
// first (nothing is opened for a request the relay would refuse anyway),
// then the seal, and the key goes straight into a grant token.
struct minted_grant {
    bool ok = false;
    error_code error = error_code::internal_error;  // when !ok
    bool seal_refused = false;                       // the error came from the seal check
    std::string body;                                // the 201 answer's JSON
    crypto::accepted_seal accepted;                  // for claim_once, before the answer goes out
};
[[nodiscard]] minted_grant mint_grant(crypto::seal_checker& checker, const crypto::keyring& keys, const config& cfg,
                                      const sealed_request& rq, std::int64_t now_unix);

}  // namespace byok::relay
