#include "crypto/grant.hpp"

#include <fstream>
#include <sstream>

#include <openssl/bn.h>
#include <openssl/core_names.h>
#include <openssl/ec.h>
#include <openssl/evp.h>

#include "tests/crypto/test_support.hpp"

namespace {

using namespace byok;
using namespace byok::test;
using crypto::grant_error;

constexpr std::string_view origin = "https://app.example";
constexpr std::string_view jti = "cmFuZG9tLWp0aS0xMjM0NTY";  // 17 bytes

crypto::grant_scope scope_for(const crypto::es256_key& app, std::int64_t iat = t0, std::int64_t ttl = 1800) {
    crypto::grant_scope s;
    s.provider = "openai";
    s.paths = {"/v1/chat/completions", "/v1/embeddings"};
    s.models = {"gpt-4o-mini"};
    s.origin = origin;
    s.iat = iat;
    s.exp = iat + ttl;
    s.cnf = app.point();
    return s;
}

// One relay key with a grant half, the checkers sharing one replay cache,
// an app key, a fixed clock.
struct grant_fixture {
    std::int64_t now = t0;
    std::shared_ptr<const crypto::keyring> ring;
    crypto::seal_checker seals{crypto::seal_policy{}, 1024};
    crypto::grant_checker grants{crypto::seal_policy{}, seals.replay()};
    crypto::es256_key app = crypto::es256_key::generate();

    grant_fixture() {
        std::vector<crypto::relay_key> keys;
        keys.push_back(crypto::relay_key::generate(t0 - 3600));
        ring = crypto::keyring::from_keys(std::move(keys));
    }
    [[nodiscard]] const crypto::relay_key& key() const { return ring->keys()[0]; }
    [[nodiscard]] std::string token(std::string_view k = api_key) const {
        return crypto::make_grant_token(key(), scope_for(app), k);
    }
    [[nodiscard]] std::string proof(std::string_view m = method, std::string_view p = path,
                                    std::string_view b = body, std::int64_t iat = t0,
                                    std::string_view id = jti) const {
        return crypto::make_proof(app, m, p, iat, id, crypto::sha256(b));
    }
    crypto::grant_result open(std::string_view token_text, std::string_view proof_text, std::size_t proofs = 1,
                              std::string_view m = method, std::string_view p = path, std::string_view b = body) {
        const auto digest = crypto::sha256(b);
        const std::string auth = "Grant " + std::string(token_text);
        const crypto::grant_request_facts f{auth, proof_text, proofs, m, p, &digest};
        return grants.open(*ring, f, now);
    }
    std::optional<grant_error> precheck(std::string_view token_text, std::string_view proof_text,
                                        std::size_t proofs = 1) {
        const auto digest = crypto::sha256(body);
        const std::string auth = "Grant " + std::string(token_text);
        const crypto::grant_request_facts f{auth, proof_text, proofs, method, path, &digest};
        return grants.precheck(*ring, f, now);
    }
};

grant_error error_of(const crypto::grant_result& r) {
    REQUIRE_MESSAGE(!r.ok(), "the grant was accepted");
    return r.error();
}

// A JWS signed here with OpenSSL's EVP API directly (not crypto::make_proof):
// DER signature converted to r || s by hand.
std::string openssl_jws(EVP_PKEY* pkey, std::string_view header_json, std::string_view claims_json) {
    const std::string input = crypto::base64url_encode(as_bytes(header_json)) + "." +
                              crypto::base64url_encode(as_bytes(claims_json));
    EVP_MD_CTX* md = EVP_MD_CTX_new();
    unsigned char der[80];
    size_t der_len = sizeof der;
    REQUIRE(EVP_DigestSignInit(md, nullptr, EVP_sha256(), nullptr, pkey) == 1);
    REQUIRE(EVP_DigestSign(md, der, &der_len, reinterpret_cast<const unsigned char*>(input.data()), input.size()) ==
            1);
    EVP_MD_CTX_free(md);
    const unsigned char* p = der;
    ECDSA_SIG* sig = d2i_ECDSA_SIG(nullptr, &p, static_cast<long>(der_len));
    REQUIRE(sig != nullptr);
    bytes rs(64);
    BN_bn2binpad(ECDSA_SIG_get0_r(sig), rs.data(), 32);
    BN_bn2binpad(ECDSA_SIG_get0_s(sig), rs.data() + 32, 32);
    ECDSA_SIG_free(sig);
    return input + "." + b64(rs);
}

crypto::p256_point point_of(EVP_PKEY* pkey) {
    unsigned char oct[65];
    size_t n = 0;
    REQUIRE(EVP_PKEY_get_octet_string_param(pkey, OSSL_PKEY_PARAM_PUB_KEY, oct, sizeof oct, &n) == 1);
    REQUIRE(n == 65);
    crypto::p256_point pt{};
    std::copy(oct + 1, oct + 65, pt.begin());
    return pt;
}

std::string claims(std::string_view htu = path, std::int64_t iat = t0, std::string_view id = jti) {
    return R"({"htm":"POST","htu":")" + std::string(htu) + R"(","iat":)" + std::to_string(iat) + R"(,"jti":")" +
           std::string(id) + R"(","body_sha256":")" + body_hash_b64(body) + R"("})";
}

}  // namespace

TEST_CASE("a grant with its proof opens to its scope and key; the proof is good once") {
    grant_fixture fx;
    const std::string tok = fx.token();
    auto r = fx.open(tok, fx.proof());
    REQUIRE(r.ok());
    const auto& g = r.grant();
    CHECK(g.provider() == "openai");
    CHECK(g.origin() == origin);
    REQUIRE(g.paths().size() == 2);
    CHECK(g.paths()[0] == "/v1/chat/completions");
    CHECK(g.paths()[1] == "/v1/embeddings");
    REQUIRE(g.models().size() == 1);
    CHECK(g.models()[0] == "gpt-4o-mini");
    CHECK(g.iat() == t0);
    CHECK(g.exp() == t0 + 1800);
    CHECK(g.cnf() == fx.app.point());
    CHECK(g.proof_forget_at() == t0 + 61);
    std::ostringstream printed;
    printed << g;
    CHECK(printed.str() == "<redacted>");

    CHECK_FALSE(fx.grants.claim_proof(g, fx.now).has_value());
    CHECK(fx.grants.claim_proof(g, fx.now) == grant_error::proof_replayed);
    const auto key = std::move(r).take().take_key();
    CHECK(key.value() == api_key);

    // The same proof again: refused by the header checks alone, and by open().
    CHECK(fx.precheck(tok, fx.proof()) == grant_error::proof_replayed);
    CHECK(error_of(fx.open(tok, fx.proof())) == grant_error::proof_replayed);
    // A new proof for the same grant: accepted (a grant serves many requests).
    const auto again = fx.open(tok, fx.proof(method, path, body, t0, "YW5vdGhlci1qdGktOTg3NjU0"));
    REQUIRE(again.ok());
    CHECK_FALSE(fx.grants.claim_proof(again.grant(), fx.now).has_value());
}

TEST_CASE("the token's length does not depend on the key's length") {
    grant_fixture fx;
    const auto short_tok = fx.token("k");
    const auto long_tok = fx.token(std::string(1000, 'x'));
    CHECK(short_tok.size() == fx.token(std::string(164, 'y')).size());
    CHECK(short_tok.size() == fx.key().grant_kid().size() + 1 + (1024 + 40) * 4 / 3 + 1);
    CHECK(long_tok.size() > short_tok.size());  // the next bucket
    REQUIRE(fx.open(long_tok, fx.proof()).ok());
    CHECK_THROWS_AS((void)fx.token(std::string(1025, 'x')), std::invalid_argument);
    CHECK_THROWS_AS((void)fx.token("key with space"), std::invalid_argument);
}

TEST_CASE("every flipped bit of a token, every truncation and an extra byte: bad_grant") {
    grant_fixture fx;
    const std::string tok = fx.token();
    const auto dot = tok.find('.');
    const std::string kid = tok.substr(0, dot);
    bytes sealed(4096 + 64);
    const auto n = crypto::base64url_decode(tok.substr(dot + 1), sealed);
    REQUIRE(n);
    sealed.resize(*n);
    for (std::size_t i = 0; i < sealed.size() * 8; ++i) {
        bytes t = sealed;
        t[i / 8] ^= static_cast<unsigned char>(1u << (i % 8));
        // open() records nothing, so one proof serves every attempt.
        const auto r = fx.open(kid + "." + b64(t), fx.proof());
        REQUIRE_MESSAGE(error_of(r) == grant_error::bad_grant, "bit " << i);
    }
    for (const std::size_t len : {std::size_t{0}, std::size_t{40}, sealed.size() - 1}) {
        const bytes t(sealed.begin(), sealed.begin() + static_cast<std::ptrdiff_t>(len));
        CHECK(error_of(fx.open(kid + "." + b64(t), fx.proof())) == grant_error::bad_grant);
    }
    bytes longer = sealed;
    longer.push_back(0);
    CHECK(error_of(fx.open(kid + "." + b64(longer), fx.proof())) == grant_error::bad_grant);
    // Malformed spellings.
    for (const std::string& bad : {std::string(""), "." + tok.substr(dot + 1), kid, kid + ".", kid + "!." + b64(sealed),
                                  kid + "." + b64(sealed) + "="}) {
        CHECK(error_of(fx.open(bad, fx.proof())) == grant_error::bad_grant);
    }
    CHECK(fx.open(tok, fx.proof()).ok());  // the untouched token still opens
}

TEST_CASE("a grant of another key, a kid swapped between keys, a rotated-out key: bad_grant") {
    grant_fixture fx;
    const std::string tok = fx.token();
    // Another relay's keyring.
    std::vector<crypto::relay_key> other;
    other.push_back(crypto::relay_key::generate(t0 - 10));
    const auto other_ring = crypto::keyring::from_keys(std::move(other));
    const std::string other_tok = crypto::make_grant_token(other_ring->keys()[0], scope_for(fx.app), api_key);
    CHECK(error_of(fx.open(other_tok, fx.proof())) == grant_error::bad_grant);

    // Both keys loaded (a rotation): each grant opens; the other key's body
    // under this key's kid does not (additional data and key differ).
    std::vector<crypto::relay_key> both;
    both.push_back(crypto::relay_key::generate(t0 - 10));
    both.push_back(crypto::relay_key::generate(t0 - 20));
    const auto ring2 = crypto::keyring::from_keys(std::move(both));
    fx.ring = ring2;
    const std::string t_new = crypto::make_grant_token(ring2->keys()[0], scope_for(fx.app), api_key);
    const std::string t_old = crypto::make_grant_token(ring2->keys()[1], scope_for(fx.app), api_key);
    CHECK(fx.open(t_new, fx.proof()).ok());
    CHECK(fx.open(t_old, fx.proof(method, path, body, t0, "b2xkLWtleS1qdGktMDAx")).ok());
    const std::string swapped = ring2->keys()[0].grant_kid() + t_old.substr(t_old.find('.'));
    CHECK(error_of(fx.open(swapped, fx.proof(method, path, body, t0, "c3dhcHBlZC1qdGktMDAx"))) ==
          grant_error::bad_grant);

    // The old key rotated out (only the new one loaded): its grants are revoked.
    std::vector<crypto::relay_key> rotated;
    rotated.push_back(crypto::relay_key::generate(t0 - 5));
    fx.ring = crypto::keyring::from_keys(std::move(rotated));
    CHECK(error_of(fx.open(t_old, fx.proof(method, path, body, t0, "cm90YXRlZC1qdGktMDAx"))) ==
          grant_error::bad_grant);
    CHECK(fx.precheck(t_old, fx.proof()) == grant_error::bad_grant);
}

TEST_CASE("an expired grant: grant_expired, from its exp on") {
    grant_fixture fx;
    const std::string tok = crypto::make_grant_token(fx.key(), scope_for(fx.app, t0 - 1800, 1800), api_key);
    CHECK(error_of(fx.open(tok, fx.proof())) == grant_error::grant_expired);
    const std::string tok2 = crypto::make_grant_token(fx.key(), scope_for(fx.app, t0 - 1799, 1800), api_key);
    CHECK(fx.open(tok2, fx.proof()).ok());
}

TEST_CASE("proofs: missing, two, re-signed, bound to another method, path or body, stale, malformed") {
    grant_fixture fx;
    const std::string tok = fx.token();
    CHECK(fx.precheck(tok, "", 0) == grant_error::missing_proof);
    CHECK(error_of(fx.open(tok, "", 0)) == grant_error::missing_proof);
    CHECK(error_of(fx.open(tok, fx.proof(), 2)) == grant_error::bad_proof);

    // Signed by another key, for exactly this request.
    const auto thief = crypto::es256_key::generate();
    CHECK(error_of(fx.open(tok, crypto::make_proof(thief, method, path, fx.now, jti, crypto::sha256(body)))) ==
          grant_error::bad_proof);
    // For another method, path, body.
    CHECK(error_of(fx.open(tok, fx.proof("GET"))) == grant_error::bad_proof);
    CHECK(error_of(fx.open(tok, fx.proof(method, "/openai/v1/embeddings"))) == grant_error::bad_proof);
    CHECK(error_of(fx.open(tok, fx.proof(method, path, "{}"))) == grant_error::bad_proof);
    // The proof's iat outside the seal window (60 s back, 30 s ahead, both inclusive).
    CHECK(error_of(fx.open(tok, fx.proof(method, path, body, t0 - 61))) == grant_error::bad_proof);
    CHECK(error_of(fx.open(tok, fx.proof(method, path, body, t0 + 31))) == grant_error::bad_proof);
    CHECK(fx.open(tok, fx.proof(method, path, body, t0 - 60)).ok());
    // A jti of fewer than 96 bits.
    CHECK(error_of(fx.open(tok, fx.proof(method, path, body, t0, "c2hvcnQtaWQ"))) == grant_error::bad_proof);
    // Every flipped bit of a proof.
    const std::string good = fx.proof();
    for (std::size_t i = 0; i < good.size(); ++i) {
        for (const char c : {'A', '.', '_'}) {
            if (good[i] == c) {
                continue;
            }
            std::string t = good;
            t[i] = c;
            const auto r = fx.open(tok, t);
            REQUIRE_MESSAGE(!r.ok(), "char " << i);
            CHECK(r.error() == grant_error::bad_proof);
        }
    }
    CHECK(fx.open(tok, good).ok());
}

TEST_CASE("a JWS made by OpenSSL directly verifies; wrong typ, alg none, crit and junk do not") {
    EVP_PKEY* pkey = EVP_PKEY_Q_keygen(nullptr, nullptr, "EC", "P-256");
    REQUIRE(pkey != nullptr);
    grant_fixture fx;
    auto s = scope_for(fx.app);
    s.cnf = point_of(pkey);
    const std::string tok = crypto::make_grant_token(fx.key(), s, api_key);
    const std::string header = R"({"typ":"byok-proof+jwt","alg":"ES256"})";
    CHECK(fx.open(tok, openssl_jws(pkey, header, claims())).ok());
    CHECK(fx.open(tok, openssl_jws(pkey, R"({"alg":"ES256","typ":"byok-proof+jwt","kid":"x"})",
                                   claims(path, t0, "c2Vjb25kLWp0aS0xMjM0")))
              .ok());
    for (const std::string h : {R"({"typ":"JWT","alg":"ES256"})", R"({"typ":"byok-proof+jwt","alg":"none"})",
                                R"({"typ":"byok-proof+jwt","alg":"ES384"})", R"({"alg":"ES256"})",
                                R"({"typ":"byok-proof+jwt","alg":"ES256","crit":["x"]})",
                                R"({"typ":"byok-proof+jwt","alg":"ES256","alg":"ES256"})", R"([])", R"(x)"}) {
        CHECK_MESSAGE(error_of(fx.open(tok, openssl_jws(pkey, h, claims(path, t0, "dGhpcmQtanRpLTEyMzQ1")))) ==
                          grant_error::bad_proof,
                      h);
    }
    for (const std::string& c :
         {std::string(R"({"htm":"POST","htu":"/openai/v1/chat/completions","iat":1800000000,"jti":"dGhpcmQtanRpLTEyMzQ1"})"),
          R"({"htm":"POST","htu":"/openai/v1/chat/completions","iat":"1800000000","jti":"dGhpcmQtanRpLTEyMzQ1","body_sha256":")" +
              body_hash_b64(body) + R"("})",
          R"({"htm":"POST","htm":"POST","htu":"/openai/v1/chat/completions","iat":1800000000,"jti":"dGhpcmQtanRpLTEyMzQ1","body_sha256":")" +
              body_hash_b64(body) + R"("})"}) {
        CHECK_MESSAGE(error_of(fx.open(tok, openssl_jws(pkey, header, c))) == grant_error::bad_proof, c);
    }
    // The signature's r || s must be exactly 64 bytes.
    const std::string jws = openssl_jws(pkey, header, claims(path, t0, "Zm91cnRoLWp0aS0xMjM0"));
    CHECK(error_of(fx.open(tok, jws + "AA")) == grant_error::bad_proof);
    CHECK(error_of(fx.open(tok, jws.substr(0, jws.rfind('.')))) == grant_error::bad_proof);
    EVP_PKEY_free(pkey);
}

// The same x with the other y (p - y): the point's negation, also on the curve.
crypto::p256_point negated(const crypto::p256_point& pt) {
    BIGNUM* p = nullptr;
    REQUIRE(BN_hex2bn(&p, "FFFFFFFF00000001000000000000000000000000FFFFFFFFFFFFFFFFFFFFFFFF") > 0);
    BIGNUM* y = BN_bin2bn(pt.data() + 32, 32, nullptr);
    REQUIRE(y != nullptr);
    REQUIRE(BN_sub(y, p, y) == 1);
    crypto::p256_point out = pt;
    REQUIRE(BN_bn2binpad(y, out.data() + 32, 32) == 32);
    BN_free(y);
    BN_free(p);
    return out;
}

TEST_CASE("ES256 verification keys are reused per thread, but only ever for exactly their own point") {
    // More app keys than the per-thread cache holds, each checked several
    // times in an interleaved order: every signature verifies with its own
    // key, never with another one's, nor with its negation (same x, other y:
    // what a cache matching less than the whole point would confuse).
    constexpr std::size_t n = 40;
    std::vector<crypto::es256_key> apps;
    std::vector<std::array<unsigned char, 64>> sigs;
    for (std::size_t i = 0; i < n; ++i) {
        apps.push_back(crypto::es256_key::generate());
        sigs.push_back(apps.back().sign("message " + std::to_string(i)));
    }
    for (int round = 0; round < 3; ++round) {
        for (std::size_t k = 0; k < n; ++k) {
            const std::size_t i = (k * 7 + static_cast<std::size_t>(round)) % n;
            const std::string msg = "message " + std::to_string(i);
            CHECK_MESSAGE(crypto::es256_verify(apps[i].point(), msg, sigs[i]), i);
            const auto neg = negated(apps[i].point());
            REQUIRE(crypto::p256_from_jwk(crypto::base64url_encode(std::span(neg.data(), 32)),
                                          crypto::base64url_encode(std::span(neg.data() + 32, 32))));
            CHECK_FALSE_MESSAGE(crypto::es256_verify(neg, msg, sigs[i]), i);
            CHECK_FALSE_MESSAGE(crypto::es256_verify(apps[(i + 1) % n].point(), msg, sigs[i]), i);
            CHECK_FALSE_MESSAGE(crypto::es256_verify(apps[i].point(), msg + ".", sigs[i]), i);
            CHECK(crypto::es256_verify(apps[i].point(), msg, sigs[i]));  // still cached and right after the misses
        }
    }
    // A point off the curve is refused, and not remembered as anything.
    auto off = apps[0].point();
    off[63] ^= 1;
    CHECK_FALSE(crypto::es256_verify(off, "message 0", sigs[0]));
    CHECK_FALSE(crypto::es256_verify(off, "message 0", sigs[0]));
    CHECK(crypto::es256_verify(apps[0].point(), "message 0", sigs[0]));
}

TEST_CASE("JWK: RFC 7638 thumbprint of a P-256 key; points off the curve refused") {
    // The P-256 key of RFC 9449 (DPoP) §4.1, whose thumbprint that RFC gives in §6.1.
    const auto pt = crypto::p256_from_jwk("l8tFrhx-34tV3hRICRDY9zCkDlpBhF42UQUfWVAWBFs",
                                          "9VE4jf_Ok_o64zbTTlcuNJajHmt6v9TDVrU0CdvGRDA");
    REQUIRE(pt);
    CHECK(crypto::jwk_thumbprint(*pt) == "0ZcOCORZNYy-DWpqq30jZyJGHTN0d2HglBV3uiguA4I");
    // y + 1: not on the curve.
    CHECK_FALSE(crypto::p256_from_jwk("l8tFrhx-34tV3hRICRDY9zCkDlpBhF42UQUfWVAWBFs",
                                      "9VE4jf_Ok_o64zbTTlcuNJajHmt6v9TDVrU0CdvGRDE"));
    CHECK_FALSE(crypto::p256_from_jwk("AAAA", "AAAA"));
    CHECK_FALSE(crypto::p256_from_jwk("", ""));
}

TEST_CASE("key files: the grant half is written, loaded, checked; files without it load and grant nothing") {
    temp_dir dir;
    const auto key = crypto::relay_key::generate(t0);
    REQUIRE(key.has_grant());
    CHECK(key.grant_kid().size() == 12);
    CHECK(key.grant_kid() != key.kid());
    key.write_new_file(dir.file("k.json"));
    const auto back = crypto::relay_key::load_file(dir.file("k.json"));
    REQUIRE(back.has_grant());
    CHECK(back.grant_kid() == key.grant_kid());
    const auto es = crypto::es256_key::generate();
    std::vector<crypto::relay_key> v;
    v.push_back(crypto::relay_key::load_file(dir.file("k.json")));
    const auto ring = crypto::keyring::from_keys(std::move(v));
    CHECK(ring->grant_signer(t0) == &ring->keys()[0]);
    CHECK(ring->find_grant(key.grant_kid()) == &ring->keys()[0]);
    CHECK(ring->grant_signer(key.exp()) == nullptr);

    // The same file without the two grant members, and with a wrong grant_kid.
    std::ifstream in(dir.file("k.json"));
    std::string text((std::istreambuf_iterator<char>(in)), std::istreambuf_iterator<char>());
    const auto a = text.find("\"grant_kid\"");
    const auto b = text.find("\"created\"");
    REQUIRE(a != std::string::npos);
    auto write = [&](const std::string& name, const std::string& t) {
        std::ofstream(dir.file(name)) << t;
        std::filesystem::permissions(dir.file(name), std::filesystem::perms::owner_read |
                                                          std::filesystem::perms::owner_write);
    };
    write("old.json", text.substr(0, a) + text.substr(b));
    const auto old = crypto::relay_key::load_file(dir.file("old.json"));
    CHECK_FALSE(old.has_grant());
    std::string wrong = text;
    wrong.replace(a + 13, 12, "AAAAAAAAAAAA");
    write("wrong.json", wrong);
    CHECK_THROWS_AS((void)crypto::relay_key::load_file(dir.file("wrong.json")), crypto::key_error);
}
