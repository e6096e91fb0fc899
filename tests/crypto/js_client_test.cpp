// A seal made by a client nobody on this team wrote: libsodium-wrappers from
// npm, run under Node at test time. If node or the package is missing the
// test fails: a skipped interoperability test proves nothing.
#include "crypto/seal.hpp"

#include <doctest/doctest.h>

#include <cstdio>
#include <string>
#include <vector>

#include <sys/wait.h>

#include "tests/crypto/test_support.hpp"

using namespace byok;
using namespace byok::test;

namespace {

struct run_result {
    int status = -1;
    std::string out;
};

// Runs `cmd` under /bin/sh and returns its exit status and standard output.
run_result run(const std::string& cmd) {
    run_result r;
    FILE* p = ::popen(cmd.c_str(), "r");
    REQUIRE_MESSAGE(p != nullptr, "popen failed for: " << cmd);
    char buf[4096];
    std::size_t n = 0;
    while ((n = std::fread(buf, 1, sizeof buf, p)) > 0) {
        r.out.append(buf, n);
    }
    const int st = ::pclose(p);
    r.status = WIFEXITED(st) ? WEXITSTATUS(st) : -1;
    return r;
}

std::string hex(std::string_view s) {
    std::string out(s.size() * 2 + 1, '\0');
    sodium_bin2hex(out.data(), out.size(), reinterpret_cast<const unsigned char*>(s.data()), s.size());
    out.pop_back();
    return out;
}

// Every argument here is built by the test from a fixed character set; none
// contains a single quote.
std::string quote(std::string_view s) {
    REQUIRE(s.find('\'') == std::string_view::npos);
    return "'" + std::string(s) + "'";
}

std::string js_seal(const crypto::relay_key& key, std::string_view k, std::string_view m, std::string_view p,
                    std::string_view b, std::int64_t iat) {
    const std::string source = BYOK_SOURCE_DIR;
    const std::string cmd = "node " + quote(source + "/tests/crypto/js_seal.mjs") + " " + quote(source + "/web") +
                            " " + quote(key.kid()) + " " + quote(crypto::base64url_encode(key.pk())) + " " +
                            quote(k) + " " + quote(m) + " " + quote(p) + " " + quote(hex(b)) + " " +
                            std::to_string(iat) + " 2>&1";
    const auto r = run(cmd);
    INFO("command: " << cmd);
    INFO("output: " << r.out);
    REQUIRE_MESSAGE(r.status == 0, "node or libsodium-wrappers is missing or failed (npm ci in web/ installs it)");
    REQUIRE(r.out.size() > 8);
    REQUIRE(r.out.back() == '\n');
    return r.out.substr(0, r.out.size() - 1);
}

}  // namespace

TEST_CASE("a seal made by libsodium-wrappers under Node opens and yields the key") {
    relay_fixture f;
    const std::string b = "{\"model\":\"gpt-4o-mini\",\"messages\":[{\"role\":\"user\",\"content\":\"h\xc3\xa9llo \xe2\x9c\x93\"}]}";
    const std::string p = "/openai/v1/chat/completions?api-version=2024-06-01&x=y";
    const std::string h = js_seal(f.key(), api_key, "POST", p, b, f.now);
    CHECK(h.rfind("Sealed " + f.key().kid() + ".", 0) == 0);

    // The same request is accepted once; anything else about it is refused.
    CHECK(error_of(f.check(h, "POST", "/openai/v1/chat/completions", b)) == crypto::seal_error::seal_mismatch);
    CHECK(error_of(f.check(h, "POST", p, b + " ")) == crypto::seal_error::seal_mismatch);
    const auto r = f.check(h, "POST", p, b);
    REQUIRE(r.ok());
    CHECK(r.key().value() == api_key);
    CHECK(error_of(f.check(h, "POST", p, b)) == crypto::seal_error::seal_replayed);
}

TEST_CASE("libsodium-wrappers seals: empty body, and a seal to the second key of a keyring") {
    std::vector<crypto::relay_key> keys;
    keys.push_back(crypto::relay_key::generate(t0));
    keys.push_back(crypto::relay_key::generate(t0 - 86400));
    const auto ring = crypto::keyring::from_keys(std::move(keys));
    crypto::seal_checker checker({}, 64);
    const auto empty_digest = crypto::sha256(std::string_view());

    const std::string h = js_seal(ring->keys()[1], "sk-ant-api03-JS_client-key", "GET", "/anthropic/v1/models", "",
                                  t0 - 5);
    const auto r = checker.check(*ring, {"GET", "/anthropic/v1/models", &empty_digest, h}, t0);
    REQUIRE(r.ok());
    CHECK(r.key().value() == "sk-ant-api03-JS_client-key");

    // Sealed to key 1 but labelled with key 0's kid: does not open there.
    const std::string other = js_seal(ring->keys()[1], "sk-x-1234567890", "GET", "/anthropic/v1/models", "", t0);
    const std::string relabelled = "Sealed " + ring->keys()[0].kid() + other.substr(other.find('.'));
    CHECK(error_of(checker.check(*ring, {"GET", "/anthropic/v1/models", &empty_digest, relabelled}, t0)) ==
          crypto::seal_error::bad_seal);
}
