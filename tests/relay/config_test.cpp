#include "relay/config.hpp"
#include "crypto/replay_cache.hpp"

#include <doctest/doctest.h>

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
