// docs/protocol.md's worked examples are real: this test reads the fenced
// blocks labelled "example:<name>" out of the document and checks them with
// libsodium, with crypto/hpke.hpp and with the relay's own checker.
#include "crypto/seal.hpp"

#include <doctest/doctest.h>

#include <cctype>
#include <fstream>
#include <map>
#include <sstream>
#include <string>
#include <vector>

#include <sys/stat.h>

#include <nlohmann/json.hpp>

#include "crypto/hpke.hpp"
#include "tests/crypto/test_support.hpp"
#include "tests/doc_examples.hpp"

using namespace byok;
using namespace byok::test;


TEST_CASE("docs/protocol.md worked example: sk -> pk -> kid, the box opens to the payload, the relay accepts it") {
    auto ex = example_blocks();
    for (const char* name : {"test-secret-key-hex", "public-key", "kid", "key-config", "request-line", "body",
                             "body-sha256", "payload", "authorization", "relay-time"}) {
        CAPTURE(name);
        REQUIRE(ex.contains(name));
        REQUIRE_FALSE(ex[name].empty());
    }
    for (auto& [name, text] : ex) {
        CAPTURE(name);
        if (name != "body" && name != "payload" && name != "key-config" && name != "headers-request" &&
            name != "headers-canonical") {
            CHECK(text.find('\n') == std::string::npos);  // one-line values
        }
    }

    // sk -> pk -> kid
    const auto sk = from_hex(ex["test-secret-key-hex"]);
    REQUIRE(sk.size() == 32);
    crypto::public_key pk{};
    REQUIRE(crypto_scalarmult_base(pk.data(), sk.data()) == 0);
    CHECK(crypto::base64url_encode(pk) == ex["public-key"]);
    CHECK(crypto::derive_kid(pk) == ex["kid"]);
    // The sk is what the document says it is: a hash of a label, not a real key.
    CHECK(crypto::base64url_encode(crypto::sha256(
              "byok-relay docs/protocol.md worked example - TEST KEY, never use")) == crypto::base64url_encode(sk));

    // The body hash, and the payload fields.
    const auto& body_text = ex["body"];
    CHECK(body_hash_b64(body_text) == ex["body-sha256"]);
    const auto& request_line = ex["request-line"];
    const auto space = request_line.find(' ');
    REQUIRE(space != std::string::npos);
    const std::string method_text = request_line.substr(0, space);
    const std::string target = request_line.substr(space + 1);
    const std::int64_t now = std::stoll(ex["relay-time"]);
    const auto payload_json = nlohmann::json::parse(ex["payload"]);
    CHECK(payload_json["method"] == method_text);
    CHECK(payload_json["path"] == target);
    CHECK(payload_json["body_sha256"] == ex["body-sha256"]);
    CHECK(payload_json["iat"] == now);
    CHECK(ex["payload"].size() == 176);  // the size the text states

    // The box opens, with the published key pair, to the payload byte for byte.
    const auto& auth = ex["authorization"];
    const std::string prefix = "Sealed " + ex["kid"] + ".";
    REQUIRE(auth.rfind(prefix, 0) == 0);
    const std::string box_b64 = auth.substr(prefix.size());
    bytes box(crypto::base64url_decoded_max(box_b64.size()));
    const auto n = crypto::base64url_decode(box_b64, box);
    REQUIRE(n);
    box.resize(*n);
    CHECK(box.size() == 224);
    CHECK(b64(bytes(box.begin(), box.begin() + 6)).substr(0, 8) == "SgIOlkmA");
    std::string opened(box.size() - crypto_box_SEALBYTES, '\0');
    REQUIRE(crypto_box_seal_open(reinterpret_cast<unsigned char*>(opened.data()), box.data(), box.size(), pk.data(),
                                 sk.data()) == 0);
    CHECK(opened == ex["payload"]);

    // The relay, loading that key from a key file, publishes the documented
    // key config and accepts the header at the example's time, for the
    // example's request, over the whole window, and nothing else.
    temp_dir dir;
    const auto key_path = dir.file("example-test-key.json");
    {
        std::ofstream out(key_path);
        out << R"({"v":1,"alg":"x25519-sealedbox","sk":")" << b64(sk) << R"(","exp":1807776000})";
    }
    REQUIRE(::chmod(key_path.c_str(), 0600) == 0);
    const auto ring = crypto::keyring::load({key_path});
    CHECK(ring->key_config_json(now) == ex["key-config"]);

    const auto digest = crypto::sha256(body_text);
    for (const std::int64_t at : {now, now - 30, now + 60}) {
        crypto::seal_checker checker({}, 16);
        CAPTURE(at);
        const auto r = checker.check(*ring, {method_text, target, &digest, auth}, at);
        REQUIRE(r.ok());
        CHECK(r.key().value() == payload_json["key"].get<std::string>());
        CHECK(error_of(checker.check(*ring, {method_text, target, &digest, auth}, at)) ==
              crypto::seal_error::seal_replayed);
    }
    crypto::seal_checker checker({}, 16);
    CHECK(error_of(checker.check(*ring, {method_text, target, &digest, auth}, now - 31)) ==
          crypto::seal_error::seal_expired);
    CHECK(error_of(checker.check(*ring, {method_text, target, &digest, auth}, now + 61)) ==
          crypto::seal_error::seal_expired);
    CHECK(error_of(checker.check(*ring, {"GET", target, &digest, auth}, now)) == crypto::seal_error::seal_mismatch);
}

TEST_CASE("docs/protocol.md lists every relay error with the status and message relay/errors.cpp sends") {
    std::ifstream doc_in(std::string(BYOK_SOURCE_DIR) + "/docs/protocol.md");
    std::stringstream doc_ss;
    doc_ss << doc_in.rdbuf();
    const std::string doc = doc_ss.str();
    std::ifstream src_in(std::string(BYOK_SOURCE_DIR) + "/relay/errors.cpp");
    REQUIRE(src_in.good());
    std::string line;
    int rows = 0;
    while (std::getline(src_in, line)) {
        // Table rows look like:    {401, "missing_seal", "This relay needs ..."},
        const auto open = line.find('{');
        if (open == std::string::npos || line.find("\", \"") == std::string::npos || line.find("}") == std::string::npos ||
            !std::isdigit(static_cast<unsigned char>(line[open + 1]))) {
            continue;
        }
        const auto c1 = line.find('"', open);
        const auto c2 = line.find('"', c1 + 1);
        const auto m1 = line.find('"', c2 + 1);
        const auto m2 = line.rfind("\"}");
        REQUIRE(c2 != std::string::npos);
        REQUIRE(m2 != std::string::npos);
        const std::string status = line.substr(open + 1, line.find(',', open) - open - 1);
        const std::string code = line.substr(c1 + 1, c2 - c1 - 1);
        const std::string message = line.substr(m1 + 1, m2 - m1 - 1);
        const std::string row = "| `" + code + "` | " + status + " | `" + message + "` |";
        CAPTURE(row);
        CHECK(doc.find(row) != std::string::npos);
        ++rows;
    }
    CHECK(rows >= 18);  // the table in relay/errors.cpp was found and read
}

TEST_CASE("docs/protocol.md lists every seal error code with its status") {
    const std::string path = std::string(BYOK_SOURCE_DIR) + "/docs/protocol.md";
    std::ifstream in(path);
    std::stringstream ss;
    ss << in.rdbuf();
    const std::string doc = ss.str();
    for (const auto& [e, status] : std::initializer_list<std::pair<crypto::seal_error, const char*>>{
             {crypto::seal_error::missing_seal, "401"},
             {crypto::seal_error::unknown_kid, "401"},
             {crypto::seal_error::bad_seal, "401"},
             {crypto::seal_error::seal_expired, "401"},
             {crypto::seal_error::seal_mismatch, "401"},
             {crypto::seal_error::seal_replayed, "401"},
             {crypto::seal_error::replay_cache_full, "503"}}) {
        const std::string row = "| `" + std::string(crypto::to_string(e)) + "` | " + status + " |";
        CAPTURE(row);
        CHECK(doc.find(row) != std::string::npos);
    }
}

TEST_CASE("docs/protocol.md worked example, HPKE: sk -> pk -> kid, each step of the seal, the relay accepts it") {
    auto ex = example_blocks();
    for (const char* name : {"hpke-test-secret-key-hex", "hpke-public-key", "hpke-kid", "hpke-key-config", "hpke-info",
                             "hpke-ephemeral-secret-key-hex", "hpke-enc", "hpke-shared-secret-hex", "hpke-key-hex",
                             "hpke-base-nonce-hex", "hpke-authorization"}) {
        CAPTURE(name);
        REQUIRE(ex.contains(name));
        REQUIRE_FALSE(ex[name].empty());
    }
    namespace hpke = crypto::hpke;
    auto key_from_hex = [](const std::string& h) {
        const auto raw = from_hex(h);
        auto s = crypto::secret_bytes::allocate(raw.size());
        std::copy(raw.begin(), raw.end(), s.data());
        auto k = hpke::private_key::from_bytes(std::move(s));
        REQUIRE(k.has_value());
        return std::move(*k);
    };
    auto to_hex = [](std::span<const unsigned char> b) {
        std::string out(b.size() * 2 + 1, '\0');
        sodium_bin2hex(out.data(), out.size(), b.data(), b.size());
        out.pop_back();
        return out;
    };

    // The test keys are what the document says they are: hashes of labels.
    CHECK(to_hex(crypto::sha256("byok-relay docs/protocol.md worked example - HPKE TEST KEY, never use")) ==
          ex["hpke-test-secret-key-hex"]);
    CHECK(to_hex(crypto::sha256("byok-relay docs/protocol.md worked example - HPKE EPHEMERAL KEY, never use")) ==
          ex["hpke-ephemeral-secret-key-hex"]);
    const auto sk_r = key_from_hex(ex["hpke-test-secret-key-hex"]);
    const auto sk_e = key_from_hex(ex["hpke-ephemeral-secret-key-hex"]);
    CHECK(crypto::base64url_encode(sk_r.pk()) == ex["hpke-public-key"]);
    CHECK(crypto::derive_hpke_kid(sk_r.pk()) == ex["hpke-kid"]);
    CHECK(ex["hpke-info"] == "byok-relay v1 " + ex["hpke-kid"]);
    CHECK(crypto::base64url_encode(sk_e.pk()) == ex["hpke-enc"]);

    // Each step of SetupBaseS.
    const auto shared = hpke::encap(sk_r.pk(), sk_e);
    REQUIRE(shared.has_value());
    CHECK(to_hex(shared->span()) == ex["hpke-shared-secret-hex"]);
    const auto ctx = hpke::schedule_context::base(ex["hpke-info"]);
    const auto schedule = hpke::key_schedule(shared->span(), ctx);
    CHECK(to_hex(schedule.key()) == ex["hpke-key-hex"]);
    CHECK(to_hex(schedule.base_nonce()) == ex["hpke-base-nonce-hex"]);

    // The header: enc || ct, which the published recipient key opens to the
    // payload of the first example, and which sealing with the published
    // ephemeral key reproduces exactly.
    const auto& auth = ex["hpke-authorization"];
    const std::string prefix = "Sealed " + ex["hpke-kid"] + ".";
    REQUIRE(auth.rfind(prefix, 0) == 0);
    const std::string sealed_b64 = auth.substr(prefix.size());
    bytes sealed(crypto::base64url_decoded_max(sealed_b64.size()));
    const auto n = crypto::base64url_decode(sealed_b64, sealed);
    REQUIRE(n);
    sealed.resize(*n);
    CHECK(sealed.size() == 224);
    CHECK(b64(bytes(sealed.begin(), sealed.begin() + 32)) == ex["hpke-enc"]);
    auto r = hpke::recipient::setup(std::span(sealed).first(32), sk_r, ctx);
    REQUIRE(r.has_value());
    std::string opened(sealed.size() - 48, '\0');
    REQUIRE(std::move(*r).open({}, std::span(sealed).subspan(32),
                               std::span(reinterpret_cast<unsigned char*>(opened.data()), opened.size())));
    CHECK(opened == ex["payload"]);
    auto s = hpke::sender::setup(sk_r.pk(), ctx, sk_e);
    REQUIRE(s.has_value());
    CHECK(std::move(*s).seal({}, as_bytes(ex["payload"])) == bytes(sealed.begin() + 32, sealed.end()));

    // A key file holding both halves: the documented key config, and the
    // relay's checker accepts the header for the first example's request.
    temp_dir dir;
    const auto key_path = dir.file("example-test-key.json");
    {
        std::ofstream out(key_path);
        out << R"({"v":1,"alg":"x25519-sealedbox","sk":")" << b64(from_hex(ex["test-secret-key-hex"]))
            << R"(","hpke_sk":")" << b64(from_hex(ex["hpke-test-secret-key-hex"])) << R"(","exp":1807776000})";
    }
    REQUIRE(::chmod(key_path.c_str(), 0600) == 0);
    const auto ring = crypto::keyring::load({key_path});
    const std::int64_t now = std::stoll(ex["relay-time"]);
    CHECK(ring->key_config_json(now) == ex["hpke-key-config"]);
    const auto& request_line = ex["request-line"];
    const std::string method_text = request_line.substr(0, request_line.find(' '));
    const std::string target = request_line.substr(request_line.find(' ') + 1);
    const auto digest = crypto::sha256(ex["body"]);
    crypto::seal_checker checker({}, 16);
    CHECK(checker.precheck(*ring, auth, now) == std::nullopt);
    const auto result = checker.check(*ring, {method_text, target, &digest, auth}, now);
    REQUIRE(result.ok());
    CHECK(result.key().value() == "sk-example-NOT-A-REAL-KEY-0123456789");
    CHECK(error_of(checker.check(*ring, {method_text, target, &digest, auth}, now)) ==
          crypto::seal_error::seal_replayed);
}

TEST_CASE("docs/protocol.md §3.5: the bound header fields of the example request, canonical list and hash") {
    auto ex = example_blocks();
    for (const char* name : {"headers-request", "headers-canonical", "headers-sha256"}) {
        CAPTURE(name);
        REQUIRE(ex.contains(name));
    }
    // "Name: value" lines, as on the wire.
    std::vector<std::string> lines;
    std::stringstream in(ex["headers-request"]);
    for (std::string line; std::getline(in, line);) {
        lines.push_back(line);
    }
    std::vector<crypto::header_field> fields;
    for (const auto& line : lines) {
        const auto colon = line.find(": ");
        REQUIRE(colon != std::string::npos);
        fields.push_back({std::string_view(line).substr(0, colon), std::string_view(line).substr(colon + 2)});
    }
    REQUIRE(fields.size() == 6);
    const std::string canonical = ex["headers-canonical"] + "\n";  // the block's last line ends in LF too
    CHECK(crypto::headers_sha256(fields) == crypto::sha256(canonical));
    CHECK(crypto::base64url_encode(crypto::headers_sha256(fields)) == ex["headers-sha256"]);
}
