// The grant and proof parsers and checks (docs/protocol.md §13):
// grant_checker::precheck and open, then the relay's scope check, on inputs
// of the form
//
//   <mode>\n<grant material>\n<proof material>\n<method>\n<path>\n<body...>
//
// mode "P": <grant material> is the token's plaintext in hex (zero-padded or
//           cut to 1024 bytes, its cnf replaced by the fuzz app key), sealed
//           here with the current grant key, so the fuzzer reaches the
//           plaintext reader; <proof material> is the proof's claims JSON,
//           signed here with the app key, so it reaches every check after
//           the signature;
// anything else: both are the header values as sent ("Grant " + material,
//           and the Byok-Proof).
//
// Properties: precheck() never disagrees with open(); an accepted grant's
// key is 1-1024 visible ASCII characters; its proof is claimed once only.
#include "crypto/grant.hpp"

#include <cstring>

#include <boost/beast/http/fields.hpp>
#include <sodium.h>

#include "fuzz_support.hpp"
#include "relay/grants.hpp"

using namespace byok::crypto;

namespace {

constexpr std::int64_t now = 1'700'000'000;

struct fixture {
    std::shared_ptr<const keyring> keys;
    es256_key app = es256_key::generate();
};

fixture& fx() {
    static fixture f = [] {
        fixture out;
        std::vector<relay_key> k;
        k.push_back(relay_key::generate(now - 10, 86400));
        out.keys = keyring::from_keys(std::move(k));
        return out;
    }();
    return f;
}

std::optional<std::vector<unsigned char>> from_hex(std::string_view hex) {
    std::vector<unsigned char> out(hex.size() / 2 + 1);  // never empty: sodium_hex2bin wants a buffer
    std::size_t n = 0;
    if (sodium_hex2bin(out.data(), out.size(), hex.data(), hex.size(), nullptr, &n, nullptr) != 0) {
        return std::nullopt;
    }
    out.resize(n);
    return out;
}

}  // namespace

extern "C" int LLVMFuzzerInitialize(int*, char***) {
    ensure_sodium();
    (void)fx();
    return 0;
}

extern "C" int LLVMFuzzerTestOneInput(const std::uint8_t* data, std::size_t size) {
    const auto f = byok::fuzz::split_lines(byok::fuzz::as_view(data, size), 6);
    const relay_key& key = fx().keys->keys()[0];
    std::string authorization;
    std::string proof;
    if (f[0] == "P") {
        auto plain = from_hex(f[1]);
        if (!plain) {
            return 0;
        }
        plain->resize(grant_buckets.front(), 0);
        std::copy(fx().app.point().begin(), fx().app.point().end(), plain->begin() + 17);
        const std::array<unsigned char, 24> nonce{};
        authorization = "Grant " + key.grant_kid() + "." + base64url_encode(key.seal_grant(*plain, nonce));
        const std::string header = R"({"typ":"byok-proof+jwt","alg":"ES256"})";
        const std::string input =
            base64url_encode(std::span(reinterpret_cast<const unsigned char*>(header.data()), header.size())) + "." +
            base64url_encode(std::span(reinterpret_cast<const unsigned char*>(f[2].data()), f[2].size()));
        const auto sig = fx().app.sign(input);
        proof = input + "." + base64url_encode(sig);
    } else {
        authorization = "Grant " + std::string(f[1]);
        proof = std::string(f[2]);
    }
    const sha256_digest digest = sha256(f[5]);
    const grant_request_facts facts{authorization, proof, 1, f[3], f[4], &digest};
    replay_cache replay(16);
    grant_checker checker(seal_policy{}, replay);
    const auto pre = checker.precheck(*fx().keys, facts, now);
    auto result = checker.open(*fx().keys, facts, now);
    if (pre) {
        BYOK_FUZZ_CHECK(!result.ok() && result.error() == *pre);
        return 0;
    }
    if (!result.ok()) {
        return 0;
    }
    const auto& g = result.grant();
    BYOK_FUZZ_CHECK(!g.paths().empty() && g.paths().size() <= max_grant_paths);
    boost::beast::http::fields headers;
    headers.set(boost::beast::http::field::origin, "http://app.test");
    const std::string_view path = f[4];
    (void)byok::relay::check_grant_scope(
        g, {&headers, "openai", path.starts_with("/openai/") ? path.substr(7) : path, f[5]});
    BYOK_FUZZ_CHECK(!checker.claim_proof(g, now).has_value());
    BYOK_FUZZ_CHECK(checker.claim_proof(g, now) == grant_error::proof_replayed);
    const auto k = std::move(result).take().take_key();
    BYOK_FUZZ_CHECK(!k.value().empty() && k.value().size() <= 1024);
    for (const char c : k.value()) {
        BYOK_FUZZ_CHECK(c > 0x20 && c < 0x7f);
    }
    return 0;
}
