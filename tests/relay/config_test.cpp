#include "relay/config.hpp"
#include "crypto/replay_cache.hpp"

#include <algorithm>
#include <filesystem>
#include <fstream>
#include <iterator>
#include <regex>

#include <doctest/doctest.h>

#include <unistd.h>

using namespace byok::relay;

namespace {
std::string error_of(const std::string& json) {
    try {
        (void)parse_config(json, "/etc/byok");
    } catch (const config_error& e) {
        return e.what();
    }
    return "";
}
}  // namespace

TEST_CASE("defaults and the built-in providers") {
    const auto c = parse_config(R"({"key_files":["k.json"]})", "/etc/byok");
    CHECK(c->key_files.at(0) == "/etc/byok/k.json");
    CHECK(c->listen.host == "127.0.0.1");
    CHECK(c->listen.port == 8080);
    CHECK(c->max_body_bytes == 8u << 20);
    CHECK(c->seal_max_age_s == 60);
    CHECK(c->seal_max_future_s == 30);
    const provider* openai = c->find_provider("openai");
    REQUIRE(openai != nullptr);
    CHECK(openai->tls);
    CHECK(openai->host == "api.openai.com");
    CHECK(openai->port == 443);
    CHECK(openai->auth == auth_style::bearer);
    const provider* anthropic = c->find_provider("anthropic");
    REQUIRE(anthropic != nullptr);
    CHECK(anthropic->auth == auth_style::x_api_key);
}

TEST_CASE("providers merge over the built-ins; null removes one") {
    const auto c = parse_config(
        R"({"key_files":["k"],"providers":{"anthropic":null,
            "local":{"base_url":"http://127.0.0.1:11434","auth":"bearer","paths":["/v1/chat/completions"]},
            "azure":{"base_url":"https://x.openai.azure.com:8443/openai","auth":"api-key","paths":["/deployments"]},
            "v6":{"base_url":"https://[::1]:9443","paths":["/v1"]}}})",
        "");
    CHECK(c->find_provider("anthropic") == nullptr);
    CHECK(c->find_provider("openai") != nullptr);
    const provider* local = c->find_provider("local");
    REQUIRE(local != nullptr);
    CHECK_FALSE(local->tls);
    CHECK(local->port == 11434);
    CHECK(local->host_header == "127.0.0.1:11434");
    const provider* azure = c->find_provider("azure");
    REQUIRE(azure != nullptr);
    CHECK(azure->auth == auth_style::api_key);
    CHECK(azure->base_path == "/openai");
    CHECK(azure->host_header == "x.openai.azure.com:8443");
    const provider* v6 = c->find_provider("v6");
    REQUIRE(v6 != nullptr);
    CHECK(v6->host == "::1");
    CHECK(v6->port == 9443);
    CHECK(v6->host_header == "[::1]:9443");
}

TEST_CASE("every bad setting is named in the error") {
    CHECK(error_of("{") .find("not valid JSON") != std::string::npos);
    CHECK(error_of("[]").find("must be a JSON object") != std::string::npos);
    CHECK(error_of(R"({})").find("\"key_files\"") != std::string::npos);
    CHECK(error_of(R"({"key_files":["k"],"listen":"localhost:80"})").find("\"listen\"") != std::string::npos);
    CHECK(error_of(R"({"key_files":["k"],"listen":"127.0.0.1:99999"})").find("\"listen\"") != std::string::npos);
    CHECK(error_of(R"({"key_files":["k"],"threads":0})").find("\"threads\"") != std::string::npos);
    CHECK(error_of(R"({"key_files":["k"],"max_body_bytes":"8M"})").find("\"max_body_bytes\"") != std::string::npos);
    CHECK(error_of(R"({"key_files":["k"],"allow_origins":["https://a.example/"]})").find("\"allow_origins\"") !=
          std::string::npos);
    CHECK(error_of(R"({"key_files":["k"],"trusted_proxies":["nginx"]})").find("\"trusted_proxies\"") !=
          std::string::npos);
    CHECK(error_of(R"({"key_files":["k"],"public_path_prefix":"relay"})").find("\"public_path_prefix\"") !=
          std::string::npos);
    CHECK(error_of(R"({"key_files":["k"],"seal_max_age":60})").find("\"seal_max_age\" is not a known setting") !=
          std::string::npos);
    CHECK(error_of(R"({"key_files":["k"],"rate_limit":{"requests_per_s":-1}})").find("\"rate_limit\"") !=
          std::string::npos);
    CHECK(error_of(R"({"key_files":["k"],"providers":{"x":{"base_url":"http://example.com","paths":["/v1"]}}})")
              .find("\"providers.x.base_url\"") != std::string::npos);
    CHECK(error_of(R"({"key_files":["k"],"providers":{"x":{"base_url":"ftp://h","paths":["/v1"]}}})")
              .find("\"providers.x.base_url\"") != std::string::npos);
    CHECK(error_of(R"({"key_files":["k"],"providers":{"x":{"base_url":"https://u@h","paths":["/v1"]}}})")
              .find("\"providers.x.base_url\"") != std::string::npos);
    // Host and path go into the upstream request head, next to the key: no
    // CR/LF, space or other byte that could start a header of its own
    // (fuzz_config found "https://api.op\nai.com" accepted).
    for (const char* url : {"https://api.op\\nai.com", "https://h/v1\\r\\nX-Evil: 1", "https://h/a b",
                            "https://h%0a.com", "https://h\\u00e9.com", "https://[::1\\n]:443"}) {
        CHECK_MESSAGE(error_of(std::string(R"({"key_files":["k"],"providers":{"x":{"base_url":")") + url +
                               R"(","paths":["/v1"]}}})")
                          .find("\"providers.x.base_url\"") != std::string::npos,
                      url);
    }
    CHECK(error_of(R"({"key_files":["k"],"providers":{"x":{"base_url":"https://h","auth":"basic","paths":["/v1"]}}})")
              .find("\"providers.x.auth\"") != std::string::npos);
    CHECK(error_of(R"({"key_files":["k"],"providers":{"x":{"base_url":"https://h","paths":[]}}})")
              .find("\"providers.x.paths\"") != std::string::npos);
    CHECK(error_of(R"({"key_files":["k"],"providers":{"x":{"base_url":"https://h","paths":["/v1/../x"]}}})")
              .find("\"providers.x.paths\"") != std::string::npos);
    CHECK(error_of(R"({"key_files":["k"],"providers":{"x":{"base_url":"https://h","paths":["/v1"],"ca_file":"/nonexistent.pem"}}})")
              .find("\"providers.x.ca_file\"") != std::string::npos);
    CHECK(error_of(R"({"key_files":["k"],"providers":{"v1":{"base_url":"https://h","paths":["/v1"]}}})")
              .find("reserved") != std::string::npos);
}

TEST_CASE("trusted_proxies: addresses and networks, v4-mapped v6 matched as v4") {
    const auto c = parse_config(
        R"({"key_files":["k"],"trusted_proxies":["127.0.0.1","10.0.0.0/8","192.168.4.0/23","fd00::/8","::1"]})", "");
    const auto& t = c->trusted_proxies;
    CHECK(t.contains("127.0.0.1"));
    CHECK_FALSE(t.contains("127.0.0.2"));
    CHECK(t.contains("10.255.1.2"));
    CHECK_FALSE(t.contains("11.0.0.1"));
    CHECK(t.contains("192.168.4.9"));
    CHECK(t.contains("192.168.5.255"));
    CHECK_FALSE(t.contains("192.168.6.0"));
    CHECK(t.contains("fd12:3456::1"));
    CHECK_FALSE(t.contains("fe80::1"));
    CHECK(t.contains("::1"));
    CHECK(t.contains("::ffff:10.1.2.3"));
    CHECK(t.contains("::ffff:127.0.0.1"));
    CHECK_FALSE(t.contains("::ffff:127.0.0.2"));
    CHECK_FALSE(t.contains("not an ip"));
    CHECK_FALSE(t.contains(""));

    const auto all4 = parse_config(R"({"key_files":["k"],"trusted_proxies":["0.0.0.0/0"]})", "");
    CHECK(all4->trusted_proxies.contains("203.0.113.9"));
    CHECK_FALSE(all4->trusted_proxies.contains("2001:db8::1"));

    CHECK(error_of(R"({"key_files":["k"],"trusted_proxies":["10.0.0.0/33"]})").find("\"trusted_proxies\"") !=
          std::string::npos);
    CHECK(error_of(R"({"key_files":["k"],"trusted_proxies":["10.0.0.0/"]})").find("\"trusted_proxies\"") !=
          std::string::npos);
    CHECK(error_of(R"({"key_files":["k"],"trusted_proxies":["fd00::/129"]})").find("\"trusted_proxies\"") !=
          std::string::npos);
}

TEST_CASE("config: the replay cache is sized by default for a flood of accepted seals at the peak rate") {
    const auto one = parse_config(R"({"key_files":["k.json"],"threads":1})", "/tmp");
    CHECK(one->replay_cache_entries == byok::crypto::replay_cache::capacity_for(30000.0, 60 + 30 + 1));
    CHECK(one->replay_cache_entries > 2'730'000);  // 30,000 seals/s for 91 s, and a margin
    const auto two = parse_config(R"({"key_files":["k.json"],"threads":2,"seal_max_age_s":30})", "/tmp");
    CHECK(two->replay_cache_entries == byok::crypto::replay_cache::capacity_for(60000.0, 30 + 30 + 1));
    const auto set = parse_config(R"({"key_files":["k.json"],"replay_cache_entries":4096})", "/tmp");
    CHECK(set->replay_cache_entries == 4096);
    CHECK(parse_config(R"({"key_files":["k.json"]})", "/tmp")->max_pending_body_bytes == 256u << 20);
}

TEST_CASE("replay_store: a Redis URL, a timeout, a failure policy; no password inline") {
    const auto c = parse_config(
        R"({"key_files":["k"],"replay_store":{"redis":"redis://redis.internal:6380/2","timeout_ms":20,"on_error":"local"}})",
        "/etc/byok");
    REQUIRE(c->replay_store.has_value());
    CHECK(c->replay_store->host == "redis.internal");
    CHECK(c->replay_store->port == 6380);
    CHECK(c->replay_store->db == 2);
    CHECK(!c->replay_store->tls);
    CHECK(c->replay_store->timeout_ms == 20);
    CHECK(c->replay_store->on_error == replay_store_failure::local);
    const auto d = parse_config(R"({"key_files":["k"],"replay_store":{"redis":"rediss://[::1]"}})", "/etc/byok");
    CHECK(d->replay_store->tls);
    CHECK(d->replay_store->host == "::1");
    CHECK(d->replay_store->port == 6379);
    CHECK(d->replay_store->on_error == replay_store_failure::refuse);
    CHECK(!parse_config(R"({"key_files":["k"]})", "")->replay_store.has_value());

    CHECK(error_of(R"({"key_files":["k"],"replay_store":{"redis":"redis://:pw@h:6379"}})").find("password_file") !=
          std::string::npos);
    CHECK(error_of(R"({"key_files":["k"],"replay_store":{"redis":"http://h"}})").find("replay_store.redis") !=
          std::string::npos);
    CHECK(error_of(R"({"key_files":["k"],"replay_store":{"redis":"redis://h/x"}})").find("replay_store.redis") !=
          std::string::npos);
    CHECK(error_of(R"({"key_files":["k"],"replay_store":{"redis":"redis://h","on_error":"ignore"}})")
              .find("replay_store.on_error") != std::string::npos);
    CHECK(error_of(R"({"key_files":["k"],"replay_store":{"redis":"redis://h","password":"x"}})")
              .find("replay_store.password") != std::string::npos);
    CHECK(error_of(R"({"key_files":["k"],"replay_store":{"redis":"redis://h","password_file":"/nonexistent/pw"}})")
              .find("replay_store.password_file") != std::string::npos);
    CHECK(error_of(R"({"key_files":["k"],"replay_store":{"redis":"redis://h","ca_file":"/etc/hostname"}})")
              .find("rediss://") != std::string::npos);
}

TEST_CASE("built-in presets: each provider's host, auth header and paths") {
    const auto c = parse_config(R"({"key_files":["k"]})", "");
    struct want {
        const char* name;
        const char* host;
        const char* base_path;
        const char* auth_line;
        const char* a_path;
    };
    for (const want& w : {want{"openai", "api.openai.com", "", "Authorization: Bearer ", "/v1/audio"},
                          want{"anthropic", "api.anthropic.com", "", "x-api-key: ", "/v1/messages"},
                          want{"gemini", "generativelanguage.googleapis.com", "", "x-goog-api-key: ",
                               "/v1beta/models/{model}:streamGenerateContent"},
                          want{"mistral", "api.mistral.ai", "", "Authorization: Bearer ", "/v1/embeddings"},
                          want{"groq", "api.groq.com", "/openai", "Authorization: Bearer ", "/v1/chat/completions"},
                          want{"openrouter", "openrouter.ai", "/api", "Authorization: Bearer ", "/v1/models"},
                          want{"deepseek", "api.deepseek.com", "", "Authorization: Bearer ", "/chat/completions"},
                          want{"xai", "api.x.ai", "", "Authorization: Bearer ", "/v1/embeddings"},
                          want{"together", "api.together.xyz", "", "Authorization: Bearer ", "/v1/embeddings"}}) {
        const provider* p = c->find_provider(w.name);
        REQUIRE_MESSAGE(p != nullptr, w.name);
        CHECK_MESSAGE(p->host == w.host, w.name);
        CHECK_MESSAGE(p->tls, w.name);
        CHECK_MESSAGE(p->base_path == w.base_path, w.name);
        CHECK_MESSAGE(p->auth_line == w.auth_line, w.name);
        CHECK_MESSAGE(std::find(p->paths.begin(), p->paths.end(), w.a_path) != p->paths.end(), w.name);
    }
    CHECK(c->providers.size() == 9);
    CHECK(c->find_provider("gemini")->auth == auth_style::x_goog_api_key);
    // Uploads take more than a chat body, never more than the whole body budget.
    CHECK(c->largest_body_bytes == 64u << 20);
    const auto small = parse_config(R"({"key_files":["k"],"max_pending_body_bytes":10000000})", "");
    CHECK(small->largest_body_bytes == 10000000);
    CHECK(small->find_provider("openai")->body_limits.at(0).second == 10000000);
}

TEST_CASE("auth: the words and the generic header object; the key never goes in a query string") {
    const auto c = parse_config(
        R"({"key_files":["k"],"providers":{
            "a":{"base_url":"https://h","auth":{"header":"X-Custom-Key","prefix":"Token "},"paths":["/v1"]},
            "b":{"base_url":"https://h","auth":{"header":"apikey"},"paths":["/v1"]},
            "c":{"base_url":"https://h","auth":"x-goog-api-key","paths":["/v1"]},
            "d":{"base_url":"https://h","auth":"api-key","paths":["/v1"]}}})",
        "");
    CHECK(c->find_provider("a")->auth == auth_style::header);
    CHECK(c->find_provider("a")->auth_line == "X-Custom-Key: Token ");
    CHECK(c->find_provider("b")->auth_line == "apikey: ");
    CHECK(c->find_provider("c")->auth_line == "x-goog-api-key: ");
    CHECK(c->find_provider("d")->auth_line == "api-key: ");
    const auto bad_auth = [](const char* auth) {
        return error_of(std::string(R"({"key_files":["k"],"providers":{"x":{"base_url":"https://h","auth":)") + auth +
                        R"(,"paths":["/v1"]}}})");
    };
    for (const char* a : {R"("query")", R"("key")", R"({"query":"key"})", R"({"header":""})",
                          R"({"header":"a b"})", R"({"header":"x\r\ny"})", R"({"header":"x","prefix":"a\r\nb: c"})",
                          R"({"header":"x","param":"key"})", R"({"header":"Host"})", R"({"header":"content-length"})",
                          R"({"header":"Content-Type"})", R"({"header":"transfer-encoding"})", R"({"header":"cookie"})",
                          R"({"header":7})", "[]"}) {
        CHECK_MESSAGE(bad_auth(a).find("\"providers.x.auth") != std::string::npos, a);
    }
    CHECK(error_of(R"({"key_files":["k"],"providers":{"x":{"base_url":"https://h","paths":["/v1"],"path":["/v2"]}}})")
              .find("\"providers.x.path\" is not a known provider setting") != std::string::npos);
}

TEST_CASE("path entries: one {param} segment, a :verb only at the end, nothing a provider could re-read") {
    for (const char* e : {"/v1", "/v1/chat/completions", "/v1beta/models/{model}:generateContent",
                          "/openai/deployments/{deployment}/chat/completions", "/v1/models/{model}", "/",
                          "/v1/x:y", "/chat/completions"}) {
        CHECK_MESSAGE(is_path_entry(e), e);
    }
    for (const char* e : {"", "v1", "/v1/../x", "/v1/./x", "/v1//x", "/v1/%2e", "/v1?x", "/v1#x", "/v1\\\\x",
                          "/{a}/{b}", "/v1/{}", "/v1/{Model}", "/v1/{model", "/v1/model}", "/v1/{model}x",
                          "/v1/{model}:", "/v1/{model}:gen/x", "/v1/{model}:gen-x", "/v1/x{model}", "/v1/a b",
                          "/v1/{model}:gen:x"}) {
        CHECK_MESSAGE(!is_path_entry(e), e);
        CHECK_MESSAGE(error_of(std::string(R"({"key_files":["k"],"providers":{"x":{"base_url":"https://h","paths":[")") +
                               e + R"("]}}})")
                          .find("\"providers.x.paths\"") != std::string::npos,
                      e);
    }
    CHECK(error_of(R"({"key_files":["k"],"providers":{"x":{"base_url":"https://h","paths":["/v1"],"body_limits":{"/v1/../x":5}}}})")
              .find("\"providers.x.body_limits\"") != std::string::npos);
    CHECK(error_of(R"({"key_files":["k"],"providers":{"x":{"base_url":"https://h","paths":["/v1"],"body_limits":{"/v1":"5M"}}}})")
              .find("\"providers.x.body_limits\"") != std::string::npos);
}

TEST_CASE("docs/operations.md's azure and ollama examples parse") {
    const auto c = parse_config(
        R"({"key_files":["k"],"providers":{
            "azure":{"base_url":"https://my-resource.openai.azure.com","auth":"api-key",
                     "paths":["/openai/deployments/{deployment}/chat/completions",
                              "/openai/deployments/{deployment}/embeddings",
                              "/openai/deployments/{deployment}/audio/transcriptions",
                              "/openai/v1/chat/completions","/openai/v1/responses","/openai/v1/embeddings",
                              "/openai/v1/models"],
                     "body_limits":{"/openai/deployments/{deployment}/audio/transcriptions":27262976}},
            "ollama":{"base_url":"http://127.0.0.1:11434","paths":["/v1/chat/completions","/v1/completions",
                      "/v1/embeddings","/v1/models"]}}})",
        "");
    CHECK(c->find_provider("azure")->auth_line == "api-key: ");
    CHECK(c->find_provider("azure")->body_limits.size() == 1);
    CHECK_FALSE(c->find_provider("ollama")->tls);
    CHECK(c->find_provider("ollama")->host_header == "127.0.0.1:11434");
}

TEST_CASE("a built-in preset is overridden setting by setting") {
    const auto c = parse_config(
        R"({"key_files":["k"],"providers":{"gemini":{"base_url":"https://127.0.0.1:9443/g"},
            "openai":{"paths":["/v1/chat/completions"]}}})",
        "");
    const provider* g = c->find_provider("gemini");
    REQUIRE(g != nullptr);
    CHECK(g->host == "127.0.0.1");
    CHECK(g->base_path == "/g");
    CHECK(g->auth_line == "x-goog-api-key: ");
    CHECK(g->paths.size() == 13);
    const provider* o = c->find_provider("openai");
    CHECK(o->host == "api.openai.com");
    CHECK(o->paths == std::vector<std::string>{"/v1/chat/completions"});
}

TEST_CASE("moderation: opt-in per provider, with the user's own key only on the provider itself") {
    const auto c = parse_config(
        R"({"key_files":["k"],"providers":{"openai":{"moderation":{"on_error":"allow"}},
            "x":{"base_url":"https://h","paths":["/v1"],"moderation":{"via":"x","model":"m-1"}}}})",
        "");
    REQUIRE(c->find_provider("openai")->moderation);
    CHECK(c->find_provider("openai")->moderation->via == "openai");
    CHECK(c->find_provider("openai")->moderation->model == "omni-moderation-latest");
    CHECK_FALSE(c->find_provider("openai")->moderation->refuse_on_error);
    CHECK(c->find_provider("x")->moderation->refuse_on_error);
    CHECK(c->find_provider("x")->moderation->model == "m-1");
    CHECK_FALSE(c->find_provider("anthropic")->moderation);
    for (const char* m : {R"({"via":"openai"})", R"({"on_error":"forward"})", R"({"model":""})", R"("yes")",
                          R"({"path":"/v1/moderations"})", R"({"model":"a b"})"}) {
        CHECK_MESSAGE(error_of(std::string(R"({"key_files":["k"],"providers":{"anthropic":{"moderation":)") + m + "}}}")
                          .find("\"providers.anthropic.moderation") != std::string::npos,
                      m);
    }
}

TEST_CASE("moderation via another provider: only with the operator's key for it, read into secret memory") {
    const auto dir = std::filesystem::temp_directory_path() / ("byok-config-test-" + std::to_string(::getpid()));
    std::filesystem::create_directories(dir);
    std::ofstream(dir / "op.key") << "sk-operator-123\n";
    std::ofstream(dir / "bad.key") << "two words\n";
    const auto c = parse_config(
        R"({"key_files":["k"],"providers":{"anthropic":{"moderation":{"via":"openai","key_file":"op.key"}}}})",
        dir.string());
    const auto& m = *c->find_provider("anthropic")->moderation;
    CHECK(m.via == "openai");
    REQUIRE(m.operator_key);
    CHECK(m.operator_key->view() == "sk-operator-123");
    CHECK(error_of(R"({"key_files":["k"],"providers":{"anthropic":{"moderation":{"via":"openai","key_file":")" +
                   (dir / "bad.key").string() + R"("}}}})")
              .find("\"providers.anthropic.moderation.key_file\"") != std::string::npos);
    CHECK(error_of(R"({"key_files":["k"],"providers":{"anthropic":{"moderation":{"via":"openai","key_file":"/nonexistent/k"}}}})")
              .find("\"providers.anthropic.moderation.key_file\"") != std::string::npos);
    CHECK(error_of(R"({"key_files":["k"],"providers":{"anthropic":{"moderation":{"via":"nope","key_file":")" +
                   (dir / "op.key").string() + R"("}}}})")
              .find("\"providers.anthropic.moderation.via\"") != std::string::npos);
    CHECK(error_of(R"({"key_files":["k"],"providers":{"openai":{"moderation":{"key_file":")" + (dir / "op.key").string() +
                   R"("}}}})")
              .find("\"providers.openai.moderation.key_file\"") != std::string::npos);
    std::filesystem::remove_all(dir);
}

namespace {

std::string source_file(const std::string& rel) {
    std::ifstream in(std::string(BYOK_SOURCE_DIR) + "/" + rel, std::ios::binary);
    REQUIRE_MESSAGE(in, "cannot read " << rel);
    return {std::istreambuf_iterator<char>(in), std::istreambuf_iterator<char>()};
}

// nginx `location ~ REGEX { ... client_max_body_size Nm; ... }` blocks: regex and size in bytes.
std::vector<std::pair<std::regex, std::size_t>> nginx_upload_locations(const std::string& conf) {
    std::vector<std::pair<std::regex, std::size_t>> out;
    const std::regex block(R"(location\s+~\s+(\S+)\s*\{([^}]*)\})");
    const std::regex size(R"(client_max_body_size\s+(\d+)m;)");
    for (auto it = std::sregex_iterator(conf.begin(), conf.end(), block); it != std::sregex_iterator(); ++it) {
        const std::string body = (*it)[2];
        std::smatch m;
        if (std::regex_search(body, m, size)) {
            out.emplace_back(std::regex((*it)[1].str()), std::stoul(m[1]) << 20);
        }
    }
    return out;
}

bool covered(const std::vector<std::pair<std::regex, std::size_t>>& where, const std::string& path,
             std::size_t limit) {
    return std::any_of(where.begin(), where.end(),
                       [&](const auto& w) { return w.second >= limit && std::regex_search(path, w.first); });
}

}  // namespace

TEST_CASE("deploy: every preset body limit above nginx's 8m default has an upload location as large, in "
          "deploy/nginx (both layouts) and in the Kubernetes uploads Ingress") {
    const auto plain = nginx_upload_locations(source_file("deploy/nginx/byok-relay.conf"));
    const auto prefixed = nginx_upload_locations(source_file("deploy/nginx/byok-relay-prefix.conf"));
    REQUIRE_FALSE(plain.empty());
    REQUIRE_FALSE(prefixed.empty());

    // The Ingress objects of deploy/k8s/ingress.yaml: each path regex (ingress-nginx
    // anchors it at the start) with its object's proxy-body-size.
    std::vector<std::pair<std::regex, std::size_t>> k8s;
    const std::string yaml = source_file("deploy/k8s/ingress.yaml");
    const std::regex body_size(R"(proxy-body-size:\s*\"(\d+)m\")");
    const std::regex path_line(R"(- path:\s*(\S+))");
    std::size_t start = 0;
    for (;;) {
        const std::size_t end = yaml.find("\n---", start);
        const std::string doc = yaml.substr(start, end == std::string::npos ? std::string::npos : end - start);
        std::smatch m;
        if (std::regex_search(doc, m, body_size) && doc.find("use-regex: \"true\"") != std::string::npos) {
            const std::size_t bytes = std::stoul(m[1]) << 20;
            for (auto it = std::sregex_iterator(doc.begin(), doc.end(), path_line); it != std::sregex_iterator();
                 ++it) {
                k8s.emplace_back(std::regex("^" + (*it)[1].str()), bytes);
            }
        }
        if (end == std::string::npos) {
            break;
        }
        start = end + 4;
    }
    REQUIRE_FALSE(k8s.empty());

    std::size_t checked = 0;
    for (const auto& p : default_providers()) {
        for (const auto& [entry, limit] : p.body_limits) {
            if (limit <= (8u << 20)) {
                continue;  // the default client_max_body_size 8m (snippets/byok-relay-server.conf) covers it
            }
            const std::string path = "/" + p.name + entry;
            CHECK_MESSAGE(covered(plain, path, limit), "deploy/nginx/byok-relay.conf: " << path << " " << limit);
            CHECK_MESSAGE(covered(prefixed, "/relay" + path, limit),
                          "deploy/nginx/byok-relay-prefix.conf: /relay" << path << " " << limit);
            CHECK_MESSAGE(covered(k8s, path, limit), "deploy/k8s/ingress.yaml: " << path << " " << limit);
            CHECK_FALSE(covered(k8s, "/" + p.name + "/v1/chat/completions", 9u << 20));  // only upload paths
            ++checked;
        }
    }
    CHECK(checked >= 8);  // openai's six upload paths and groq's two
}
