#include "crypto/seal.hpp"

#include <ostream>
#include <vector>

#include <sodium.h>

#include "crypto/hpke.hpp"
#include "crypto/json_lite.hpp"

namespace byok::crypto {
namespace {

// The one spelling accepted. RFC 9110 makes auth-scheme names
// case-insensitive and allows more than one space, but several spellings of
// one seal would let a front proxy that hashes the raw header route copies of
// it to different replicas (issue 15), so the relay accepts exactly this.
constexpr std::string_view scheme_prefix = "Sealed ";

// "Sealed <kid>.<base64url(sealed)>".
std::string header_text(std::string_view kid, std::span<const unsigned char> sealed) {
    std::string out;
    out.reserve(scheme_prefix.size() + kid.size() + 1 + sealed.size() * 4 / 3 + 4);
    out.append(scheme_prefix).append(kid).append(".");
    out += base64url_encode(sealed);
    return out;
}

// libsodium 1.0.18's crypto_secretbox_open_detached (inside
// crypto_box_seal_open) decrypts the first 32 bytes of the message in a
// 64-byte stack buffer that it does not wipe: {"key":" and the first 24
// characters of the user's key stayed on the worker thread's stack until
// deeper code happened to overwrite them (tests/integration/residue.test.mjs
// found them there after refused seals). check() calls wipe_stack_below()
// right after the open, from the frame that called it (the open needs well
// under 4 KiB: BLAKE2b, X25519, XSalsa20-Poly1305).

}  // namespace

std::string_view to_string(seal_error e) noexcept {
    switch (e) {
    case seal_error::missing_seal: return "missing_seal";
    case seal_error::unknown_kid: return "unknown_kid";
    case seal_error::bad_seal: return "bad_seal";
    case seal_error::seal_expired: return "seal_expired";
    case seal_error::seal_mismatch: return "seal_mismatch";
    case seal_error::seal_replayed: return "seal_replayed";
    case seal_error::replay_cache_full: return "overloaded";
    }
    return "bad_seal";
}

bool is_kid_char(char c) noexcept {
    return (c >= 'A' && c <= 'Z') || (c >= 'a' && c <= 'z') || (c >= '0' && c <= '9') || c == '-' || c == '_';
}

bool valid_key_chars(std::string_view key) noexcept {
    for (const char c : key) {
        if (c < 0x21 || c > 0x7e) {
            return false;
        }
    }
    return true;
}

std::ostream& operator<<(std::ostream& os, const opened_key&) { return os << "<redacted>"; }

seal_checker::seal_checker(seal_policy policy, std::size_t replay_capacity)
    : policy_(policy), replay_(replay_capacity) {
    ensure_sodium();
}

std::optional<seal_error> seal_checker::screen(const keyring& keys, std::string_view auth, std::int64_t now,
                                               std::span<unsigned char, max_sealed_bytes> buf,
                                               screened& out) const {
    // 1. Exactly "Sealed <kid>.<box>".
    if (!auth.starts_with(scheme_prefix)) {
        return seal_error::missing_seal;
    }
    auth.remove_prefix(scheme_prefix.size());
    const auto dot = auth.find('.');
    if (dot == std::string_view::npos || dot == 0) {
        return seal_error::bad_seal;
    }
    const std::string_view kid = auth.substr(0, dot);
    const std::string_view box_b64 = auth.substr(dot + 1);
    for (const char c : kid) {
        if (!is_kid_char(c)) {
            return seal_error::bad_seal;
        }
    }

    // 2. The key must be loaded and current; its kid says which algorithm.
    const auto [key, alg] = keys.lookup(kid);
    if (key == nullptr || key->expired(now)) {
        return seal_error::unknown_kid;
    }

    // 3. Decode the box (ciphertext, not secret: the caller's plain buffer).
    if (box_b64.size() > (max_sealed_bytes * 4 + 2) / 3) {
        return seal_error::bad_seal;
    }
    const auto box_len = base64url_decode_public(box_b64, buf);
    if (!box_len || *box_len <= crypto_box_SEALBYTES) {
        return seal_error::bad_seal;
    }
    out.key = key;
    out.alg = alg;
    out.sealed = std::span<const unsigned char>(buf.data(), *box_len);

    // 4. A replay costs a hash lookup, not an X25519 operation. The id is
    //    the start of the sender's ephemeral public key in both algorithms
    //    (a sealed box's epk, HPKE's enc).
    out.seal_id = replay_cache::make_id(out.sealed);
    if (replay_.contains(out.seal_id, now)) {
        return seal_error::seal_replayed;
    }
    return std::nullopt;
}

std::optional<seal_error> seal_checker::precheck(const keyring& keys, std::string_view authorization,
                                                 std::int64_t now) const {
    unsigned char box[max_sealed_bytes];
    screened s;
    return screen(keys, authorization, now, box, s);
}

check_result seal_checker::check(const keyring& keys, const request_facts& req, std::int64_t now) {
    // 1-4: the header checks, as in precheck().
    unsigned char box[max_sealed_bytes];
    screened s;
    if (const auto refused = screen(keys, req.authorization, now, box, s)) {
        return *refused;
    }
    const std::span<const unsigned char> sealed = s.sealed;
    const replay_cache::id& seal_id = s.seal_id;

    // 5. Open into secret memory and parse in place. A box made for the
    //    other algorithm does not open (bad_seal).
    static_assert(crypto_box_SEALBYTES == hpke::n_enc + hpke::n_t, "both add 48 bytes to the payload");
    auto plain = secret_bytes::allocate(sealed.size() - crypto_box_SEALBYTES);
    const bool opened = s.alg == seal_alg::hpke ? s.key->open_hpke(sealed, plain.span())
                                                : s.key->open(sealed, plain.span());
    wipe_stack_below();
    if (!opened) {
        return seal_error::bad_seal;
    }
    std::string_view f_key, f_method, f_path, f_body, f_headers;
    std::int64_t f_iat = 0;
    json_lite::once_members seen;
    auto on_member = [&](std::string_view name, const json_lite::value& v) {
        auto take = [&](unsigned bit, json_lite::kind want) { return seen.take(bit, v, want); };
        using json_lite::kind;
        if (name == "key") {
            return take(1, kind::string) && (f_key = v.str, true);
        }
        if (name == "iat") {
            return take(2, kind::integer) && (f_iat = v.num, true);
        }
        if (name == "method") {
            return take(4, kind::string) && (f_method = v.str, true);
        }
        if (name == "path") {
            return take(8, kind::string) && (f_path = v.str, true);
        }
        if (name == "body_sha256") {
            return take(16, kind::string) && (f_body = v.str, true);
        }
        if (name == "headers_sha256") {
            return take(32, kind::string) && (f_headers = v.str, true);
        }
        return true;  // unknown fields are ignored
    };
    if (!json_lite::parse_object(plain.chars(), on_member) || (seen.seen() & 31) != 31) {
        return seal_error::bad_seal;
    }
    sha256_digest sealed_digest{};
    const auto digest_len = base64url_decode_public(f_body, sealed_digest);
    if (!digest_len || *digest_len != sealed_digest.size() || f_key.empty() ||
        f_key.size() > policy_.max_key_bytes || !valid_key_chars(f_key)) {
        return seal_error::bad_seal;
    }
    // headers_sha256: optional in a sealed box, required in an HPKE seal by
    // a caller that forwards headers; 32 bytes whenever present.
    const bool has_headers = (seen.seen() & 32) != 0;
    sha256_digest sealed_headers{};
    if (has_headers) {
        const auto n = base64url_decode_public(f_headers, sealed_headers);
        if (!n || *n != sealed_headers.size()) {
            return seal_error::bad_seal;
        }
    } else if (s.alg == seal_alg::hpke && req.headers_sha256 != nullptr) {
        return seal_error::bad_seal;
    }

    // 6. Fresh enough, and for exactly this request.
    if (f_iat < now - policy_.max_age_s || f_iat > now + policy_.max_future_s || f_iat < policy_.not_before) {
        return seal_error::seal_expired;
    }
    if (f_method != req.method || f_path != req.path || req.body_sha256 == nullptr ||
        sodium_memcmp(sealed_digest.data(), req.body_sha256->data(), sealed_digest.size()) != 0) {
        return seal_error::seal_mismatch;
    }
    if (has_headers && req.headers_sha256 != nullptr &&
        sodium_memcmp(sealed_headers.data(), req.headers_sha256->data(), sealed_headers.size()) != 0) {
        return seal_error::seal_mismatch;
    }

    // 7. Only a fully accepted seal is remembered; it can pass the iat check
    //    until iat + max_age, so it is remembered until then.
    const std::int64_t forget_at = f_iat + policy_.max_age_s + 1;
    switch (replay_.insert(seal_id, forget_at, now)) {
    case replay_cache::insert_result::inserted: break;
    case replay_cache::insert_result::replayed: return seal_error::seal_replayed;
    case replay_cache::insert_result::full: return seal_error::replay_cache_full;
    }
    return {opened_key(std::move(plain), f_key), accepted_seal{seal_id, forget_at}};
}

sha256_digest headers_sha256(std::span<const header_field> fields) noexcept {
    auto iequals = [](std::string_view a, std::string_view b) {
        if (a.size() != b.size()) {
            return false;
        }
        for (std::size_t i = 0; i < a.size(); ++i) {
            const char c = a[i] >= 'A' && a[i] <= 'Z' ? static_cast<char>(a[i] - 'A' + 'a') : a[i];
            if (c != b[i]) {
                return false;
            }
        }
        return true;
    };
    // Name by name in sorted order, fields in the order given: stable, and
    // no allocation (7 passes over a handful of fields).
    sha256_stream h;
    for (const std::string_view name : sealed_header_names) {
        for (const auto& f : fields) {
            if (iequals(f.name, name)) {
                h.update(name);
                h.update(":");
                h.update(f.value);
                h.update("\n");
            }
        }
    }
    return h.finish();
}

secret_bytes make_payload(std::string_view key, std::int64_t iat, std::string_view method, std::string_view path,
                          const sha256_digest& body_sha256, const sha256_digest* headers_sha256) {
    // JSON-escape what needs it; keys, methods and paths are ASCII in practice.
    auto escaped_len = [](std::string_view s) {
        std::size_t n = 0;
        for (const char c : s) {
            n += (c == '"' || c == '\\') ? 2 : (static_cast<unsigned char>(c) < 0x20 ? 6 : 1);
        }
        return n;
    };
    const std::string digest = base64url_encode(body_sha256);
    const std::string headers_digest =
        headers_sha256 != nullptr ? "\",\"headers_sha256\":\"" + base64url_encode(*headers_sha256) : std::string();
    const std::string iat_text = std::to_string(iat);
    const std::size_t total = 8 + escaped_len(key) + 8 + iat_text.size() + 11 + escaped_len(method) + 10 +
                              escaped_len(path) + 17 + digest.size() + headers_digest.size() + 2;
    auto out = secret_bytes::allocate(total);
    char* w = reinterpret_cast<char*>(out.data());
    auto raw = [&](std::string_view s) {
        for (const char c : s) {
            *w++ = c;
        }
    };
    auto str = [&](std::string_view s) {
        static constexpr char hex[] = "0123456789abcdef";
        for (const char c : s) {
            const auto u = static_cast<unsigned char>(c);
            if (c == '"' || c == '\\') {
                *w++ = '\\';
                *w++ = c;
            } else if (u < 0x20) {
                raw("\\u00");
                *w++ = hex[u >> 4];
                *w++ = hex[u & 15];
            } else {
                *w++ = c;
            }
        }
    };
    raw("{\"key\":\"");
    str(key);
    raw("\",\"iat\":");
    raw(iat_text);
    raw(",\"method\":\"");
    str(method);
    raw("\",\"path\":\"");
    str(path);
    raw("\",\"body_sha256\":\"");
    raw(digest);
    raw(headers_digest);
    raw("\"}");
    out.shrink(static_cast<std::size_t>(w - reinterpret_cast<char*>(out.data())));
    return out;
}

std::string seal_header(std::string_view kid, const public_key& pk, std::span<const unsigned char> payload) {
    ensure_sodium();
    std::vector<unsigned char> box(payload.size() + crypto_box_SEALBYTES);
    crypto_box_seal(box.data(), payload.data(), payload.size(), pk.data());
    return header_text(kid, box);
}

std::optional<std::string> hpke_seal_header(std::string_view kid, const public_key& pk,
                                            std::span<const unsigned char> payload) {
    auto ctx = hpke::sender::setup(pk, hpke::schedule_context::base(std::string(hpke_info_prefix) + std::string(kid)));
    if (!ctx) {
        return std::nullopt;
    }
    std::vector<unsigned char> sealed(ctx->enc().begin(), ctx->enc().end());
    const auto ct = std::move(*ctx).seal({}, payload);
    sealed.insert(sealed.end(), ct.begin(), ct.end());
    return header_text(kid, sealed);
}

}  // namespace byok::crypto
