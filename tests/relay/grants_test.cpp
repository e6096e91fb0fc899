#include "relay/grants.hpp"

#include <doctest/doctest.h>

#include <array>
#include <cstdlib>
#include <filesystem>
#include <fstream>
#include <random>

#include <sys/stat.h>
#include <unistd.h>

#include <sodium.h>

// As in relay/config.cpp: GCC 12's false maybe-uninitialized inside nlohmann::json.
#pragma GCC diagnostic ignored "-Wmaybe-uninitialized"
#include <nlohmann/json.hpp>

#include "crypto/encoding.hpp"
#include "tests/doc_examples.hpp"

using namespace byok;

namespace {

std::vector<unsigned char> from_hex(std::string_view hex) {
    std::vector<unsigned char> out(hex.size() / 2);
    std::size_t n = 0;
    REQUIRE(sodium_hex2bin(out.data(), out.size(), hex.data(), hex.size(), nullptr, &n, nullptr) == 0);
    REQUIRE(n == out.size());
    return out;
}

std::string b64(std::span<const unsigned char> b) { return crypto::base64url_encode(b); }

relay::config example_config() {
    relay::config c;
    c.providers = relay::default_providers();
    c.allow_origins = {"https://app.example"};
    return c;
}

std::string key_file_with(const std::string& dir, const std::string& text) {
    const std::string path = dir + "/example-grant-key.json";
    std::ofstream(path) << text;
    REQUIRE(::chmod(path.c_str(), 0600) == 0);
    return path;
}

}  // namespace

TEST_CASE("docs/protocol.md §13.6: grant key, token, mint answer and proof are what the relay makes and accepts") {
    auto ex = test::example_blocks();
    for (const char* name : {"test-secret-key-hex", "grant-test-key-hex", "grant-kid", "grant-key-file-members",
                             "grant-app-jwk", "grant-jkt", "grant-mint-body", "grant-plaintext-hex",
                             "grant-nonce-hex", "grant-mint-response", "proof-header", "proof-claims", "proof",
                             "request-line", "body", "relay-time"}) {
        CAPTURE(name);
        REQUIRE(ex.contains(name));
        REQUIRE_FALSE(ex[name].empty());
    }
    const std::int64_t now = std::stoll(ex["relay-time"]);

    // The grant key is the hash of its label; its kid; the key file members.
    const auto gk = from_hex(ex["grant-test-key-hex"]);
    CHECK(b64(gk) == b64(crypto::sha256("byok-relay docs/protocol.md worked example - GRANT TEST KEY, never use")));
    CHECK(crypto::derive_grant_kid(gk) == ex["grant-kid"]);
    CHECK(ex["grant-key-file-members"] ==
          "\"grant_kid\":\"" + ex["grant-kid"] + "\",\"grant_sk\":\"" + b64(gk) + "\"");

    // §11's key file with the grant members added.
    const auto sk = from_hex(ex["test-secret-key-hex"]);
    char tmpl[] = "/tmp/byok-grant-doc-XXXXXX";
    REQUIRE(::mkdtemp(tmpl) != nullptr);
    const std::string dir = tmpl;
    const auto ring = crypto::keyring::load({key_file_with(
        dir, R"({"v":1,"alg":"x25519-sealedbox","sk":")" + b64(sk) + "\"," + ex["grant-key-file-members"] +
                 R"(,"exp":1807776000})")});
    std::filesystem::remove_all(dir);
    REQUIRE(ring->grant_signer(now) != nullptr);
    const crypto::relay_key& key = *ring->grant_signer(now);
    CHECK(key.grant_kid() == ex["grant-kid"]);

    // The app's JWK and its thumbprint.
    const auto jwk = nlohmann::json::parse(ex["grant-app-jwk"]);
    const auto point = crypto::p256_from_jwk(jwk["x"].get<std::string>(), jwk["y"].get<std::string>());
    REQUIRE(point);
    CHECK(crypto::jwk_thumbprint(*point) == ex["grant-jkt"]);

    // The mint body, read as the relay reads it.
    const relay::config cfg = example_config();
    auto parsed = relay::parse_grant_request(cfg, ex["grant-mint-body"], now);
    REQUIRE(std::holds_alternative<crypto::grant_scope>(parsed));
    const auto& scope = std::get<crypto::grant_scope>(parsed);
    CHECK(scope.provider == "openai");
    CHECK(scope.paths == std::vector<std::string>{"/v1/chat/completions"});
    CHECK(scope.models == std::vector<std::string>{"gpt-4o-mini"});
    CHECK(scope.origin == "https://app.example");
    CHECK(scope.iat == now);
    CHECK(scope.exp == now + 1800);
    CHECK(scope.cnf == *point);

    // The token: the relay's make_grant_token with the document's nonce gives
    // the document's token (made by another implementation), which opens to
    // the documented plaintext and padding.
    const auto nonce_bytes = from_hex(ex["grant-nonce-hex"]);
    REQUIRE(nonce_bytes.size() == 24);
    std::array<unsigned char, 24> nonce{};
    std::copy(nonce_bytes.begin(), nonce_bytes.end(), nonce.begin());
    const auto nonce_label = crypto::sha256("byok-relay docs/protocol.md worked example - GRANT NONCE, never reuse");
    CHECK(b64(nonce) == b64(std::span(nonce_label).first(24)));
    const std::string example_key = "sk-example-NOT-A-REAL-KEY-0123456789";
    const std::string token = crypto::make_grant_token(key, scope, example_key, nonce);
    const auto response = nlohmann::json::parse(ex["grant-mint-response"]);
    CHECK(token == response["grant"].get<std::string>());
    CHECK(relay::grant_response_body(token, scope) == ex["grant-mint-response"]);
    {
        const std::string sealed_b64 = token.substr(token.find('.') + 1);
        std::vector<unsigned char> sealed(crypto::base64url_decoded_max(sealed_b64.size()));
        const auto n = crypto::base64url_decode(sealed_b64, sealed);
        REQUIRE(n);
        sealed.resize(*n);
        REQUIRE(sealed.size() == 24 + 1024 + 16);
        std::vector<unsigned char> plain(1024);
        const std::string ad = "byok-relay grant v1 " + ex["grant-kid"];
        unsigned long long plain_len = 0;
        REQUIRE(crypto_aead_xchacha20poly1305_ietf_decrypt(
                    plain.data(), &plain_len, nullptr, sealed.data() + 24, sealed.size() - 24,
                    reinterpret_cast<const unsigned char*>(ad.data()), ad.size(), sealed.data(), gk.data()) == 0);
        const auto expected = from_hex(ex["grant-plaintext-hex"]);
        CHECK(std::equal(expected.begin(), expected.end(), plain.begin()));
        CHECK(std::all_of(plain.begin() + static_cast<std::ptrdiff_t>(expected.size()), plain.end(),
                          [](unsigned char c) { return c == 0; }));
    }

    // The proof: its parts are the documented header and claims.
    const std::string& proof = ex["proof"];
    const auto d1 = proof.find('.');
    const auto d2 = proof.find('.', d1 + 1);
    auto decoded = [](std::string_view part) {
        std::string out(part.size(), '\0');
        const auto n = crypto::base64url_decode(
            part, std::span(reinterpret_cast<unsigned char*>(out.data()), out.size()));
        REQUIRE(n);
        out.resize(*n);
        return out;
    };
    CHECK(decoded(proof.substr(0, d1)) == ex["proof-header"]);
    CHECK(decoded(proof.substr(d1 + 1, d2 - d1 - 1)) == ex["proof-claims"]);

    // The relay accepts the request of §11 with that grant and proof, once.
    const auto& line = ex["request-line"];
    const std::string method = line.substr(0, line.find(' '));
    const std::string target = line.substr(line.find(' ') + 1);
    const auto digest = crypto::sha256(ex["body"]);
    crypto::seal_checker seals(crypto::seal_policy{}, 16);
    crypto::grant_checker grants(seals.policy(), seals.replay());
    const std::string auth = "Grant " + token;
    const crypto::grant_request_facts facts{auth, proof, 1, method, target, &digest};
    auto opened = grants.open(*ring, facts, now);
    REQUIRE(opened.ok());
    boost::beast::http::fields headers;
    headers.set(boost::beast::http::field::origin, "https://app.example");
    CHECK_FALSE(relay::check_grant_scope(opened.grant(), {&headers, "openai", "/v1/chat/completions", ex["body"]}));
    CHECK_FALSE(grants.claim_proof(opened.grant(), now));
    CHECK(std::move(opened).take().take_key().value() == example_key);
    CHECK(grants.precheck(*ring, facts, now) == crypto::grant_error::proof_replayed);
}

TEST_CASE("parse_grant_request: shape, allowlist, origins, lifetime, each with its error") {
    const relay::config cfg = example_config();
    const std::string jwk =
        R"({"kty":"EC","crv":"P-256","x":"l8tFrhx-34tV3hRICRDY9zCkDlpBhF42UQUfWVAWBFs","y":"9VE4jf_Ok_o64zbTTlcuNJajHmt6v9TDVrU0CdvGRDA"})";
    auto body = [&](std::string_view paths, std::string_view extra = "", std::string_view origin = "https://app.example",
                    int ttl = 1800) {
        return R"({"provider":"openai","paths":)" + std::string(paths) + R"(,"ttl_s":)" + std::to_string(ttl) +
               R"(,"origin":")" + std::string(origin) + R"(","cnf":{"jwk":)" + jwk + "}" + std::string(extra) + "}";
    };
    auto error = [&](const std::string& text) {
        const auto r = relay::parse_grant_request(cfg, text, 1000);
        return std::holds_alternative<relay::error_code>(r) ? relay::describe(std::get<relay::error_code>(r)).code
                                                            : std::string_view("ok");
    };
    CHECK(error(body(R"(["/v1/chat/completions"])")) == "ok");
    CHECK(error(body(R"(["/v1/audio/speech"])")) == "ok");  // under an allowed prefix
    CHECK(error(body(R"(["/v1/chat/completions"])", R"(,"models":[])")) == "ok");
    CHECK(error(body(R"(["/v1/fine_tuning/jobs"])")) == "path_not_allowed");  // not in the openai preset
    CHECK(error(body(R"(["/v1/chat/completions/../files"])")) == "path_not_allowed");
    CHECK(error(body(R"(["/v1/chat/completions"])", "", "https://evil.example")) == "origin_mismatch");
    CHECK(error(body(R"(["/v1/chat/completions"])", "", "https://app.example", 1801)) == "grant_too_long");
    CHECK(error(body(R"(["/v1/chat/completions"])", "", "https://app.example", 0)) == "bad_request");
    CHECK(error(body(R"(["/v1/chat/completions"])", "", "https://app.example/path")) == "bad_request");
    CHECK(error(body("[]")) == "bad_request");
    CHECK(error(body(R"(["/v1/chat/completions",1])")) == "bad_request");
    CHECK(error(body(R"(["/v1/chat/completions"])", R"(,"models":["a","a","a","a","a","a","a","a","a","a","a","a","a","a","a","a","a"])")) ==
          "bad_request");
    CHECK(error(body(R"(["/v1/chat/completions"])", R"(,"ttl_s":60)")) == "bad_request");  // a member twice
    CHECK(error("[]") == "bad_request");
    CHECK(error("{") == "bad_request");
}

namespace {

// nlohmann's reading of the same question, the oracle of the test below:
// how many top-level members named "model" (its callback sees each key
// after unescaping, with its depth), and the value of the only one.
bool nlohmann_model_allowed(std::span<const std::string_view> models, const std::string& body) {
    using json = nlohmann::json;
    int copies = 0;
    const json::parser_callback_t cb = [&](int depth, json::parse_event_t ev, json& parsed) {
        if (ev == json::parse_event_t::key && depth == 1 && parsed.get<std::string>() == "model") {
            ++copies;
        }
        return true;
    };
    const json j = json::parse(body, cb, false);
    if (j.is_discarded() || !j.is_object() || copies != 1 || !j["model"].is_string()) {
        return false;
    }
    const auto& m = j["model"].get_ref<const std::string&>();
    return !m.empty() && std::find(models.begin(), models.end(), m) != models.end();
}

// Random JSON documents around a top-level "model": escaped and look-alike
// member names, nested objects and arrays with their own "model", escaped
// and non-string values, white space; some then damaged by one byte.
class doc_maker {
public:
    explicit doc_maker(unsigned seed) : rng_(seed) {}

    std::string make() {
        std::string d = ws() + object(0, true) + ws();
        if (pick(5) == 0 && !d.empty()) {
            static constexpr std::string_view junk = "\"{}[],:\\\x80 a0-";
            const std::size_t at = pick(d.size());
            switch (pick(3)) {
            case 0: d.erase(at, 1); break;
            case 1: d.insert(at, 1, junk[pick(junk.size())]); break;
            default: d.resize(at); break;
            }
        }
        return d;
    }

private:
    std::size_t pick(std::size_t n) { return std::uniform_int_distribution<std::size_t>(0, n - 1)(rng_); }
    std::string ws() {
        static constexpr std::array<std::string_view, 5> w{"", "", " ", "\n\t", "\r\n  "};
        return std::string(w[pick(w.size())]);
    }
    std::string key() {
        static constexpr std::array<std::string_view, 10> k{
            R"("model")", R"("model")", R"("mod\u0065l")", R"("\u006dodel")", R"("Model")",
            R"("models")", R"("model ")", R"("m\"odel")", R"("messages")", R"("x")"};
        return std::string(k[pick(k.size())]);
    }
    std::string value(int depth) {
        static constexpr std::array<std::string_view, 14> scalars{
            R"("gpt-4o-mini")", R"("gpt-4o-mini")", R"("gpt\u002d4o-mini")", R"("gpt-4o")", R"("")",
            R"("gpt-4o-mini\n")", R"("\ud83d\ude00")", "\"gpt-4o-mini\xc3\xa9\"", R"("gpt-4o-mini ")", "12",
            "-1.5e3", "true", "null", R"("model")"};
        const std::size_t c = depth < 5 ? pick(scalars.size() + 3) : pick(scalars.size());
        if (c == scalars.size()) {
            return object(depth + 1, false);
        }
        if (c == scalars.size() + 1) {
            return array(depth + 1);
        }
        if (c == scalars.size() + 2) {
            return object(depth + 1, true);
        }
        return std::string(scalars[c]);
    }
    std::string array(int depth) {
        std::string a = "[" + ws();
        for (std::size_t i = 0, n = pick(4); i < n; ++i) {
            a += (i ? "," + ws() : "") + value(depth) + ws();
        }
        return a + "]";
    }
    std::string object(int depth, bool with_model) {
        std::vector<std::string> members;
        for (std::size_t i = 0, n = pick(5); i < n; ++i) {
            members.push_back(key() + ws() + ":" + ws() + value(depth));
        }
        if (with_model) {
            members.insert(members.begin() + static_cast<std::ptrdiff_t>(pick(members.size() + 1)),
                           R"("model")" + ws() + ":" + ws() + value(depth));
        }
        std::string o = "{" + ws();
        for (std::size_t i = 0; i < members.size(); ++i) {
            o += (i ? "," + ws() : "") + members[i] + ws();
        }
        return o + "}";
    }

    std::mt19937 rng_;
};

}  // namespace

TEST_CASE("body_model_allowed: the top-level \"model\" only, exactly once, a string of the grant's, strict JSON") {
    const std::array<std::string_view, 2> models{"gpt-4o-mini", "o1"};
    const std::vector<std::pair<std::string, bool>> cases{
        {R"({"model":"gpt-4o-mini"})", true},
        {" \r\n\t{ \"model\" : \"o1\" } \n", true},
        {R"({"model":"gpt\u002d4o-mini"})", true},   // the value unescaped
        {R"({"mod\u0065l":"gpt-4o-mini"})", true},   // the name unescaped
        {R"({"messages":[{"model":"x"}],"model":"o1","meta":{"model":"gpt-4o"}})", true},
        {R"({"a":"\"model\":\"gpt-4o\"","model":"o1"})", true},  // a "model" inside a string
        {R"({"model":"gpt-4o"})", false},
        {R"({"model":"GPT-4O-MINI"})", false},
        {R"({"model":"gpt-4o-mini "})", false},
        {R"({"model":""})", false},
        {R"({})", false},
        {R"({"messages":[{"model":"gpt-4o-mini"}]})", false},  // nested only
        {R"({"meta":{"model":"gpt-4o-mini"}})", false},
        {R"({"model":"gpt-4o-mini","model":"gpt-4o-mini"})", false},  // twice, even the same
        {R"({"model":"gpt-4o-mini","mod\u0065l":"gpt-4o"})", false},    // twice once unescaped
        {R"({"model":["gpt-4o-mini"]})", false},
        {R"({"model":{"id":"gpt-4o-mini"}})", false},
        {R"({"model":null})", false},
        {R"({"model":1})", false},
        {R"(["gpt-4o-mini"])", false},
        {R"("gpt-4o-mini")", false},
        {R"({"model":"gpt-4o-mini"} {})", false},
        {R"({"model":"gpt-4o-mini",})", false},
        {R"({"model":"gpt-4o-mini")", false},
        {R"({"model":"gpt-4o-mini","x":01})", false},
        {R"({"model":"gpt-4o-mini","x":"\ud800"})", false},       // lone surrogate elsewhere
        {"{\"model\":\"gpt-4o-mini\",\"x\":\"\xc0\x80\"}", false},  // overlong UTF-8 elsewhere
        {"{\"model\":\"gpt-4o-mini\",\"x\":\"a\tb\"}", false},      // a raw control character
        {R"({"model":"gpt-4o-mini","x":99999999999999999999})", false},  // beyond int64
        {"", false},
        {std::string(R"({"model":"o1","x":)") + std::string(40, '[') + std::string(40, ']') + "}", false},  // too deep
        {std::string(R"({"model":"o1","x":)") + std::string(30, '[') + std::string(30, ']') + "}", true},
    };
    for (const auto& [body, allowed] : cases) {
        CHECK_MESSAGE(relay::body_model_allowed(models, body) == allowed, body);
    }
}

TEST_CASE("body_model_allowed agrees with nlohmann::json on 30,000 generated documents") {
    const std::array<std::string_view, 1> models{"gpt-4o-mini"};
    // The oracle itself: top level only, once.
    REQUIRE(nlohmann_model_allowed(models, R"({"a":{"model":"x"},"model":"gpt-4o-mini"})"));
    REQUIRE_FALSE(nlohmann_model_allowed(models, R"({"a":{"model":"gpt-4o-mini"}})"));
    REQUIRE_FALSE(nlohmann_model_allowed(models, R"({"model":"gpt-4o-mini","model":"gpt-4o-mini"})"));
    doc_maker maker(12);
    int allowed = 0;
    int refused = 0;
    int invalid = 0;
    for (int i = 0; i < 30000; ++i) {
        const std::string doc = maker.make();
        const bool ours = relay::body_model_allowed(models, doc);
        REQUIRE_MESSAGE(ours == nlohmann_model_allowed(models, doc), doc);
        ++(ours ? allowed : refused);
        invalid += nlohmann::json::accept(doc) ? 0 : 1;
    }
    // The generator reaches both answers, and damaged documents, often.
    CHECK(allowed > 1500);
    CHECK(refused > 3000);
    CHECK(invalid > 1000);
}
