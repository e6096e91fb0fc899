#include "relay/key_list.hpp"

#include <doctest/doctest.h>

#include <string>
#include <vector>

#include <nlohmann/json.hpp>

#include "crypto/encoding.hpp"
#include "relay/config.hpp"

using namespace byok;
using namespace byok::relay;

namespace {

constexpr std::int64_t now = 1800000000;

std::shared_ptr<const crypto::keyring> ring(int n) {
    std::vector<crypto::relay_key> keys;
    for (int i = 0; i < n; ++i) {
        keys.push_back(crypto::relay_key::generate(now));
    }
    return crypto::keyring::from_keys(std::move(keys));
}

std::string refusal(const std::string& text, const crypto::keyring& keys, std::int64_t at = now) {
    std::vector<std::string> warnings;
    try {
        (void)signed_key_list::check(text, keys, at, warnings);
    } catch (const config_error& e) {
        return e.what();
    }
    return "";
}

}  // namespace

TEST_CASE("key list: made for the keyring, it checks; its outer keys are the signed ones, served verbatim") {
    const auto keys = ring(2);
    const auto signer = crypto::signing_key::generate(now);
    const std::string text = make_signed_key_list(*keys, signer, now, now + 30 * 86400);
    std::vector<std::string> warnings;
    const auto list = signed_key_list::check(text, *keys, now, warnings);
    CHECK(list->text() == text);
    CHECK(list->exp() == now + 30 * 86400);
    CHECK(list->signer() == crypto::base64url_encode(signer.pk()));
    CHECK(warnings.empty());
    const auto j = nlohmann::json::parse(text);
    CHECK(j["keys"] == nlohmann::json::parse(keys->key_config_json(now))["keys"]);
    const std::string inner_b64 = j["signed"]["list"];
    std::vector<unsigned char> inner(crypto::base64url_decoded_max(inner_b64.size()));
    const auto n = crypto::base64url_decode(inner_b64, inner);
    REQUIRE(n);
    inner.resize(*n);
    const auto l = nlohmann::json::parse(inner);
    CHECK(l["typ"] == "byok-relay key list");
    CHECK(l["iat"] == now);
    CHECK(l["keys"] == j["keys"]);
}

TEST_CASE("key list: refused when altered, for other keys, expired, or unsigned; warned when it expires soon") {
    const auto keys = ring(1);
    const auto signer = crypto::signing_key::generate(now);
    const std::string text = make_signed_key_list(*keys, signer, now, now + 30 * 86400);
    auto j = nlohmann::json::parse(text);

    auto sig = j;
    sig["signed"]["sig"] = crypto::base64url_encode(std::vector<unsigned char>(64, 0));
    CHECK(refusal(sig.dump(), *keys).find("the signature does not verify") != std::string::npos);

    auto outer = j;
    outer["keys"] = nlohmann::json::parse(ring(1)->key_config_json(now))["keys"];
    CHECK(refusal(outer.dump(), *keys).find("\"keys\" differs") != std::string::npos);

    const auto others = ring(1);
    CHECK(refusal(text, *others).find("which is not in key_files") != std::string::npos);
    CHECK(refusal(text, *keys, now + 30 * 86400).find("expired at") != std::string::npos);
    CHECK(refusal(keys->key_config_json(now), *keys).find("not a signed key list") != std::string::npos);
    CHECK(refusal("not json", *keys).find("not a signed key list") != std::string::npos);

    // Expiring within 7 days: a warning (a loaded key the list lacks is one too: web/test/key-list.test.mjs).
    const auto both_text = make_signed_key_list(*keys, signer, now, now + 3 * 86400);
    std::vector<std::string> warnings;
    (void)signed_key_list::check(both_text, *keys, now, warnings);
    REQUIRE(warnings.size() == 1);
    CHECK(warnings[0].find("expires at") != std::string::npos);
    // While running: the hourly note.
    const auto list = signed_key_list::check(both_text, *keys, now, warnings);
    CHECK(key_list_expiry_note(*list, now - 30 * 86400).empty());
    CHECK(key_list_expiry_note(*list, now).rfind("warning: key_list_file: the signed list expires at", 0) == 0);
    CHECK(key_list_expiry_note(*list, now + 3 * 86400).rfind("error: key_list_file: the signed list expired at", 0) ==
          0);
}
