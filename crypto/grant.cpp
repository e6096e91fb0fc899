#include "crypto/grant.hpp"

#include <algorithm>
#include <cstring>
#include <memory>
#include <ostream>
#include <stdexcept>

#include <openssl/bn.h>
#include <openssl/core_names.h>
#include <openssl/ec.h>
#include <openssl/evp.h>
#include <sodium.h>

#include "crypto/json_lite.hpp"

namespace byok::crypto {
namespace {

// ---- OpenSSL ---------------------------------------------------------------

struct pkey_free {
    void operator()(EVP_PKEY* p) const noexcept { EVP_PKEY_free(p); }
};
struct pkey_ctx_free {
    void operator()(EVP_PKEY_CTX* p) const noexcept { EVP_PKEY_CTX_free(p); }
};
struct md_ctx_free {
    void operator()(EVP_MD_CTX* p) const noexcept { EVP_MD_CTX_free(p); }
};
struct sig_free {
    void operator()(ECDSA_SIG* p) const noexcept { ECDSA_SIG_free(p); }
};
using pkey_ptr = std::unique_ptr<EVP_PKEY, pkey_free>;
using pkey_ctx_ptr = std::unique_ptr<EVP_PKEY_CTX, pkey_ctx_free>;
using md_ctx_ptr = std::unique_ptr<EVP_MD_CTX, md_ctx_free>;
using sig_ptr = std::unique_ptr<ECDSA_SIG, sig_free>;

// One import context per thread: fetching the EC implementation by name on
// every request would cost more than the import.
EVP_PKEY_CTX* import_ctx() {
    thread_local pkey_ctx_ptr ctx(EVP_PKEY_CTX_new_from_name(nullptr, "EC", nullptr));
    return ctx.get();
}

// The public key `pt` as an OpenSSL key; null if it is not on P-256
// (OpenSSL checks the point when it decodes it).
pkey_ptr pkey_from_point(const p256_point& pt) {
    EVP_PKEY_CTX* ctx = import_ctx();
    if (ctx == nullptr || EVP_PKEY_fromdata_init(ctx) != 1) {
        return nullptr;
    }
    std::array<unsigned char, 65> oct{};
    oct[0] = 0x04;
    std::copy(pt.begin(), pt.end(), oct.begin() + 1);
    char group[] = "prime256v1";
    OSSL_PARAM params[] = {
        OSSL_PARAM_construct_utf8_string(OSSL_PKEY_PARAM_GROUP_NAME, group, 0),
        OSSL_PARAM_construct_octet_string(OSSL_PKEY_PARAM_PUB_KEY, oct.data(), oct.size()),
        OSSL_PARAM_construct_end(),
    };
    EVP_PKEY* raw = nullptr;
    if (EVP_PKEY_fromdata(ctx, &raw, EVP_PKEY_PUBLIC_KEY, params) != 1) {
        return nullptr;
    }
    return pkey_ptr(raw);
}

// The verifying contexts of the last few app keys this thread checked a
// proof with. Importing a point (EVP_PKEY_fromdata builds a new EC group
// each time) and setting up a verification cost about two thirds of the
// verification itself; an app sends many requests under one grant. The key
// is found by the whole point, x || y, as the grant's authenticated
// plaintext holds it (a stronger match than its thumbprint, and no hash to
// compute), so a proof is only ever checked with exactly its grant's key.
// Public keys only: nothing here is secret. A miss evicts round-robin.
class verify_ctx_cache {
public:
    static constexpr std::size_t size = 16;

    // A context set up for ECDSA verification of SHA-256 digests with `pt`;
    // null if `pt` is not a point of P-256.
    EVP_PKEY_CTX* get(const p256_point& pt) {
        for (auto& e : entries_) {
            if (e.ctx && e.pt == pt) {
                return e.ctx.get();
            }
        }
        const pkey_ptr key = pkey_from_point(pt);
        if (!key) {
            return nullptr;
        }
        pkey_ctx_ptr ctx(EVP_PKEY_CTX_new_from_pkey(nullptr, key.get(), nullptr));  // holds its own reference
        if (!ctx || EVP_PKEY_verify_init(ctx.get()) != 1 ||
            EVP_PKEY_CTX_set_signature_md(ctx.get(), EVP_sha256()) != 1) {
            return nullptr;
        }
        auto& slot = entries_[next_];
        next_ = (next_ + 1) % size;
        slot.pt = pt;
        slot.ctx = std::move(ctx);
        return slot.ctx.get();
    }

private:
    struct entry {
        p256_point pt{};
        pkey_ctx_ptr ctx;
    };
    std::array<entry, size> entries_{};
    std::size_t next_ = 0;
};

// ---- The token's plaintext -------------------------------------------------
//
//   u8 format (1) | i64 iat | i64 exp (big-endian) | cnf x || y (64)
//   | str provider | str origin | u8 n, n x str path | u8 n, n x str model
//   | str key | zero bytes to the bucket size
//   str = u16 length (big-endian) then the bytes

constexpr unsigned char plaintext_format = 1;
constexpr std::size_t token_overhead =
    crypto_aead_xchacha20poly1305_ietf_NPUBBYTES + crypto_aead_xchacha20poly1305_ietf_ABYTES;
constexpr std::size_t max_token_bytes = grant_buckets.back() + token_overhead;

class plain_writer {
public:
    explicit plain_writer(unsigned char* out) noexcept : out_(out) {}
    void byte(unsigned char b) noexcept { put(&b, 1); }
    void i64(std::int64_t v) noexcept {
        const auto u = static_cast<std::uint64_t>(v);
        for (int shift = 56; shift >= 0; shift -= 8) {
            byte(static_cast<unsigned char>(u >> shift));
        }
    }
    void str(std::string_view s) noexcept {
        byte(static_cast<unsigned char>(s.size() >> 8));
        byte(static_cast<unsigned char>(s.size() & 0xff));
        put(reinterpret_cast<const unsigned char*>(s.data()), s.size());
    }
    void put(const unsigned char* p, std::size_t n) noexcept {
        if (out_ != nullptr) {
            std::memcpy(out_ + n_, p, n);
        }
        n_ += n;
    }
    [[nodiscard]] std::size_t size() const noexcept { return n_; }

private:
    unsigned char* out_;
    std::size_t n_ = 0;
};

void write_plaintext(plain_writer& w, const grant_scope& s, std::string_view key) {
    w.byte(plaintext_format);
    w.i64(s.iat);
    w.i64(s.exp);
    w.put(s.cnf.data(), s.cnf.size());
    w.str(s.provider);
    w.str(s.origin);
    w.byte(static_cast<unsigned char>(s.paths.size()));
    for (const auto& p : s.paths) {
        w.str(p);
    }
    w.byte(static_cast<unsigned char>(s.models.size()));
    for (const auto& m : s.models) {
        w.str(m);
    }
    w.str(key);
}

class plain_reader {
public:
    explicit plain_reader(std::span<const unsigned char> in) noexcept : in_(in) {}
    bool byte(unsigned char& b) noexcept {
        if (pos_ >= in_.size()) {
            return false;
        }
        b = in_[pos_++];
        return true;
    }
    bool i64(std::int64_t& v) noexcept {
        std::uint64_t u = 0;
        for (int i = 0; i < 8; ++i) {
            unsigned char b = 0;
            if (!byte(b)) {
                return false;
            }
            u = (u << 8) | b;
        }
        v = static_cast<std::int64_t>(u);
        return true;
    }
    bool str(std::string_view& s, std::size_t max) noexcept {
        unsigned char hi = 0;
        unsigned char lo = 0;
        if (!byte(hi) || !byte(lo)) {
            return false;
        }
        const std::size_t n = (std::size_t{hi} << 8) | lo;
        if (n == 0 || n > max || in_.size() - pos_ < n) {
            return false;
        }
        s = std::string_view(reinterpret_cast<const char*>(in_.data() + pos_), n);
        pos_ += n;
        return true;
    }
    bool bytes(std::span<unsigned char> out) noexcept {
        if (in_.size() - pos_ < out.size()) {
            return false;
        }
        std::copy_n(in_.begin() + static_cast<std::ptrdiff_t>(pos_), out.size(), out.begin());
        pos_ += out.size();
        return true;
    }
    // Everything left is padding, and padding is zeros.
    [[nodiscard]] bool rest_is_zero() const noexcept {
        return std::all_of(in_.begin() + static_cast<std::ptrdiff_t>(pos_), in_.end(),
                           [](unsigned char b) { return b == 0; });
    }

private:
    std::span<const unsigned char> in_;
    std::size_t pos_ = 0;
};

// A flat JSON object decoded from base64url into `buf`, parsed in place.
template <class Sink>
bool parse_b64_json(std::string_view b64, std::span<char> buf, Sink& sink) {
    const auto n = base64url_decode_public(
        b64, std::span(reinterpret_cast<unsigned char*>(buf.data()), buf.size()));
    return n && json_lite::parse_object(buf.first(*n), sink);
}

}  // namespace

std::string_view to_string(grant_error e) noexcept {
    switch (e) {
    case grant_error::bad_grant: return "bad_grant";
    case grant_error::grant_expired: return "grant_expired";
    case grant_error::missing_proof: return "missing_proof";
    case grant_error::bad_proof: return "bad_proof";
    case grant_error::proof_replayed: return "proof_replayed";
    case grant_error::replay_cache_full: return "overloaded";
    }
    return "bad_grant";
}

// ---- P-256 and JWK ---------------------------------------------------------

std::optional<p256_point> p256_from_jwk(std::string_view x_b64, std::string_view y_b64) {
    p256_point pt{};
    const auto nx = base64url_decode_public(x_b64, std::span(pt.data(), 32));
    const auto ny = base64url_decode_public(y_b64, std::span(pt.data() + 32, 32));
    if (!nx || *nx != 32 || !ny || *ny != 32) {
        return std::nullopt;
    }
    if (!pkey_from_point(pt)) {
        return std::nullopt;  // not a point of the curve
    }
    return pt;
}

std::string jwk_thumbprint(const p256_point& pt) {
    // RFC 7638 §3.2: the required members only, sorted, no white space.
    const std::string canonical = "{\"crv\":\"P-256\",\"kty\":\"EC\",\"x\":\"" +
                                  base64url_encode(std::span(pt.data(), 32)) + "\",\"y\":\"" +
                                  base64url_encode(std::span(pt.data() + 32, 32)) + "\"}";
    return base64url_encode(sha256(canonical));
}

bool es256_verify(const p256_point& pt, std::string_view message, std::span<const unsigned char, 64> sig) {
    thread_local verify_ctx_cache cache;
    EVP_PKEY_CTX* const ctx = cache.get(pt);
    if (ctx == nullptr) {
        return false;
    }
    // JWS carries r || s; OpenSSL verifies the DER form (RFC 7518 §3.4).
    sig_ptr s(ECDSA_SIG_new());
    BIGNUM* r_bn = BN_bin2bn(sig.data(), 32, nullptr);
    BIGNUM* s_bn = BN_bin2bn(sig.data() + 32, 32, nullptr);
    if (!s || r_bn == nullptr || s_bn == nullptr || ECDSA_SIG_set0(s.get(), r_bn, s_bn) != 1) {
        BN_free(r_bn);
        BN_free(s_bn);
        return false;
    }
    std::array<unsigned char, 80> der{};
    unsigned char* p = der.data();
    const int der_len = i2d_ECDSA_SIG(s.get(), nullptr);
    if (der_len <= 0 || static_cast<std::size_t>(der_len) > der.size() || i2d_ECDSA_SIG(s.get(), &p) != der_len) {
        return false;
    }
    const sha256_digest digest = sha256(message);
    return EVP_PKEY_verify(ctx, der.data(), static_cast<std::size_t>(der_len), digest.data(), digest.size()) == 1;
}

// ---- Minting ---------------------------------------------------------------

std::string make_grant_token(const relay_key& relay, const grant_scope& scope, std::string_view key) {
    std::array<unsigned char, 24> nonce{};
    randombytes_buf(nonce.data(), nonce.size());
    return make_grant_token(relay, scope, key, nonce);
}

std::string make_grant_token(const relay_key& relay, const grant_scope& scope, std::string_view key,
                             std::span<const unsigned char, 24> nonce) {
    ensure_sodium();
    auto within = [](std::string_view s, std::size_t max) { return !s.empty() && s.size() <= max; };
    bool ok = within(scope.provider, max_grant_provider_bytes) && within(scope.origin, max_grant_origin_bytes) &&
              !scope.paths.empty() && scope.paths.size() <= max_grant_paths &&
              scope.models.size() <= max_grant_models && within(key, 1024) && valid_key_chars(key);
    for (const auto& p : scope.paths) {
        ok = ok && within(p, max_grant_path_bytes);
    }
    for (const auto& m : scope.models) {
        ok = ok && within(m, max_grant_model_bytes);
    }
    if (!ok) {
        throw std::invalid_argument("grant scope or key outside the limits");
    }
    plain_writer counter(nullptr);
    write_plaintext(counter, scope, key);
    const auto bucket = std::find_if(grant_buckets.begin(), grant_buckets.end(),
                                     [&](std::size_t b) { return b >= counter.size(); });
    if (bucket == grant_buckets.end()) {
        throw std::invalid_argument("grant scope or key outside the limits");
    }
    auto plain = secret_bytes::allocate(*bucket);  // zeros: the padding
    plain_writer writer(plain.data());
    write_plaintext(writer, scope, key);
    const auto sealed = relay.seal_grant(plain.span(), nonce);
    return relay.grant_kid() + "." + base64url_encode(sealed);
}

// ---- Checking --------------------------------------------------------------

std::ostream& operator<<(std::ostream& os, const opened_grant&) { return os << "<redacted>"; }

opened_key opened_grant::take_key() && {
    const std::string_view key = key_;
    key_ = {};
    return opened_key(std::move(plain_), key);
}

struct grant_checker::screened {
    const relay_key* key = nullptr;
    std::array<unsigned char, max_token_bytes> token_buf;
    std::span<const unsigned char> token;
    std::array<char, max_proof_chars> claims_buf;
    std::string_view signing_input;  // header.claims, as sent
    std::array<unsigned char, 64> sig{};
    std::string_view htm;
    std::string_view htu;
    std::int64_t iat = 0;
    sha256_digest body{};
    replay_cache::id proof_id{};
};

std::optional<grant_error> grant_checker::screen(const keyring& keys, const grant_request_facts& req,
                                                 std::int64_t now, screened& out) const {
    // 1. Exactly "Grant <kid>.<token>", a kid of a current grant key, and a
    //    token of one of the bucket sizes.
    std::string_view auth = req.authorization;
    if (!auth.starts_with(grant_scheme)) {
        return grant_error::bad_grant;
    }
    auth.remove_prefix(grant_scheme.size());
    const auto dot = auth.find('.');
    if (dot == std::string_view::npos || dot == 0) {
        return grant_error::bad_grant;
    }
    const std::string_view kid = auth.substr(0, dot);
    const std::string_view token_b64 = auth.substr(dot + 1);
    if (!std::all_of(kid.begin(), kid.end(), is_kid_char)) {
        return grant_error::bad_grant;
    }
    out.key = keys.find_grant(kid);
    if (out.key == nullptr || out.key->expired(now) || token_b64.size() > (max_token_bytes * 4 + 2) / 3) {
        return grant_error::bad_grant;
    }
    const auto token_len = base64url_decode_public(token_b64, out.token_buf);
    if (!token_len || std::none_of(grant_buckets.begin(), grant_buckets.end(),
                                   [&](std::size_t b) { return b + token_overhead == *token_len; })) {
        return grant_error::bad_grant;
    }
    out.token = std::span<const unsigned char>(out.token_buf.data(), *token_len);

    // 2. One Byok-Proof: a compact JWS with our typ and ES256.
    if (req.proof_count == 0) {
        return grant_error::missing_proof;
    }
    if (req.proof_count != 1 || req.proof.size() > max_proof_chars) {
        return grant_error::bad_proof;
    }
    const auto d1 = req.proof.find('.');
    const auto d2 = d1 == std::string_view::npos ? d1 : req.proof.find('.', d1 + 1);
    if (d2 == std::string_view::npos || req.proof.find('.', d2 + 1) != std::string_view::npos) {
        return grant_error::bad_proof;
    }
    const std::string_view header_b64 = req.proof.substr(0, d1);
    const std::string_view claims_b64 = req.proof.substr(d1 + 1, d2 - d1 - 1);
    const std::string_view sig_b64 = req.proof.substr(d2 + 1);
    out.signing_input = req.proof.substr(0, d2);
    const auto sig_len = base64url_decode_public(sig_b64, out.sig);
    if (!sig_len || *sig_len != out.sig.size()) {
        return grant_error::bad_proof;
    }
    {
        std::array<char, 256> header_buf{};
        std::string_view typ, alg;
        json_lite::once_members seen;
        bool crit = false;
        auto on_header = [&](std::string_view name, const json_lite::value& v) {
            auto take = [&](unsigned bit, std::string_view& to) {
                return seen.take(bit, v, json_lite::kind::string) && (to = v.str, true);
            };
            if (name == "typ") {
                return take(1, typ);
            }
            if (name == "alg") {
                return take(2, alg);
            }
            crit = crit || name == "crit";  // an extension we cannot know: refused (RFC 7515 §4.1.11)
            return true;
        };
        if (!parse_b64_json(header_b64, header_buf, on_header) || crit || typ != proof_typ || alg != "ES256") {
            return grant_error::bad_proof;
        }
    }
    std::string_view jti, body_b64;
    json_lite::once_members seen;
    auto on_claim = [&](std::string_view name, const json_lite::value& v) {
        auto take = [&](unsigned bit, json_lite::kind want) { return seen.take(bit, v, want); };
        using json_lite::kind;
        if (name == "htm") {
            return take(1, kind::string) && (out.htm = v.str, true);
        }
        if (name == "htu") {
            return take(2, kind::string) && (out.htu = v.str, true);
        }
        if (name == "iat") {
            return take(4, kind::integer) && (out.iat = v.num, true);
        }
        if (name == "jti") {
            return take(8, kind::string) && (jti = v.str, true);
        }
        if (name == "body_sha256") {
            return take(16, kind::string) && (body_b64 = v.str, true);
        }
        return true;  // unknown claims are ignored, as in a seal's payload
    };
    if (!parse_b64_json(claims_b64, out.claims_buf, on_claim) || seen.seen() != 31) {
        return grant_error::bad_proof;
    }
    std::array<unsigned char, 64> jti_bytes{};
    const auto jti_len = base64url_decode_public(jti, jti_bytes);
    const auto body_len = base64url_decode_public(body_b64, out.body);
    if (!jti_len || *jti_len < 12 || !body_len || *body_len != out.body.size()) {
        return grant_error::bad_proof;
    }

    // 3. Fresh, by the seal window.
    if (out.iat < now - policy_.max_age_s || out.iat > now + policy_.max_future_s || out.iat < policy_.not_before) {
        return grant_error::bad_proof;
    }

    // 4. A replay costs a hash lookup. The id is a labelled hash of the jti,
    //    so it cannot be made to equal a seal's id (the start of a public key).
    sha256_stream h;
    h.update("byok-relay proof jti ");
    h.update(jti);
    const auto digest = h.finish();
    std::copy_n(digest.begin(), out.proof_id.size(), out.proof_id.begin());
    if (replay_.contains(out.proof_id, now)) {
        return grant_error::proof_replayed;
    }
    return std::nullopt;
}

// Default-initialized: its two buffers (12 KiB) are written before they are
// read, and zeroing them twice a request showed in the profile.
std::unique_ptr<grant_checker::screened> grant_checker::new_screened() {
    return std::unique_ptr<screened>(new screened);  // NOLINT: not make_unique, which would zero the buffers
}

std::optional<grant_error> grant_checker::precheck(const keyring& keys, const grant_request_facts& req,
                                                   std::int64_t now) const {
    auto s = new_screened();
    return screen(keys, req, now, *s);
}

grant_result grant_checker::open(const keyring& keys, const grant_request_facts& req, std::int64_t now) const {
    auto s = new_screened();
    if (const auto refused = screen(keys, req, now, *s)) {
        return *refused;
    }

    // 5. Open into secret memory and read the plaintext in place.
    opened_grant g;
    g.plain_ = secret_bytes::allocate(s->token.size() - token_overhead);
    const bool opened = s->key->open_grant(s->token, g.plain_.span());
    wipe_stack_below();  // what the AEAD left on the stack (see crypto/seal.cpp)
    if (!opened) {
        return grant_error::bad_grant;
    }
    plain_reader r(g.plain_.span());
    unsigned char format = 0;
    unsigned char n_paths = 0;
    unsigned char n_models = 0;
    bool ok = r.byte(format) && format == plaintext_format && r.i64(g.iat_) && r.i64(g.exp_) && r.bytes(g.cnf_) &&
              r.str(g.provider_, max_grant_provider_bytes) && r.str(g.origin_, max_grant_origin_bytes) &&
              r.byte(n_paths) && n_paths >= 1 && n_paths <= max_grant_paths;
    for (std::size_t i = 0; ok && i < n_paths; ++i) {
        ok = r.str(g.paths_[i], max_grant_path_bytes);
    }
    ok = ok && r.byte(n_models) && n_models <= max_grant_models;
    for (std::size_t i = 0; ok && i < n_models; ++i) {
        ok = r.str(g.models_[i], max_grant_model_bytes);
    }
    ok = ok && r.str(g.key_, 1024) && valid_key_chars(g.key_) && r.rest_is_zero();
    if (!ok) {
        return grant_error::bad_grant;  // only the relay can seal a grant: a bug or a different format
    }
    g.n_paths_ = n_paths;
    g.n_models_ = n_models;

    // 6. Not expired.
    if (now >= g.exp_) {
        return grant_error::grant_expired;
    }

    // 7. The proof is signed by the grant's key, for exactly this request.
    if (!es256_verify(g.cnf_, s->signing_input, s->sig)) {
        return grant_error::bad_proof;
    }
    if (s->htm != req.method || s->htu != req.path || req.body_sha256 == nullptr ||
        sodium_memcmp(s->body.data(), req.body_sha256->data(), s->body.size()) != 0) {
        return grant_error::bad_proof;
    }
    g.proof_id_ = s->proof_id;
    g.proof_forget_at_ = s->iat + policy_.max_age_s + 1;
    return g;
}

std::optional<grant_error> grant_checker::claim_proof(const opened_grant& g, std::int64_t now) {
    switch (replay_.insert(g.proof_id(), g.proof_forget_at(), now)) {
    case replay_cache::insert_result::inserted: return std::nullopt;
    case replay_cache::insert_result::replayed: return grant_error::proof_replayed;
    case replay_cache::insert_result::full: return grant_error::replay_cache_full;
    }
    return grant_error::proof_replayed;
}

// ---- Client side -----------------------------------------------------------

es256_key es256_key::generate() {
    es256_key k;
    EVP_PKEY* raw = EVP_PKEY_Q_keygen(nullptr, nullptr, "EC", "P-256");
    if (raw == nullptr) {
        throw std::runtime_error("P-256 key generation failed");
    }
    k.pkey_ = raw;
    std::array<unsigned char, 65> oct{};
    std::size_t n = 0;
    if (EVP_PKEY_get_octet_string_param(raw, OSSL_PKEY_PARAM_PUB_KEY, oct.data(), oct.size(), &n) != 1 ||
        n != oct.size() || oct[0] != 0x04) {
        throw std::runtime_error("P-256 public key export failed");
    }
    std::copy(oct.begin() + 1, oct.end(), k.point_.begin());
    return k;
}

es256_key::es256_key(es256_key&& o) noexcept : pkey_(o.pkey_), point_(o.point_) { o.pkey_ = nullptr; }

es256_key& es256_key::operator=(es256_key&& o) noexcept {
    if (this != &o) {
        EVP_PKEY_free(static_cast<EVP_PKEY*>(pkey_));
        pkey_ = o.pkey_;
        point_ = o.point_;
        o.pkey_ = nullptr;
    }
    return *this;
}

es256_key::~es256_key() { EVP_PKEY_free(static_cast<EVP_PKEY*>(pkey_)); }

std::string es256_key::public_jwk() const {
    return "{\"kty\":\"EC\",\"crv\":\"P-256\",\"x\":\"" + base64url_encode(std::span(point_.data(), 32)) +
           "\",\"y\":\"" + base64url_encode(std::span(point_.data() + 32, 32)) + "\"}";
}

std::array<unsigned char, 64> es256_key::sign(std::string_view message) const {
    md_ctx_ptr md(EVP_MD_CTX_new());
    std::array<unsigned char, 80> der{};
    std::size_t der_len = der.size();
    if (!md ||
        EVP_DigestSignInit(md.get(), nullptr, EVP_sha256(), nullptr, static_cast<EVP_PKEY*>(pkey_)) != 1 ||
        EVP_DigestSign(md.get(), der.data(), &der_len, reinterpret_cast<const unsigned char*>(message.data()),
                       message.size()) != 1) {
        throw std::runtime_error("ES256 signing failed");
    }
    const unsigned char* p = der.data();
    sig_ptr s(d2i_ECDSA_SIG(nullptr, &p, static_cast<long>(der_len)));
    std::array<unsigned char, 64> out{};
    if (!s || BN_bn2binpad(ECDSA_SIG_get0_r(s.get()), out.data(), 32) != 32 ||
        BN_bn2binpad(ECDSA_SIG_get0_s(s.get()), out.data() + 32, 32) != 32) {
        throw std::runtime_error("ES256 signature conversion failed");
    }
    return out;
}

std::string make_proof(const es256_key& key, std::string_view htm, std::string_view htu, std::int64_t iat,
                       std::string_view jti, const sha256_digest& body_sha256) {
    auto json_string = [](std::string_view s) {
        std::string o = "\"";
        for (const char c : s) {
            if (c == '"' || c == '\\') {
                o += '\\';
            }
            o += c;
        }
        return o + "\"";
    };
    const std::string header = R"({"typ":"byok-proof+jwt","alg":"ES256"})";
    const std::string claims = "{\"htm\":" + json_string(htm) + ",\"htu\":" + json_string(htu) +
                               ",\"iat\":" + std::to_string(iat) + ",\"jti\":" + json_string(jti) +
                               ",\"body_sha256\":\"" + base64url_encode(body_sha256) + "\"}";
    std::string input = base64url_encode(std::span(reinterpret_cast<const unsigned char*>(header.data()),
                                                   header.size())) +
                        "." +
                        base64url_encode(std::span(reinterpret_cast<const unsigned char*>(claims.data()),
                                                   claims.size()));
    const auto sig = key.sign(input);
    return input + "." + base64url_encode(sig);
}

}  // namespace byok::crypto
