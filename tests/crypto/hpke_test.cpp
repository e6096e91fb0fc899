// HPKE (RFC 9180), base mode, DHKEM(X25519, HKDF-SHA256) / HKDF-SHA256 /
// AES-128-GCM: the RFC's published vectors (tests/vectors, see SOURCES.md),
// then what must not open.
#include "crypto/hpke.hpp"

#include <doctest/doctest.h>

#include <atomic>
#include <cstdio>
#include <fstream>
#include <string>
#include <thread>
#include <utility>
#include <vector>

#include <sys/wait.h>

#include <nlohmann/json.hpp>

#include "crypto/seal.hpp"
#include "tests/crypto/test_support.hpp"

using namespace byok;
using namespace byok::test;
namespace hpke = byok::crypto::hpke;

namespace {

const nlohmann::json& rfc_vectors() {
    static const nlohmann::json doc = [] {
        const std::string path = std::string(BYOK_VECTORS_DIR) + "/hpke-rfc9180-test-vectors.json";
        std::ifstream in(path);
        REQUIRE_MESSAGE(in.good(), "cannot read " << path);
        return nlohmann::json::parse(in);
    }();
    return doc;
}

// The vectors of this suite in base mode.
std::vector<nlohmann::json> suite_vectors() {
    std::vector<nlohmann::json> out;
    for (const auto& v : rfc_vectors()) {
        if (v["mode"] == 0 && v["kem_id"] == hpke::kem_id && v["kdf_id"] == hpke::kdf_id &&
            v["aead_id"] == hpke::aead_id) {
            out.push_back(v);
        }
    }
    return out;
}

// (from_hex of "" would hand libsodium a null pointer: an empty exporter context is no bytes.)
bytes hex(const nlohmann::json& v) {
    const auto text = v.get<std::string>();
    return text.empty() ? bytes() : from_hex(text);
}

bytes to_bytes(std::span<const unsigned char> s) { return bytes(s.begin(), s.end()); }

hpke::public_key as_pk(const bytes& b) {
    REQUIRE(b.size() == hpke::n_pk);
    hpke::public_key pk{};
    std::copy(b.begin(), b.end(), pk.begin());
    return pk;
}

hpke::schedule_context context_for(std::string_view info) { return hpke::schedule_context::base(info); }

// One fresh single-shot seal: enc, ciphertext, plaintext.
struct one_seal {
    hpke::private_key sk_r = hpke::private_key::generate();
    hpke::schedule_context ctx = context_for("byok-relay v1 test");
    bytes aad = as_bytes("");
    bytes pt = as_bytes(R"({"key":"sk-test","iat":1800000000})");
    bytes enc;
    bytes ct;
    one_seal() {
        auto s = hpke::sender::setup(sk_r.pk(), ctx);
        REQUIRE(s.has_value());
        enc = bytes(s->enc().begin(), s->enc().end());
        ct = std::move(*s).seal(aad, pt);
    }
    // Opens (enc, ct) as a single-shot recipient; the plaintext, or nullopt.
    std::optional<bytes> open(const bytes& e, const bytes& c, const hpke::private_key& key,
                              const hpke::schedule_context& with) const {
        auto r = hpke::recipient::setup(e, key, with);
        if (!r) {
            return std::nullopt;
        }
        bytes out(c.size() >= hpke::n_t ? c.size() - hpke::n_t : 0, 0xAA);
        if (!std::move(*r).open(aad, c, out)) {
            CHECK(std::all_of(out.begin(), out.end(), [](unsigned char b) { return b == 0; }));
            return std::nullopt;
        }
        return out;
    }
    std::optional<bytes> open(const bytes& e, const bytes& c) const { return open(e, c, sk_r, ctx); }
};

}  // namespace

TEST_CASE("RFC 9180 vectors, base mode, this suite: keys, shared secret, key schedule, every encryption, exports") {
    const auto vectors = suite_vectors();
    REQUIRE(!vectors.empty());
    std::size_t encryptions = 0;
    for (const auto& v : vectors) {
        // DeriveKeyPair from the vector's ikm, for both sides.
        const auto sk_r = hpke::private_key::derive(hex(v["ikmR"]));
        const auto sk_e = hpke::private_key::derive(hex(v["ikmE"]));
        CHECK(to_bytes(sk_r.secret()) == hex(v["skRm"]));
        CHECK(to_bytes(sk_r.pk()) == hex(v["pkRm"]));
        CHECK(to_bytes(sk_e.secret()) == hex(v["skEm"]));
        CHECK(to_bytes(sk_e.pk()) == hex(v["enc"]));

        // Both halves of the KEM.
        const bytes enc = hex(v["enc"]);
        const auto decapped = hpke::decap(enc, sk_r);
        REQUIRE(decapped.has_value());
        CHECK(to_bytes(decapped->span()) == hex(v["shared_secret"]));
        const auto encapped = hpke::encap(sk_r.pk(), sk_e);
        REQUIRE(encapped.has_value());
        CHECK(to_bytes(encapped->span()) == hex(v["shared_secret"]));

        // The key schedule.
        const bytes info = hex(v["info"]);
        const auto ctx = hpke::schedule_context::base(info);
        CHECK(to_bytes(ctx.bytes()) == hex(v["key_schedule_context"]));
        const auto s = hpke::key_schedule(decapped->span(), ctx);
        CHECK(to_bytes(s.key()) == hex(v["key"]));
        CHECK(to_bytes(s.base_nonce()) == hex(v["base_nonce"]));
        CHECK(to_bytes(s.exporter_secret()) == hex(v["exporter_secret"]));

        // Every encryption, in sequence, on both sides.
        auto r = hpke::recipient::setup(enc, sk_r, ctx);
        auto snd = hpke::sender::setup(as_pk(hex(v["pkRm"])), ctx, sk_e);
        REQUIRE(r.has_value());
        REQUIRE(snd.has_value());
        CHECK(to_bytes(snd->enc()) == enc);
        for (const auto& e : v["encryptions"]) {
            const bytes aad = hex(e["aad"]);
            const bytes ct = hex(e["ct"]);
            const bytes pt = hex(e["pt"]);
            CHECK(snd->seal_next(aad, pt) == ct);
            bytes out(ct.size() - hpke::n_t);
            REQUIRE(r->open_next(aad, ct, out));
            CHECK(out == pt);
            ++encryptions;
        }
        for (const auto& x : v["exports"]) {
            const bytes exporter_context = hex(x["exporter_context"]);
            const auto length = x["L"].get<std::size_t>();
            CHECK(to_bytes(r->export_secret(exporter_context, length).span()) == hex(x["exported_value"]));
            CHECK(to_bytes(snd->export_secret(exporter_context, length).span()) == hex(x["exported_value"]));
        }
    }
    MESSAGE(vectors.size() << " vector(s), " << encryptions << " encryptions");
    CHECK(encryptions >= 257);
}

TEST_CASE("RFC 9180 vector: out of sequence, or opened twice, a message does not open") {
    const auto v = suite_vectors().at(0);
    const auto sk_r = hpke::private_key::derive(hex(v["ikmR"]));
    const auto ctx = hpke::schedule_context::base(hex(v["info"]));
    const auto& e1 = v["encryptions"][1];
    auto r = hpke::recipient::setup(hex(v["enc"]), sk_r, ctx);
    REQUIRE(r.has_value());
    const bytes ct1 = hex(e1["ct"]);
    bytes out(ct1.size() - hpke::n_t);
    CHECK_FALSE(r->open_next(hex(e1["aad"]), ct1, out));  // sequence 1 at sequence 0
    const auto& e0 = v["encryptions"][0];
    const bytes ct0 = hex(e0["ct"]);
    bytes out0(ct0.size() - hpke::n_t);
    REQUIRE(r->open_next(hex(e0["aad"]), ct0, out0));
    CHECK_FALSE(r->open_next(hex(e0["aad"]), ct0, out0));  // sequence 0 again at sequence 1
    CHECK(r->open_next(hex(e1["aad"]), ct1, out));
}

TEST_CASE("a single-shot seal opens once; the context is consumed") {
    one_seal s;
    auto r = hpke::recipient::setup(s.enc, s.sk_r, s.ctx);
    REQUIRE(r.has_value());
    bytes out(s.ct.size() - hpke::n_t);
    REQUIRE(std::move(*r).open(s.aad, s.ct, out));
    CHECK(out == s.pt);
    // NOLINTNEXTLINE(bugprone-use-after-move): what a second use does is the point
    CHECK_FALSE(r->open_next(s.aad, s.ct, out));
    CHECK_THROWS(r->export_secret({}, 32));
}

TEST_CASE("every truncation of enc || ct does not open") {
    one_seal s;
    bytes all = s.enc;
    all.insert(all.end(), s.ct.begin(), s.ct.end());
    for (std::size_t n = 0; n < all.size(); ++n) {
        CAPTURE(n);
        const bytes e(all.begin(), all.begin() + static_cast<std::ptrdiff_t>(std::min(n, hpke::n_enc)));
        const bytes c(all.begin() + static_cast<std::ptrdiff_t>(std::min(n, hpke::n_enc)),
                      all.begin() + static_cast<std::ptrdiff_t>(n));
        CHECK_FALSE(s.open(e, c).has_value());
    }
    CHECK(s.open(s.enc, s.ct) == s.pt);
}

TEST_CASE("one trailing extra byte does not open") {
    one_seal s;
    for (const unsigned char extra : {0x00, 0x01, 0xff}) {
        bytes longer = s.ct;
        longer.push_back(extra);
        CHECK_FALSE(s.open(s.enc, longer).has_value());
    }
    CHECK(s.open(s.enc, s.ct) == s.pt);
}

TEST_CASE("one flipped bit anywhere in enc or ct does not open") {
    one_seal s;
    for (std::size_t i = 0; i < s.enc.size() + s.ct.size(); ++i) {
        for (int bit = 0; bit < 8; ++bit) {
            bytes e = s.enc;
            bytes c = s.ct;
            auto& byte = i < e.size() ? e[i] : c[i - e.size()];
            byte ^= static_cast<unsigned char>(1U << bit);
            CAPTURE(i);
            CAPTURE(bit);
            CHECK_FALSE(s.open(e, c).has_value());
        }
    }
    CHECK(s.open(s.enc, s.ct) == s.pt);
}

TEST_CASE("the wrong private key, info or aad does not open") {
    one_seal s;
    const auto other = hpke::private_key::generate();
    CHECK_FALSE(s.open(s.enc, s.ct, other, s.ctx).has_value());
    CHECK_FALSE(s.open(s.enc, s.ct, s.sk_r, context_for("byok-relay v1 tesT")).has_value());
    CHECK_FALSE(s.open(s.enc, s.ct, s.sk_r, context_for("")).has_value());
    auto r = hpke::recipient::setup(s.enc, s.sk_r, s.ctx);
    REQUIRE(r.has_value());
    bytes out(s.ct.size() - hpke::n_t);
    CHECK_FALSE(r->open_next(as_bytes("x"), s.ct, out));
    CHECK(s.open(s.enc, s.ct) == s.pt);
}

TEST_CASE("a low-order enc (all-zero shared secret) is refused at setup; so is a low-order recipient key") {
    const auto sk = hpke::private_key::generate();
    const auto ctx = context_for("x");
    // u = 0 and u = 1 and the order-8 points of Curve25519: X25519 gives all zeros for each.
    const std::vector<bytes> low_order = {
        bytes(32, 0),
        from_hex("0100000000000000000000000000000000000000000000000000000000000000"),
        from_hex("e0eb7a7c3b41b8ae1656e3faf19fc46ada098deb9c32b1fd866205165f49b800"),
        from_hex("5f9c95bca3508c24b1d0b1559c83ef5b04445cc4581c8e86d8224eddd09f1157"),
        from_hex("ecffffffffffffffffffffffffffffffffffffffffffffffffffffffffffff7f"),
    };
    for (const auto& enc : low_order) {
        CAPTURE(b64(enc));
        CHECK_FALSE(hpke::decap(enc, sk).has_value());
        CHECK_FALSE(hpke::recipient::setup(enc, sk, ctx).has_value());
        CHECK_FALSE(hpke::sender::setup(as_pk(enc), ctx).has_value());
    }
    CHECK_FALSE(hpke::recipient::setup(bytes(31, 9), sk, ctx).has_value());
    CHECK_FALSE(hpke::recipient::setup(bytes(33, 9), sk, ctx).has_value());
    CHECK(hpke::recipient::setup(hpke::private_key::generate().pk(), sk, ctx).has_value());  // control
}

TEST_CASE("private_key::from_bytes takes exactly 32 bytes and gives the same public key as derive") {
    const auto k = hpke::private_key::derive(as_bytes("some input keying material, 32 b"));
    auto copy = crypto::secret_bytes::allocate(32);
    std::copy(k.secret().begin(), k.secret().end(), copy.data());
    const auto again = hpke::private_key::from_bytes(std::move(copy));
    REQUIRE(again.has_value());
    CHECK(again->pk() == k.pk());
    CHECK_FALSE(hpke::private_key::from_bytes(crypto::secret_bytes::allocate(31)).has_value());
    CHECK_FALSE(hpke::private_key::from_bytes(crypto::secret_bytes::allocate(33)).has_value());
    CHECK(hpke::private_key::generate().pk() != hpke::private_key::generate().pk());
}

// ---- seals made in JavaScript, opened by the relay's checker ------------------

namespace {

// Runs `cmd` under /bin/sh: exit status and standard output.
std::pair<int, std::string> run(const std::string& cmd) {
    FILE* p = ::popen(cmd.c_str(), "r");
    REQUIRE_MESSAGE(p != nullptr, "popen failed for: " << cmd);
    std::string out;
    char buf[4096];
    std::size_t n = 0;
    while ((n = std::fread(buf, 1, sizeof buf, p)) > 0) {
        out.append(buf, n);
    }
    const int st = ::pclose(p);
    return {WIFEXITED(st) ? WEXITSTATUS(st) : -1, out};
}

// The Authorization value web/test/lib/hpke-seal.mjs prints for `payload`
// sealed to (kid, pk): `mode` "core" is @hpke/core from npm, "lib" is
// web/byok-relay.js. Every argument is base64url or hex: no shell quoting issue.
std::string node_hpke_seal(std::string_view mode, std::string_view kid, const crypto::public_key& pk,
                           std::string_view payload) {
    std::string payload_hex(payload.size() * 2 + 1, '\0');
    sodium_bin2hex(payload_hex.data(), payload_hex.size(), reinterpret_cast<const unsigned char*>(payload.data()),
                   payload.size());
    payload_hex.pop_back();
    const std::string cmd = "node '" + std::string(BYOK_SOURCE_DIR) + "/web/test/lib/hpke-seal.mjs' " +
                            std::string(mode) + " " + std::string(kid) + " " + crypto::base64url_encode(pk) + " " +
                            payload_hex + " 2>&1";
    const auto [status, out] = run(cmd);
    INFO("command: " << cmd);
    INFO("output: " << out);
    REQUIRE_MESSAGE(status == 0, "node or @hpke/core is missing or failed (npm ci in web/ installs it)");
    REQUIRE(out.size() > 8);
    REQUIRE(out.back() == '\n');
    return out.substr(0, out.size() - 1);
}

}  // namespace

TEST_CASE("a seal made by @hpke/core (npm) and one made by web/byok-relay.js open in the relay's checker") {
    for (const std::string mode : {"core", "lib"}) {
        CAPTURE(mode);
        relay_fixture f;
        const auto& key = f.key();
        const std::string h = node_hpke_seal(mode, key.hpke_kid(), key.hpke_pk(), payload());
        CHECK(h.starts_with("Sealed " + key.hpke_kid() + "."));
        CHECK(f.checker.precheck(*f.ring, h, f.now) == std::nullopt);
        const auto r = f.check(h);
        REQUIRE(r.ok());
        CHECK(r.key().value() == api_key);
        CHECK(error_of(f.check(h)) == crypto::seal_error::seal_replayed);

        // Sealed to the HPKE key but labelled (and so with info naming) the
        // sealed-box kid: refused.
        const std::string wrong = node_hpke_seal(mode, key.kid(), key.hpke_pk(), payload());
        CHECK(error_of(f.check(wrong)) == crypto::seal_error::bad_seal);
        // Sealed under the right kid but to another relay's HPKE key: refused.
        relay_fixture g;
        const std::string other = node_hpke_seal(mode, key.hpke_kid(), g.key().hpke_pk(), payload());
        CHECK(error_of(f.check(other)) == crypto::seal_error::bad_seal);
    }
}

TEST_CASE("one private key and schedule context opened from many threads at once") {
    const auto sk = hpke::private_key::generate();
    const auto ctx = context_for("byok-relay v1 threads");
    constexpr int threads = 8;
    constexpr int per_thread = 50;
    std::vector<std::vector<std::pair<bytes, bytes>>> seals(threads);
    for (auto& list : seals) {
        for (int i = 0; i < per_thread; ++i) {
            auto s = hpke::sender::setup(sk.pk(), ctx);
            REQUIRE(s.has_value());
            bytes enc(s->enc().begin(), s->enc().end());
            list.emplace_back(std::move(enc), std::move(*s).seal({}, as_bytes("payload " + std::to_string(i))));
        }
    }
    std::atomic<int> opened{0};
    std::atomic<bool> go{false};
    std::vector<std::thread> pool;
    for (int t = 0; t < threads; ++t) {
        pool.emplace_back([&, t] {
            while (!go.load()) {
            }
            for (int i = 0; i < per_thread; ++i) {
                const auto& [enc, ct] = seals[static_cast<std::size_t>(t)][static_cast<std::size_t>(i)];
                auto r = hpke::recipient::setup(enc, sk, ctx);
                bytes out(ct.size() - hpke::n_t);
                if (r && std::move(*r).open({}, ct, out) && out == as_bytes("payload " + std::to_string(i))) {
                    opened.fetch_add(1);
                }
            }
        });
    }
    go.store(true);
    for (auto& th : pool) {
        th.join();
    }
    CHECK(opened.load() == threads * per_thread);
}
