// Published known-answer vectors (tests/vectors, see SOURCES.md there),
// applied to the primitives crypto_box_seal is built from.
#include "crypto/seal.hpp"

#include <doctest/doctest.h>

#include <fstream>
#include <string>
#include <vector>

#include <sys/stat.h>

#include <nlohmann/json.hpp>

#include "tests/crypto/test_support.hpp"

using namespace byok;
using namespace byok::test;

namespace {

nlohmann::json load_vectors(const std::string& name) {
    const std::string path = std::string(BYOK_VECTORS_DIR) + "/" + name;
    std::ifstream in(path);
    REQUIRE_MESSAGE(in.good(), "cannot read " << path);
    return nlohmann::json::parse(in);
}

bool all_zero(const bytes& b) {
    return std::all_of(b.begin(), b.end(), [](unsigned char c) { return c == 0; });
}

// crypto_box_seal done by hand from an ephemeral public key and the X25519
// shared secret the sender claims for it:
//   k = HSalsa20(shared, 0), nonce = BLAKE2b-192(epk || pk), box = epk || secretbox(m)
// which is exactly what libsodium's crypto_box_seal does with a real key pair.
// With a low-order epk the shared secret is all zeros and known to anyone, so
// this forges a seal without any secret unless the opener rejects it.
bytes forge_seal(const bytes& epk, const bytes& shared, const crypto::public_key& pk, std::string_view payload) {
    unsigned char k[crypto_box_BEFORENMBYTES];
    static const unsigned char zero[16] = {};
    crypto_core_hsalsa20(k, zero, shared.data(), nullptr);
    unsigned char nonce[crypto_box_NONCEBYTES];
    crypto_generichash_state st;
    crypto_generichash_init(&st, nullptr, 0, sizeof nonce);
    crypto_generichash_update(&st, epk.data(), epk.size());
    crypto_generichash_update(&st, pk.data(), pk.size());
    crypto_generichash_final(&st, nonce, sizeof nonce);
    bytes box(epk);
    box.resize(epk.size() + crypto_box_MACBYTES + payload.size());
    crypto_secretbox_easy(box.data() + epk.size(), reinterpret_cast<const unsigned char*>(payload.data()),
                          payload.size(), nonce, k);
    sodium_memzero(k, sizeof k);
    return box;
}

}  // namespace

TEST_CASE("Wycheproof X25519: every valid/acceptable result matches; all-zero shared secrets are refused") {
    const auto doc = load_vectors("wycheproof-x25519_test.json");
    REQUIRE(doc["algorithm"] == "XDH");
    std::size_t total = 0, matched = 0, refused = 0;
    for (const auto& group : doc["testGroups"]) {
        REQUIRE(group["curve"] == "curve25519");
        for (const auto& t : group["tests"]) {
            ++total;
            CAPTURE(t["tcId"].get<int>());
            const std::string result = t["result"];
            REQUIRE((result == "valid" || result == "acceptable"));  // the file has no "invalid" X25519 cases
            const auto pub = from_hex(t["public"].get<std::string>());
            const auto priv = from_hex(t["private"].get<std::string>());
            const auto expected = from_hex(t["shared"].get<std::string>());
            REQUIRE(pub.size() == 32);
            REQUIRE(priv.size() == 32);
            bytes out(32);
            const int rc = crypto_scalarmult(out.data(), priv.data(), pub.data());
            if (all_zero(expected)) {
                // RFC 7748 §6.1 / RFC 9180 §7.1.4: an all-zero result must be rejected.
                CHECK(rc == -1);
                ++refused;
            } else {
                CHECK(rc == 0);
                CHECK(out == expected);
                matched += out == expected ? 1 : 0;
            }
        }
    }
    CHECK(total == 518);
    CHECK(refused == 31);
    CHECK(matched == 487);
}

TEST_CASE("Wycheproof low-order points: a seal whose ephemeral key is one of them is bad_seal") {
    relay_fixture f;
    const auto doc = load_vectors("wycheproof-x25519_test.json");

    // Control: the hand-made seal with an honest ephemeral key pair is accepted,
    // so the forgeries below fail only because of the low-order point.
    {
        bytes epk(32), esk(32), shared(32);
        crypto_box_keypair(epk.data(), esk.data());
        REQUIRE(crypto_scalarmult(shared.data(), esk.data(), f.key().pk().data()) == 0);
        const auto r = f.check(header(f.key().kid(), forge_seal(epk, shared, f.key().pk(), payload())));
        REQUIRE(r.ok());
        CHECK(r.key().value() == api_key);
    }

    std::size_t forged = 0;
    for (const auto& group : doc["testGroups"]) {
        for (const auto& t : group["tests"]) {
            const auto flags = t["flags"];
            if (std::find(flags.begin(), flags.end(), "LowOrderPublic") == flags.end()) {
                continue;
            }
            CAPTURE(t["tcId"].get<int>());
            const auto epk = from_hex(t["public"].get<std::string>());
            const auto shared = from_hex(t["shared"].get<std::string>());
            REQUIRE(all_zero(shared));
            const auto box = forge_seal(epk, shared, f.key().pk(), payload(api_key, f.now));
            CHECK(error_of(f.check(header(f.key().kid(), box))) == crypto::seal_error::bad_seal);
            ++forged;
        }
    }
    CHECK(forged == 31);
    CHECK(f.checker.replay_entries() == 1);  // only the control
}

TEST_CASE("RFC 9180 vectors, DHKEM(X25519): sk -> pk derivation and the DH both ways agree") {
    // crypto_box_seal is not HPKE, so the vectors' shared_secret, key and
    // ciphertexts (HKDF + AES-GCM/ChaCha20 over a different construction) do
    // not apply. What does apply is their X25519 key pairs: the relay derives
    // its public key from its secret key with the same function.
    const auto doc = load_vectors("hpke-rfc9180-test-vectors.json");
    std::size_t entries = 0;
    temp_dir dir;
    for (const auto& v : doc) {
        if (v["kem_id"] != 32) {
            continue;
        }
        ++entries;
        CAPTURE(entries);
        bytes pk(32), dh1(32), dh2(32);
        for (const char* who : {"R", "E", "S"}) {
            const std::string sk_name = std::string("sk") + who + "m";
            const std::string pk_name = std::string("pk") + who + "m";
            if (!v.contains(sk_name)) {
                continue;
            }
            REQUIRE(crypto_scalarmult_base(pk.data(), from_hex(v[sk_name].get<std::string>()).data()) == 0);
            CHECK(pk == from_hex(v[pk_name].get<std::string>()));
        }
        CHECK(from_hex(v["enc"].get<std::string>()) == from_hex(v["pkEm"].get<std::string>()));
        const auto skE = from_hex(v["skEm"].get<std::string>());
        const auto skR = from_hex(v["skRm"].get<std::string>());
        REQUIRE(crypto_scalarmult(dh1.data(), skE.data(), from_hex(v["pkRm"].get<std::string>()).data()) == 0);
        REQUIRE(crypto_scalarmult(dh2.data(), skR.data(), from_hex(v["pkEm"].get<std::string>()).data()) == 0);
        CHECK(dh1 == dh2);

        // The relay, given skRm in a key file, publishes pkRm and opens seals to it.
        if (entries == 1) {
            const auto path = dir.file("rfc9180.json");
            const std::string text = R"({"v":1,"alg":"x25519-sealedbox","sk":")" + b64(skR) + R"(","exp":)" +
                                     std::to_string(t0 + 3600) + "}";
            {
                std::ofstream out(path);
                out << text;
            }
            REQUIRE(::chmod(path.c_str(), 0600) == 0);
            const auto key = crypto::relay_key::load_file(path);
            CHECK(bytes(key.pk().begin(), key.pk().end()) == from_hex(v["pkRm"].get<std::string>()));
            std::string out(5, '\0');
            CHECK(key.open(raw_seal(key.pk(), "hello"),
                           std::span(reinterpret_cast<unsigned char*>(out.data()), out.size())));
            CHECK(out == "hello");
        }
    }
    CHECK(entries == 32);
}
