#pragma once
// The signed key list: what GET /v1/keys serves when the operator signed the
// relay's keys offline with a signing key (crypto/signing_key.hpp) the app
// pins, so that a party on the path that can answer /v1/keys itself (a
// TLS-terminating proxy or CDN) cannot hand the browser its own key.
//
// The list file (docs/protocol.md §2.1) is made offline by
// `byok-relay sign-keys`, named by the config's `key_list_file`, checked
// against the loaded keys at start and on SIGHUP, and served verbatim:
//   {"keys":[...the entries of §2...],
//    "signed":{"alg":"ed25519","signer":"<b64url pk>","list":"<b64url(L)>","sig":"<b64url>"}}
// where L is the signed list itself,
//   {"typ":"byok-relay key list","v":1,"iat":<s>,"exp":<s>,"keys":[...the same entries...]}
// and sig is the Ed25519 signature of exactly the bytes of L.
//
// A signed_key_list is immutable; the server shares one as
// std::shared_ptr<const signed_key_list> and swaps it on reload.

#include <cstdint>
#include <memory>
#include <string>
#include <vector>

#include "crypto/keyring.hpp"
#include "crypto/signing_key.hpp"

namespace byok::relay {

inline constexpr std::string_view key_list_typ = "byok-relay key list";
// Warn at start and on reload when the list expires sooner than this.
inline constexpr std::int64_t key_list_warn_s = 7 * 24 * 3600;

// The file text for `keys` (those not expired at `now`, in the order of
// GET /v1/keys), signed by `signer`, valid until `exp`.
[[nodiscard]] std::string make_signed_key_list(const crypto::keyring& keys, const crypto::signing_key& signer,
                                               std::int64_t now, std::int64_t exp);

class signed_key_list;

// What the relay logs about a running list's expiry (checked hourly): a
// warning within key_list_warn_s of it, an error line once past it; "" else.
[[nodiscard]] std::string key_list_expiry_note(const signed_key_list& list, std::int64_t now);

class signed_key_list {
public:
    // Reads and checks the list file against the loaded `keys` at `now`.
    // Throws config_error naming key_list_file and the problem when the file
    // is malformed, its signature does not verify, it names a key the relay
    // does not hold (or holds with another pk, alg or exp), or it has
    // expired. Appends to `warnings` what does not stop the relay: a loaded
    // key the list does not name, an expiry within key_list_warn_s.
    [[nodiscard]] static std::shared_ptr<const signed_key_list> load(const std::string& path,
                                                                     const crypto::keyring& keys, std::int64_t now,
                                                                     std::vector<std::string>& warnings);
    // The same checks on the file's text.
    [[nodiscard]] static std::shared_ptr<const signed_key_list> check(std::string text, const crypto::keyring& keys,
                                                                      std::int64_t now,
                                                                      std::vector<std::string>& warnings);

    [[nodiscard]] const std::string& text() const noexcept { return text_; }
    [[nodiscard]] std::int64_t exp() const noexcept { return exp_; }
    [[nodiscard]] const std::string& signer() const noexcept { return signer_; }  // base64url public key

private:
    signed_key_list() = default;
    std::string text_;
    std::string signer_;
    std::int64_t exp_ = 0;
};

}  // namespace byok::relay
