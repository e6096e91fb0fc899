#include "relay/router.hpp"

#include <doctest/doctest.h>

#include "relay/config.hpp"

using namespace byok::relay;

namespace {
std::shared_ptr<const config> test_config(const char* extra = "") {
    std::string text = std::string(R"({"key_files":["/k"],"web_root":"/srv/web")") + extra + "}";
    return parse_config(text, "");
}
}  // namespace

TEST_CASE("is_plain_path accepts plain absolute paths") {
    for (const char* p : {"/", "/v1/chat/completions", "/v1/models/gpt-4o", "/a-b_c~d.e", "/v1/x:y@z", "/a%20b"}) {
        CHECK_MESSAGE(is_plain_path(p), p);
    }
}

TEST_CASE("is_plain_path refuses what a provider could normalise into another path") {
    for (const char* p : {"", "v1/x", "/v1/../x", "/v1/./x", "/..", "/.", "/v1/%2e%2e/x", "/v1/%2E%2E/x",
                          "/v1/.%2e/x", "/v1%2fx", "/v1%2Fx", "/v1%5cx", "/v1\\x", "/v1//x", "/v1/x%00",
                          "/v1/x%", "/v1/x%2", "/v1/x%zz", "/v1/x y", "/v1/x\r\n", "/v1/\x80"}) {
        CHECK_MESSAGE(!is_plain_path(p), p);
    }
}

TEST_CASE("classify: fixed routes, web, sealed provider paths") {
    const auto cfg = test_config();
    CHECK(classify(*cfg, "/v1/keys").kind == route_kind::keys);
    CHECK(classify(*cfg, "/v1/keys?x=1").kind == route_kind::keys);
    CHECK(classify(*cfg, "/healthz").kind == route_kind::healthz);
    CHECK(classify(*cfg, "/").kind == route_kind::root);
    const auto web = classify(*cfg, "/web/demo/index.html");
    CHECK(web.kind == route_kind::web);
    CHECK(web.web_path == "demo/index.html");
    CHECK(classify(*cfg, "/web/../etc/passwd").kind == route_kind::unknown);

    const auto r = classify(*cfg, "/openai/v1/chat/completions?stream=true");
    REQUIRE(r.kind == route_kind::sealed);
    CHECK(r.prov->name == "openai");
    CHECK(r.rest == "/v1/chat/completions?stream=true");
    CHECK(r.rest_path == "/v1/chat/completions");
    CHECK(upstream_target(*r.prov, r.rest) == "/v1/chat/completions?stream=true");
    CHECK(classify(*cfg, "/openai/v1/models/gpt-4o").kind == route_kind::sealed);
    CHECK(classify(*cfg, "/anthropic/v1/messages").kind == route_kind::sealed);
}

TEST_CASE("classify: the open-proxy guard") {
    const auto cfg = test_config();
    for (const char* t : {"/openai/v1/files", "/openai/v1/chat/completionsX", "/openai/../v1/chat/completions",
                          "/openai/v1/chat/completions/../../files", "/openai/v1/chat/%2e%2e/files",
                          "/openai//v1/chat/completions", "http://evil.example/openai/v1/chat/completions",
                          "//evil.example/openai/v1/chat/completions", "evil.example:443", "*",
                          "/nope/v1/chat/completions", "/openai", "/openai/", "/OPENAI/v1/chat/completions",
                          "/openai/v1/chat/completions?x=\x01", "/openai/v1/chat/completions#frag"}) {
        CHECK_MESSAGE(classify(*cfg, t).kind == route_kind::unknown, t);
    }
}

TEST_CASE("a provider base path is kept in front of the forwarded path") {
    const auto cfg = test_config(
        R"(,"providers":{"groq":{"base_url":"https://api.groq.com/openai/","paths":["/v1/chat/completions"]}})");
    const auto r = classify(*cfg, "/groq/v1/chat/completions");
    REQUIRE(r.kind == route_kind::sealed);
    CHECK(upstream_target(*r.prov, r.rest) == "/openai/v1/chat/completions");
    CHECK(r.prov->host == "api.groq.com");
    CHECK(r.prov->host_header == "api.groq.com");
}

TEST_CASE("public_path_prefix: routed without it, sealed with it, the client's bytes kept") {
    const auto c = parse_config(R"({"key_files":["k"],"public_path_prefix":"/relay"})", "");
    const route r = classify(*c, "/relay/openai/v1/models/ft%3Agpt-4o%7Eabc?x=1");
    REQUIRE(r.kind == route_kind::sealed);
    CHECK(r.rest == "/v1/models/ft%3Agpt-4o%7Eabc?x=1");
    CHECK(sealed_path(*c, "/relay/openai/v1/models/ft%3Agpt-4o%7Eabc") == "/relay/openai/v1/models/ft%3Agpt-4o%7Eabc");
    CHECK(classify(*c, "/relay/v1/keys").kind == route_kind::keys);
    // A proxy that strips the prefix itself: routed as is, the prefix put back for the seal.
    CHECK(classify(*c, "/openai/v1/chat/completions").kind == route_kind::sealed);
    CHECK(sealed_path(*c, "/openai/v1/chat/completions") == "/relay/openai/v1/chat/completions");
    // Only the whole segment counts.
    CHECK(classify(*c, "/relayx/openai/v1/chat/completions").kind == route_kind::unknown);
    CHECK(sealed_path(*c, "/relayx/openai/v1/models") == "/relay/relayx/openai/v1/models");
}
