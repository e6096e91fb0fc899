// What opening a seal or a grant leaves on the calling thread's stack.
//
// libsodium 1.0.18's secretbox open decrypts the first 32 bytes of a payload
// into a stack buffer it does not wipe (crypto/seal.cpp), so check() and
// grant_checker::open() wipe the stack below their own frame after the open
// (wipe_stack_below, crypto/secret.hpp). These tests fill the stack below the
// test's frame with a pattern, run one call, and read the same stack back: no
// piece of the key may be there, and the open may not have written deeper
// than the wipe reaches. Checked to fail: with the wipe cut to 16 bytes the
// refused seal's key is found, and both depth checks fail below 2.6 KiB.

#include <doctest/doctest.h>

#include <algorithm>
#include <cstddef>
#include <cstring>
#include <string_view>

#include "crypto/grant.hpp"
#include "crypto/secret.hpp"
#include "test_support.hpp"

using namespace byok;
using namespace byok::test;

namespace {

// The stack looked at: 64 KiB below the frame that calls paint() and
// scan(), far deeper than any open goes.
constexpr std::size_t area_bytes = 64 * 1024;
constexpr unsigned char pattern = 0xA5;

// 8 KiB more than scan() reads, so that scan()'s area lies within it
// whatever either frame holds besides.
[[gnu::noinline]] void paint() {
    unsigned char area[area_bytes + 8192];
    unsigned char* p = area;
    __asm__ __volatile__("" : "+r"(p));
    std::memset(p, pattern, sizeof area);
    __asm__ __volatile__("" : : "r"(p) : "memory");  // the stores stay
}

struct stack_view {
    bool holds_key = false;   // some 12 bytes of the key, anywhere in the area
    std::size_t depth = 0;    // how far below the caller's frame the pattern was overwritten
};

// Reads the area paint() filled (the same frame size at the same depth).
// Nothing may be called between the call under test and this one.
[[gnu::noinline]] stack_view scan(std::string_view key) {
    unsigned char area[area_bytes];
    unsigned char* p = area;
    __asm__ __volatile__("" : "+r"(p) : : "memory");  // what the frame holds is unknown to the compiler
    stack_view v;
    // area[0] is the deepest byte: the first one that changed gives the depth.
    const auto* changed = std::find_if(p, p + area_bytes, [](unsigned char c) { return c != pattern; });
    v.depth = static_cast<std::size_t>(p + area_bytes - changed);
    constexpr std::size_t piece = 12;
    for (std::size_t at = 0; at + piece <= key.size() && !v.holds_key; ++at) {
        const std::string_view needle = key.substr(at, piece);
        v.holds_key = std::search(p, p + area_bytes, needle.begin(), needle.end()) != p + area_bytes;
    }
    return v;
}

// A key long enough that pieces of it are unmistakable.
constexpr std::string_view long_key = "sk-stack-residue-ABCDEFGHIJKLMNOPQRSTUVWXYZ-0123456789";

}  // namespace

TEST_CASE("control: libsodium's seal open by itself leaves a piece of the key on the stack") {
    // Without this the tests below could not tell a wiped stack from a scan
    // that finds nothing. libsodium 1.0.18 (Debian 12) leaves the first 32
    // bytes of the payload, {"key":" and 24 bytes of the key.
    relay_fixture f;
    const auto box = f.seal(payload(long_key));
    bytes out(box.size() - crypto_box_SEALBYTES);
    REQUIRE(f.key().open(f.seal(payload(long_key)), out));  // once before: binding the symbol has frames of its own
    paint();
    const bool opened = f.key().open(box, out);
    const stack_view v = scan(long_key);
    REQUIRE(opened);
    MESSAGE("crypto_box_seal_open reached " << v.depth << " bytes below the caller");
    CHECK(v.holds_key);
    CHECK(v.depth <= crypto::stack_wipe_bytes);
}

TEST_CASE("a sealed-box check leaves nothing of the key on the stack, opened or refused") {
    relay_fixture f;
    const std::string accepted = f.seal_header_for(payload(long_key));
    paint();
    const auto r = f.check(accepted);
    const stack_view v = scan(long_key);
    REQUIRE(r.ok());
    CHECK(r.key().value() == long_key);
    MESSAGE("check() reached " << v.depth << " bytes below the caller");
    CHECK_FALSE(v.holds_key);

    // Opened, then refused (the body does not match): the payload was decrypted all the same.
    const std::string mismatched = f.seal_header_for(payload(long_key));
    paint();
    const auto m = f.check(mismatched, method, path, "another body");
    const stack_view w = scan(long_key);
    CHECK_FALSE(m.ok());
    CHECK_FALSE(w.holds_key);
}

TEST_CASE("an HPKE check leaves nothing of the key on the stack") {
    relay_fixture f;
    REQUIRE(f.key().has_hpke());
    const std::string h = header(f.key().hpke_kid(), hpke_seal(f, payload(long_key)));
    bytes box = hpke_seal(f, payload(long_key));
    bytes out(box.size() - crypto::hpke::n_enc - crypto::hpke::n_t);
    REQUIRE(f.key().open_hpke(box, out));  // once before, as above
    paint();
    const bool opened = f.key().open_hpke(box, out);
    const stack_view raw = scan(long_key);
    REQUIRE(opened);
    MESSAGE("open_hpke reached " << raw.depth << " bytes below the caller");
    CHECK(raw.depth <= crypto::stack_wipe_bytes);

    paint();
    const auto r = f.check(h);
    const stack_view v = scan(long_key);
    REQUIRE(r.ok());
    CHECK(r.key().value() == long_key);
    CHECK_FALSE(v.holds_key);
}

TEST_CASE("a grant open leaves nothing of the key on the stack") {
    relay_fixture f;
    crypto::grant_checker grants{crypto::seal_policy{}, f.checker.replay()};
    const auto app = crypto::es256_key::generate();
    crypto::grant_scope scope;
    scope.provider = "openai";
    scope.paths = {"/v1/chat/completions"};
    scope.origin = "https://app.example";
    scope.iat = t0;
    scope.exp = t0 + 1800;
    scope.cnf = app.point();
    const std::string token = crypto::make_grant_token(f.key(), scope, long_key);
    const std::string proof = crypto::make_proof(app, method, path, t0, "c3RhY2stcmVzaWR1ZS1qdGk", crypto::sha256(body));
    const auto digest = crypto::sha256(body);
    const std::string auth = "Grant " + token;
    const crypto::grant_request_facts facts{auth, proof, 1, method, path, &digest};
    paint();
    const auto r = grants.open(*f.ring, facts, t0);
    const stack_view v = scan(long_key);
    REQUIRE(r.ok());
    MESSAGE("grant_checker::open reached " << v.depth << " bytes below the caller");
    CHECK_FALSE(v.holds_key);
}
