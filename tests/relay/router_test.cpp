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
    for (const char* t : {"/openai/v1/fine_tuning/jobs", "/openai/v1/chat/completionsX", "/openai/../v1/chat/completions",
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

TEST_CASE("path_allowed: literal prefixes, one {param} segment, a :verb that ends the path") {
    struct c {
        const char* entry;
        const char* path;
        bool ok;
    };
    for (const c& t : {
             c{"/v1/chat/completions", "/v1/chat/completions", true},
             c{"/v1/audio", "/v1/audio/transcriptions", true},
             c{"/v1/chat/completions", "/v1/chat/completionsX", false},
             c{"/v1/chat/completions", "/v1/chat", false},
             c{"/v1beta/models/{model}:generateContent", "/v1beta/models/gemini-2.0-flash:generateContent", true},
             c{"/v1beta/models/{model}:generateContent", "/v1beta/models/gemini-2.0-flash:generateContentX", false},
             c{"/v1beta/models/{model}:generateContent", "/v1beta/models/gemini:generateContent/x", false},
             c{"/v1beta/models/{model}:generateContent", "/v1beta/models/:generateContent", false},
             c{"/v1beta/models/{model}:generateContent", "/v1beta/models/a:b:generateContent", false},
             c{"/v1beta/models/{model}:generateContent", "/v1beta/models/a%41:generateContent", false},
             c{"/v1beta/models/{model}:generateContent", "/v1beta/models/..:generateContent", false},
             c{"/v1beta/models/{model}:generateContent", "/v1beta/models/a@b:generateContent", false},
             c{"/v1beta/models/{model}:generateContent", "/v1beta/models/gemini", false},
             c{"/v1beta/models/{model}:generateContent", "/v1beta/models", false},
             c{"/v1beta/models/{model}:generateContent", "/v1beta/models/x/y:generateContent", false},
             c{"/openai/deployments/{d}/chat/completions", "/openai/deployments/gpt-4o_1/chat/completions", true},
             c{"/openai/deployments/{d}/chat/completions", "/openai/deployments/gpt-4o/embeddings", false},
             c{"/openai/deployments/{d}/chat/completions", "/openai/deployments//chat/completions", false},
             c{"/openai/deployments/{d}/chat/completions", "/openai/deployments/a:b/chat/completions", false},
             c{"/openai/deployments/{d}/chat/completions", "/openai/deployments/a;b/chat/completions", false},
             c{"/openai/deployments/{d}/chat/completions", "/openai/deployments/chat/completions", false},
         }) {
        CHECK_MESSAGE(path_allowed(t.entry, t.path) == t.ok, t.entry, " ", t.path);
    }
}

TEST_CASE("classify: gemini's native :verb paths and the open-proxy guard with patterns") {
    const auto cfg = test_config(
        R"(,"providers":{"azure":{"base_url":"https://r.openai.azure.com","auth":"api-key",
            "paths":["/openai/deployments/{deployment}/chat/completions"]}})");
    const auto g = classify(*cfg, "/gemini/v1beta/models/gemini-2.0-flash:streamGenerateContent?alt=sse");
    REQUIRE(g.kind == route_kind::sealed);
    CHECK(g.prov->name == "gemini");
    CHECK(upstream_target(*g.prov, g.rest) == "/v1beta/models/gemini-2.0-flash:streamGenerateContent?alt=sse");
    CHECK(classify(*cfg, "/gemini/v1beta/openai/chat/completions").kind == route_kind::sealed);
    const auto a = classify(*cfg, "/azure/openai/deployments/gpt-4o/chat/completions?api-version=2024-10-21");
    REQUIRE(a.kind == route_kind::sealed);
    CHECK(a.rest == "/openai/deployments/gpt-4o/chat/completions?api-version=2024-10-21");
    for (const char* t : {"/gemini/v1beta/models/x:deleteEverything", "/gemini/v1beta/models/x",
                          "/gemini/v1beta/models/..:generateContent", "/gemini/v1beta/models/.:generateContent",
                          "/gemini/v1beta/models/%2e%2e:generateContent", "/gemini/v1beta/models/a%2fb:generateContent",
                          "/gemini/v1beta/models/a%3Agenerate:generateContent",
                          "/gemini/v1beta/models/x:generateContent/../../files", "/gemini/v1beta/tunedModels",
                          "/gemini/v1beta/models/x%3AgenerateContent", "/gemini/v1beta/models/x:generateContent#f",
                          "/gemini/v1beta/files", "/gemini/upload/v1beta/files",
                          "/azure/openai/deployments/../chat/completions",
                          "/azure/openai/deployments/%2e%2e/chat/completions",
                          "/azure/openai/deployments/a%2fb/chat/completions",
                          "/azure/openai/deployments/a/b/chat/completions",
                          "/azure/openai/deployments//chat/completions", "/azure/openai/deployments/x/files"}) {
        CHECK_MESSAGE(classify(*cfg, t).kind == route_kind::unknown, t);
    }
}

TEST_CASE("classify: an upload path's body limit") {
    const auto cfg = test_config();
    CHECK(classify(*cfg, "/openai/v1/chat/completions").body_limit == 8u << 20);
    CHECK(classify(*cfg, "/openai/v1/audio/transcriptions").body_limit == 26u << 20);
    CHECK(classify(*cfg, "/openai/v1/audio/speech").body_limit == 8u << 20);
    CHECK(classify(*cfg, "/openai/v1/files").body_limit == 64u << 20);
}
