#include "relay/config.hpp"

#include "crypto/replay_cache.hpp"
#include "relay/file_text.hpp"
#include "relay/http_util.hpp"

#include <cctype>

#include <algorithm>
#include <thread>

#include <boost/asio/ip/address.hpp>
// GCC 12 reports false maybe-uninitialized warnings inside nlohmann::json's
// iterators at -O2 (a known GCC issue with that header); they are not ours.
#if defined(__GNUC__) && !defined(__clang__)  // the warning is GCC's; clang has no such option
#pragma GCC diagnostic push
#pragma GCC diagnostic ignored "-Wmaybe-uninitialized"
#endif
#include <nlohmann/json.hpp>
#if defined(__GNUC__) && !defined(__clang__)
#pragma GCC diagnostic pop
#endif

namespace byok::relay {
namespace {

using json = nlohmann::json;

[[noreturn]] void fail(std::string_view field, std::string_view what) {
    throw config_error("config: \"" + std::string(field) + "\" " + std::string(what));
}

// A decimal port, 1..65535 (0 too when `allow_zero`: "any free port" for a listener).
std::uint16_t parse_port(std::string_view text, std::string_view field, bool allow_zero) {
    if (text.empty() || text.size() > 5 ||
        !std::all_of(text.begin(), text.end(), [](char c) { return c >= '0' && c <= '9'; })) {
        fail(field, "has an invalid port");
    }
    const int port = std::stoi(std::string(text));
    if (port > 65535 || (port == 0 && !allow_zero)) {
        fail(field, "has an invalid port");
    }
    return static_cast<std::uint16_t>(port);
}

bool is_loopback_host(const std::string& host) {
    if (host == "localhost") {
        return true;
    }
    boost::system::error_code ec;
    const auto addr = boost::asio::ip::make_address(host, ec);
    return !ec && addr.is_loopback();
}

std::string resolve_path(const std::string& p, const std::string& base_dir) {
    if (p.empty() || p.front() == '/' || base_dir.empty()) {
        return p;
    }
    return base_dir + "/" + p;
}

std::int64_t get_int(const json& j, const char* field, std::int64_t def, std::int64_t lo, std::int64_t hi) {
    if (!j.contains(field)) {
        return def;
    }
    const auto& v = j.at(field);
    if (!v.is_number_integer()) {
        fail(field, "must be an integer");
    }
    const auto n = v.get<std::int64_t>();
    if (n < lo || n > hi) {
        fail(field, "must be between " + std::to_string(lo) + " and " + std::to_string(hi));
    }
    return n;
}

std::vector<std::string> get_strings(const json& j, const char* field) {
    std::vector<std::string> out;
    if (!j.contains(field)) {
        return out;
    }
    const auto& v = j.at(field);
    if (!v.is_array()) {
        fail(field, "must be a list of strings");
    }
    for (const auto& s : v) {
        if (!s.is_string()) {
            fail(field, "must be a list of strings");
        }
        out.push_back(s.get<std::string>());
    }
    return out;
}

// `field`.ca_file: a readable PEM file, resolved against the config's directory.
std::string get_ca_file(const json& j, const std::string& field, const std::string& base_dir) {
    if (!j["ca_file"].is_string() || j["ca_file"].get<std::string>().empty()) {
        fail(field + ".ca_file", "must be the path of a PEM file");
    }
    std::string path = resolve_path(j["ca_file"].get<std::string>(), base_dir);
    if (const auto problem = regular_file_problem(path)) {
        fail(field + ".ca_file", "cannot be read: " + path + ": " + *problem);
    }
    return path;
}

bool is_tchar(char c) noexcept {
    return std::isalnum(static_cast<unsigned char>(c)) != 0 || std::string_view("!#$%&'*+-.^_`|~").find(c) !=
                                                                     std::string_view::npos;
}

const std::vector<std::string> provider_fields = {"base_url", "auth", "ca_file", "paths", "body_limits",
                                                   "moderation"};

// "moderation": {"via": "<provider>", "model": "...", "on_error": "refuse" | "allow"}.
// An operator key file: one key (visible ASCII, 1..1024 characters; a
// trailing newline is dropped), read into locked secret memory. The file's
// bytes pass through one heap string, wiped before it is freed.
std::shared_ptr<const crypto::secret_bytes> read_operator_key(const std::string& path, const std::string& field) {
    auto file = read_regular_file(path, 4096);
    if (!file.text) {
        fail(field, "cannot be read: " + path + ": " + file.why);
    }
    std::string& text = *file.text;
    std::size_t n = text.size();
    while (n > 0 && (text[n - 1] == '\n' || text[n - 1] == '\r')) {
        --n;
    }
    const bool ok = n > 0 && n <= 1024 && std::all_of(text.begin(), text.begin() + static_cast<std::ptrdiff_t>(n), [](char c) {
        return c > 0x20 && c < 0x7f;
    });
    auto key = std::make_shared<crypto::secret_bytes>(crypto::secret_bytes::allocate(ok ? n : 1));
    if (ok) {
        std::copy_n(text.data(), n, key->chars().data());
    }
    crypto::wipe(text.data(), text.size());
    if (!ok) {
        fail(field, "must hold one key of 1 to 1024 visible ASCII characters: " + path);
    }
    return key;
}

moderation_check parse_moderation(const json& m, const std::string& name, const std::string& field,
                                  const std::string& base_dir) {
    const std::string what = "must be {\"via\": \"<provider>\", \"model\": \"...\", \"on_error\": \"refuse\" | \"allow\"}";
    if (!m.is_object()) {
        fail(field, what);
    }
    moderation_check out;
    out.via = name;
    for (const auto& [k, v] : m.items()) {
        if (!v.is_string() || (k != "via" && k != "model" && k != "on_error" && k != "key_file")) {
            fail(field, what);
        }
    }
    out.via = m.value("via", name);
    // The user's key goes only to its own provider: a check on another
    // provider is made with the operator's key for it (key_file).
    if (out.via != name) {
        if (!m.contains("key_file")) {
            fail(field + ".key_file", "is required when \"via\" is another provider (the user's key is for \"" + name +
                                          "\" only)");
        }
        out.operator_key = read_operator_key(resolve_path(m["key_file"].get<std::string>(), base_dir), field + ".key_file");
    } else if (m.contains("key_file")) {
        fail(field + ".key_file", "is only for \"via\" another provider; on the provider itself the user's key is used");
    }
    out.model = m.value("model", out.model);
    if (out.model.empty() || out.model.size() > 128 ||
        !std::all_of(out.model.begin(), out.model.end(), [](char c) { return is_tchar(c) || c == '/' || c == ':'; })) {
        fail(field + ".model", "must be a model name such as \"omni-moderation-latest\"");
    }
    const std::string on_error = m.value("on_error", std::string("refuse"));
    if (on_error != "refuse" && on_error != "allow") {
        fail(field + ".on_error", "must be \"refuse\" or \"allow\"");
    }
    out.refuse_on_error = on_error == "refuse";
    return out;
}

// Header names the relay writes itself or that change the message's framing
// or routing: an auth header may not be one of them.
bool is_reserved_header(const std::string& lower) {
    static const std::vector<std::string> reserved = {
        "host", "content-length", "transfer-encoding", "connection", "te", "trailer", "upgrade", "keep-alive",
        "expect", "proxy-authorization", "proxy-connection", "cookie", "forwarded", "x-forwarded-for",
        "x-forwarded-host", "x-forwarded-proto", "via"};
    return std::find(reserved.begin(), reserved.end(), lower) != reserved.end() || forward_request_header(lower);
}

// "auth": one of the words, or {"header": "<name>", "prefix": "<text>"}.
void parse_auth(provider& p, const json& j, const std::string& field) {
    const std::string what =
        "must be \"bearer\", \"x-api-key\", \"api-key\", \"x-goog-api-key\" or "
        "{\"header\": \"<name>\", \"prefix\": \"<text before the key>\"}";
    if (!j.contains("auth")) {
        p.auth = auth_style::bearer;
        p.auth_line = "Authorization: Bearer ";
        return;
    }
    const json& a = j["auth"];
    if (a.is_string()) {
        const std::string word = a.get<std::string>();
        if (word == "bearer") {
            p.auth = auth_style::bearer;
            p.auth_line = "Authorization: Bearer ";
        } else if (word == "x-api-key") {
            p.auth = auth_style::x_api_key;
            p.auth_line = "x-api-key: ";
        } else if (word == "api-key") {
            p.auth = auth_style::api_key;
            p.auth_line = "api-key: ";
        } else if (word == "x-goog-api-key") {
            p.auth = auth_style::x_goog_api_key;
            p.auth_line = "x-goog-api-key: ";
        } else {
            fail(field + ".auth", what);
        }
        return;
    }
    if (!a.is_object() || !a.contains("header") || !a["header"].is_string()) {
        fail(field + ".auth", what);
    }
    for (const auto& [k, v] : a.items()) {
        if ((k != "header" && k != "prefix") || !v.is_string()) {
            fail(field + ".auth", what);
        }
    }
    const std::string name = a["header"].get<std::string>();
    std::string lower = name;
    for (char& c : lower) {
        c = static_cast<char>(std::tolower(static_cast<unsigned char>(c)));
    }
    if (name.empty() || name.size() > 63 || !std::all_of(name.begin(), name.end(), is_tchar)) {
        fail(field + ".auth.header", "must be a header name (letters, digits and -, at most 63 characters)");
    }
    if (is_reserved_header(lower)) {
        fail(field + ".auth.header", "names a header the relay writes or forwards itself: " + name);
    }
    const std::string prefix = a.value("prefix", std::string());
    if (prefix.size() > 64 || !std::all_of(prefix.begin(), prefix.end(), [](char c) {
            const auto u = static_cast<unsigned char>(c);
            return u >= 0x20 && u < 0x7f;
        })) {
        fail(field + ".auth.prefix", "must be at most 64 visible ASCII characters or spaces");
    }
    p.auth = auth_style::header;
    p.auth_line = name + ": " + prefix;
}

provider parse_provider(const std::string& name, const json& j, const std::string& base_dir) {
    const std::string field = "providers." + name;
    if (!j.is_object()) {
        fail(field, "must be an object");
    }
    for (const char c : name) {
        if (!(std::isalnum(static_cast<unsigned char>(c)) || c == '-' || c == '_')) {
            fail(field, "name may only contain letters, digits, '-' and '_'");
        }
    }
    if (name.empty() || name == "v1" || name == "web" || name == "healthz" || name == "metrics") {
        fail(field, "name is empty or reserved");
    }
    for (const auto& [k, v] : j.items()) {
        if (std::find(provider_fields.begin(), provider_fields.end(), k) == provider_fields.end()) {
            fail(field + "." + k, "is not a known provider setting (misspelt?)");
        }
    }
    provider p;
    p.name = name;
    if (!j.contains("base_url") || !j["base_url"].is_string()) {
        fail(field + ".base_url", "is required (a string such as \"https://api.openai.com\")");
    }
    p.base_url = j["base_url"].get<std::string>();
    // The host and path go into every upstream request head (next to the key):
    // no control characters, spaces or non-ASCII bytes anywhere in the URL.
    for (const char ch : p.base_url) {
        const auto u = static_cast<unsigned char>(ch);
        if (u <= 0x20 || u >= 0x7f) {
            fail(field + ".base_url", "contains a space, a control character or a non-ASCII byte");
        }
    }
    std::string rest;
    if (p.base_url.rfind("https://", 0) == 0) {
        p.tls = true;
        p.port = 443;
        rest = p.base_url.substr(8);
    } else if (p.base_url.rfind("http://", 0) == 0) {
        p.tls = false;
        p.port = 80;
        rest = p.base_url.substr(7);
    } else {
        fail(field + ".base_url", "must start with https:// (or http:// for a loopback host)");
    }
    const auto slash = rest.find('/');
    std::string authority = rest.substr(0, slash);
    p.base_path = slash == std::string::npos ? "" : rest.substr(slash);
    while (!p.base_path.empty() && p.base_path.back() == '/') {
        p.base_path.pop_back();
    }
    if (authority.empty() || authority.find('@') != std::string::npos ||
        p.base_path.find_first_of("?#") != std::string::npos) {
        fail(field + ".base_url", "must be scheme://host[:port][/path] with no user info, query or fragment");
    }
    std::string host = authority;
    if (authority.front() == '[') {
        const auto close = authority.find(']');
        if (close == std::string::npos) {
            fail(field + ".base_url", "has an unterminated IPv6 literal");
        }
        host = authority.substr(1, close - 1);
        if (close + 1 < authority.size()) {
            if (authority[close + 1] != ':') {
                fail(field + ".base_url", "has garbage after the IPv6 literal");
            }
            p.port = parse_port(std::string_view(authority).substr(close + 2), field + ".base_url", false);
        }
    } else if (const auto colon = authority.rfind(':'); colon != std::string::npos) {
        host = authority.substr(0, colon);
        p.port = parse_port(std::string_view(authority).substr(colon + 1), field + ".base_url", false);
    }
    if (host.empty()) {
        fail(field + ".base_url", "has no host");
    }
    for (const char ch : host) {
        const bool ok = std::isalnum(static_cast<unsigned char>(ch)) != 0 || ch == '.' || ch == '-' || ch == '_' ||
                        (ch == ':' && authority.front() == '[');
        if (!ok) {
            fail(field + ".base_url", "has a host that is not a DNS name or an IP address");
        }
    }
    p.host = host;
    if (!p.tls && !is_loopback_host(host)) {
        fail(field + ".base_url", "uses http:// for a host that is not loopback; only https:// is allowed there");
    }
    const bool default_port = (p.tls && p.port == 443) || (!p.tls && p.port == 80);
    const std::string host_text = host.find(':') != std::string::npos ? "[" + host + "]" : host;
    p.host_header = default_port ? host_text : host_text + ":" + std::to_string(p.port);

    parse_auth(p, j, field);
    if (j.contains("ca_file")) {
        p.ca_file = get_ca_file(j, field, base_dir);
    }
    p.paths = get_strings(j, "paths");
    if (p.paths.empty()) {
        fail(field + ".paths", "must list at least one allowed path prefix, such as \"/v1/chat/completions\"");
    }
    for (auto& path : p.paths) {
        while (path.size() > 1 && path.back() == '/') {
            path.pop_back();
        }
        if (!is_path_entry(path)) {
            fail(field + ".paths", "entries must be plain absolute paths such as \"/v1/chat/completions\", with at most "
                                   "one {param} segment and a :verb only at the end (got \"" + path + "\")");
        }
    }
    if (j.contains("moderation") && !j["moderation"].is_null()) {
        p.moderation = parse_moderation(j["moderation"], name, field + ".moderation", base_dir);
    }
    if (j.contains("body_limits")) {
        const auto& b = j["body_limits"];
        if (!b.is_object()) {
            fail(field + ".body_limits", "must be an object from a path entry to a number of bytes");
        }
        for (const auto& [path, v] : b.items()) {
            if (!is_path_entry(path) || !v.is_number_integer() || v.get<std::int64_t>() < 0 ||
                v.get<std::int64_t>() > (1ll << 40)) {
                fail(field + ".body_limits", "entries must be \"<path entry>\": <bytes> (got \"" + path + "\")");
            }
            p.body_limits.emplace_back(path, static_cast<std::size_t>(v.get<std::int64_t>()));
        }
    }
    return p;
}

json provider_json(const char* base, const char* auth, std::initializer_list<const char*> paths) {
    json j;
    j["base_url"] = base;
    j["auth"] = auth;
    j["paths"] = json::array();
    for (const char* p : paths) {
        j["paths"].push_back(p);
    }
    return j;
}

// The built-in presets, from each provider's public API reference as of
// 2025 (written without network access; docs/operations.md lists them and
// says how to override one). Only the paths a browser app needs for
// inference: no fine-tuning, batches, organisation or admin endpoints.
json default_providers_json() {
    constexpr std::int64_t mib = 1 << 20;
    json j;
    j["openai"] = provider_json("https://api.openai.com", "bearer",
                                {"/v1/chat/completions", "/v1/completions", "/v1/responses", "/v1/embeddings",
                                 "/v1/moderations", "/v1/models", "/v1/audio", "/v1/images", "/v1/files",
                                 "/v1/uploads", "/v1/realtime/client_secrets", "/v1/realtime/sessions",
                                 "/v1/realtime/transcription_sessions"});
    // Whisper takes files up to 25 MB; a multipart form adds a little.
    j["openai"]["body_limits"] = {{"/v1/audio/transcriptions", 26 * mib}, {"/v1/audio/translations", 26 * mib},
                                  {"/v1/images/edits", 64 * mib}, {"/v1/images/variations", 16 * mib},
                                  {"/v1/files", 64 * mib}, {"/v1/uploads", 64 * mib}};
    j["anthropic"] = provider_json("https://api.anthropic.com", "x-api-key", {"/v1/messages", "/v1/models"});
    j["gemini"] = provider_json("https://generativelanguage.googleapis.com", "x-goog-api-key",
                                {"/v1beta/models/{model}:generateContent",
                                 "/v1beta/models/{model}:streamGenerateContent", "/v1beta/models/{model}:countTokens",
                                 "/v1beta/models/{model}:embedContent", "/v1beta/models/{model}:batchEmbedContents",
                                 // v1: what @google/genai uses by default
                                 "/v1/models/{model}:generateContent", "/v1/models/{model}:streamGenerateContent",
                                 "/v1/models/{model}:countTokens", "/v1/models/{model}:embedContent",
                                 "/v1/models/{model}:batchEmbedContents", "/v1beta/openai/chat/completions",
                                 "/v1beta/openai/embeddings", "/v1beta/openai/models"});
    j["mistral"] = provider_json("https://api.mistral.ai", "bearer",
                                 {"/v1/chat/completions", "/v1/fim/completions", "/v1/embeddings", "/v1/models",
                                  "/v1/moderations"});
    j["groq"] = provider_json("https://api.groq.com/openai", "bearer",
                              {"/v1/chat/completions", "/v1/responses", "/v1/models", "/v1/audio"});
    j["groq"]["body_limits"] = {{"/v1/audio/transcriptions", 26 * mib}, {"/v1/audio/translations", 26 * mib}};
    j["openrouter"] = provider_json("https://openrouter.ai/api", "bearer",
                                    {"/v1/chat/completions", "/v1/completions", "/v1/embeddings", "/v1/models"});
    j["deepseek"] = provider_json("https://api.deepseek.com", "bearer",
                                  {"/chat/completions", "/v1/chat/completions", "/models", "/v1/models",
                                   "/beta/completions"});
    j["xai"] = provider_json("https://api.x.ai", "bearer",
                             {"/v1/chat/completions", "/v1/completions", "/v1/responses", "/v1/embeddings",
                              "/v1/models"});
    j["together"] = provider_json("https://api.together.xyz", "bearer",
                                  {"/v1/chat/completions", "/v1/completions", "/v1/embeddings", "/v1/models",
                                   "/v1/images/generations", "/v1/audio"});
    return j;
}

const std::vector<std::string> known_fields = {
    "listen", "threads", "key_files", "seal_max_age_s", "seal_max_future_s", "max_body_bytes",
    "max_header_bytes", "allow_origins", "public_path_prefix", "trusted_proxies", "web_root",
    "metrics_listen", "header_timeout_s", "body_timeout_s", "idle_timeout_s", "write_timeout_s",
    "upstream_connect_timeout_s", "upstream_timeout_s", "sse_keepalive_s", "shutdown_grace_s",
    "max_in_flight", "replay_cache_entries", "max_connections_per_ip", "rate_limit", "providers",
    "max_pending_body_bytes", "min_body_bytes_per_s", "body_rate_window_s", "grant_max_ttl_s", "replay_store",
    "key_list_file"};

// "replay_store": {"redis": "redis[s]://host[:port][/db]", "timeout_ms": 50,
// "on_error": "refuse" | "local", "ca_file": "...", "password_file": "..."}.
// A password is only ever read from a file, never written in the URL.
replay_store_config parse_replay_store(const json& j, const std::string& base_dir) {
    const std::string field = "replay_store";
    if (!j.is_object()) {
        fail(field, "must be an object such as {\"redis\": \"redis://127.0.0.1:6379/0\"}");
    }
    for (const auto& [k, v] : j.items()) {
        if (k != "redis" && k != "timeout_ms" && k != "on_error" && k != "ca_file" && k != "password_file") {
            fail(field + "." + k, "is not a known setting (misspelt?)");
        }
    }
    replay_store_config r;
    if (!j.contains("redis") || !j["redis"].is_string()) {
        fail(field + ".redis", "is required (a string such as \"redis://127.0.0.1:6379/0\")");
    }
    r.url = j["redis"].get<std::string>();
    std::string rest;
    if (r.url.rfind("rediss://", 0) == 0) {
        r.tls = true;
        rest = r.url.substr(9);
    } else if (r.url.rfind("redis://", 0) == 0) {
        rest = r.url.substr(8);
    } else {
        fail(field + ".redis", "must start with redis:// or rediss://");
    }
    const auto slash = rest.find('/');
    const std::string authority = rest.substr(0, slash);
    if (authority.find('@') != std::string::npos) {
        fail(field + ".redis", "must not carry a user or password; use \"password_file\"");
    }
    if (slash != std::string::npos) {
        const std::string db = rest.substr(slash + 1);
        if (!db.empty()) {
            if (db.size() > 5 || !std::all_of(db.begin(), db.end(), [](char c) { return c >= '0' && c <= '9'; })) {
                fail(field + ".redis", "has a database that is not a number (redis://host:port/0)");
            }
            r.db = static_cast<unsigned>(std::stoul(db));
        }
    }
    std::string host = authority;
    if (!authority.empty() && authority.front() == '[') {
        const auto close = authority.find(']');
        if (close == std::string::npos || (close + 1 < authority.size() && authority[close + 1] != ':')) {
            fail(field + ".redis", "has a malformed IPv6 literal");
        }
        host = authority.substr(1, close - 1);
        if (close + 1 < authority.size()) {
            r.port = parse_port(std::string_view(authority).substr(close + 2), field + ".redis", false);
        }
    } else if (const auto colon = authority.rfind(':'); colon != std::string::npos) {
        host = authority.substr(0, colon);
        r.port = parse_port(std::string_view(authority).substr(colon + 1), field + ".redis", false);
    }
    if (host.empty() || !std::all_of(host.begin(), host.end(), [&](char c) {
            return std::isalnum(static_cast<unsigned char>(c)) != 0 || c == '.' || c == '-' || c == '_' ||
                   (c == ':' && authority.front() == '[');
        })) {
        fail(field + ".redis", "has a host that is not a DNS name or an IP address");
    }
    r.host = host;
    r.timeout_ms = get_int(j, "timeout_ms", 50, 1, 10000);
    if (j.contains("on_error")) {
        const auto& v = j["on_error"];
        if (v == "refuse") {
            r.on_error = replay_store_failure::refuse;
        } else if (v == "local") {
            r.on_error = replay_store_failure::local;
        } else {
            fail(field + ".on_error", "must be \"refuse\" or \"local\"");
        }
    }
    if (j.contains("ca_file")) {
        if (!r.tls) {
            fail(field + ".ca_file", "is only used with rediss://");
        }
        r.ca_file = get_ca_file(j, field, base_dir);
    }
    if (j.contains("password_file")) {
        if (!j["password_file"].is_string() || j["password_file"].get<std::string>().empty()) {
            fail(field + ".password_file", "must be the path of a file holding the password");
        }
        const std::string path = resolve_path(j["password_file"].get<std::string>(), base_dir);
        auto file = read_regular_file(path, 4098);
        if (!file.text) {
            fail(field + ".password_file", "cannot be read: " + path + ": " + file.why);
        }
        std::string pw = std::move(*file.text);
        while (!pw.empty() && (pw.back() == '\n' || pw.back() == '\r')) {
            pw.pop_back();
        }
        if (pw.empty() || pw.size() > 4096) {
            fail(field + ".password_file", "must hold one password of 1 to 4096 bytes: " + path);
        }
        r.password = std::move(pw);
    }
    return r;
}

}  // namespace

namespace {
// 16 bytes for either family; IPv4 (and IPv4-mapped IPv6) in the first 4.
bool to_bytes(const boost::asio::ip::address& a, std::array<unsigned char, 16>& out, bool& v4) {
    out = {};
    if (a.is_v4()) {
        const auto b = a.to_v4().to_bytes();
        std::copy(b.begin(), b.end(), out.begin());
        v4 = true;
        return true;
    }
    const auto v6 = a.to_v6();
    if (v6.is_v4_mapped()) {
        const auto b = boost::asio::ip::make_address_v4(boost::asio::ip::v4_mapped, v6).to_bytes();
        std::copy(b.begin(), b.end(), out.begin());
        v4 = true;
        return true;
    }
    const auto b = v6.to_bytes();
    std::copy(b.begin(), b.end(), out.begin());
    v4 = false;
    return true;
}
}  // namespace

void ip_set::add(std::string_view entry, std::string_view field) {
    const auto slash = entry.find('/');
    boost::system::error_code ec;
    const auto addr = boost::asio::ip::make_address(std::string(entry.substr(0, slash)), ec);
    if (ec) {
        fail(field, "entries must be IP addresses or networks such as \"10.0.0.0/8\" (got \"" +
                        std::string(entry) + "\")");
    }
    net n;
    to_bytes(addr, n.bytes, n.v4);
    const unsigned max_prefix = n.v4 ? 32 : 128;
    n.prefix = max_prefix;
    if (slash != std::string_view::npos) {
        const std::string p(entry.substr(slash + 1));
        if (p.empty() || p.size() > 3 || !std::all_of(p.begin(), p.end(), [](char c) { return c >= '0' && c <= '9'; }) ||
            static_cast<unsigned>(std::stoi(p)) > max_prefix) {
            fail(field, "has a network with an invalid prefix length (got \"" + std::string(entry) + "\")");
        }
        n.prefix = static_cast<unsigned>(std::stoi(p));
    }
    nets_.push_back(n);
}

bool ip_set::contains(std::string_view ip) const noexcept {
    boost::system::error_code ec;
    std::string text(ip);
    const auto addr = boost::asio::ip::make_address(text, ec);
    if (ec) {
        return false;
    }
    std::array<unsigned char, 16> b{};
    bool v4 = false;
    to_bytes(addr, b, v4);
    for (const auto& n : nets_) {
        if (n.v4 != v4) {
            continue;
        }
        unsigned bits = n.prefix;
        std::size_t i = 0;
        for (; bits >= 8; bits -= 8, ++i) {
            if (b[i] != n.bytes[i]) {
                break;
            }
        }
        if (bits >= 8) {
            continue;  // a whole byte differed
        }
        const auto mask = static_cast<unsigned char>(0xFF << (8 - bits));
        if (bits == 0 || (b[i] & mask) == (n.bytes[i] & mask)) {
            return true;
        }
    }
    return false;
}

bool is_path_entry(std::string_view entry) noexcept {
    if (entry.empty() || entry.front() != '/' || entry.size() > 512) {
        return false;
    }
    if (entry == "/") {
        return true;
    }
    const auto literal_ok = [](std::string_view seg) {
        if (seg.empty() || seg == "." || seg == "..") {
            return false;
        }
        for (const char c : seg) {
            const bool ok = std::isalnum(static_cast<unsigned char>(c)) != 0 ||
                            std::string_view("-._~!$&'()*+,;=:@").find(c) != std::string_view::npos;
            if (!ok) {
                return false;  // also '%', '{', '}', '\\', '?', '#', controls, spaces
            }
        }
        return true;
    };
    bool param_seen = false;
    std::size_t start = 1;
    for (;;) {
        const auto end = entry.find('/', start);
        const bool last = end == std::string_view::npos;
        const std::string_view seg = entry.substr(start, last ? std::string_view::npos : end - start);
        if (!seg.empty() && seg.front() == '{') {
            const auto close = seg.find('}');
            if (param_seen || close == std::string_view::npos || close < 2) {
                return false;
            }
            for (const char c : seg.substr(1, close - 1)) {
                if (!((c >= 'a' && c <= 'z') || c == '_')) {
                    return false;
                }
            }
            const std::string_view tail = seg.substr(close + 1);
            if (!tail.empty()) {
                // ":verb", and nothing after it.
                if (!last || tail.size() < 2 || tail.front() != ':' ||
                    !std::all_of(tail.begin() + 1, tail.end(),
                                 [](char c) { return std::isalpha(static_cast<unsigned char>(c)) != 0; })) {
                    return false;
                }
            }
            param_seen = true;
        } else if (!literal_ok(seg)) {
            return false;
        }
        if (last) {
            return true;
        }
        start = end + 1;
    }
}

const provider* config::find_provider(std::string_view name) const noexcept {
    for (const auto& p : providers) {
        if (p.name == name) {
            return &p;
        }
    }
    return nullptr;
}

endpoint parse_endpoint(std::string_view text, std::string_view field) {
    endpoint e;
    std::string s(text);
    std::string port_text;
    if (!s.empty() && s.front() == '[') {
        const auto close = s.find(']');
        if (close == std::string::npos || close + 1 >= s.size() || s[close + 1] != ':') {
            fail(field, "must be \"host:port\" or \"[v6]:port\"");
        }
        e.host = s.substr(1, close - 1);
        port_text = s.substr(close + 2);
    } else {
        const auto colon = s.rfind(':');
        if (colon == std::string::npos) {
            fail(field, "must be \"host:port\"");
        }
        e.host = s.substr(0, colon);
        port_text = s.substr(colon + 1);
    }
    e.port = parse_port(port_text, field, true);
    boost::system::error_code ec;
    (void)boost::asio::ip::make_address(e.host, ec);
    if (ec) {
        fail(field, "host must be an IP address (got \"" + e.host + "\")");
    }
    return e;
}

std::vector<provider> default_providers() {
    std::vector<provider> out;
    // Named: items() of a temporary would dangle (a range-for keeps only the proxy alive before C++23).
    const json all = default_providers_json();
    for (const auto& [name, j] : all.items()) {
        out.push_back(parse_provider(name, j, ""));
    }
    return out;
}

std::shared_ptr<const config> parse_config(std::string_view json_text, const std::string& base_dir) {
    json j;
    try {
        j = json::parse(json_text);
    } catch (const json::exception& e) {
        // parse_error, and out_of_range for a number past double's range ("1e999").
        throw config_error(std::string("config: not valid JSON (") + e.what() + ")");
    }
    if (!j.is_object()) {
        throw config_error("config: must be a JSON object");
    }
    for (const auto& [k, v] : j.items()) {
        if (std::find(known_fields.begin(), known_fields.end(), k) == known_fields.end()) {
            fail(k, "is not a known setting (misspelt?)");
        }
    }
    auto c = std::make_shared<config>();
    try {
        if (j.contains("listen")) {
            if (!j["listen"].is_string()) {
                fail("listen", "must be a string \"host:port\"");
            }
            c->listen = parse_endpoint(j["listen"].get<std::string>(), "listen");
        }
        const auto hw = std::max(1u, std::thread::hardware_concurrency());
        c->threads = static_cast<unsigned>(get_int(j, "threads", hw, 1, 256));
        for (const auto& k : get_strings(j, "key_files")) {
            c->key_files.push_back(resolve_path(k, base_dir));
        }
        if (c->key_files.empty()) {
            fail("key_files", "must list at least one key file (create one with: byok-relay keygen --out FILE)");
        }
        if (j.contains("key_list_file") && !j["key_list_file"].is_null()) {
            if (!j["key_list_file"].is_string()) {
                fail("key_list_file", "must be the path of a list written by byok-relay sign-keys");
            }
            c->key_list_file = resolve_path(j["key_list_file"].get<std::string>(), base_dir);
        }
        c->seal_max_age_s = get_int(j, "seal_max_age_s", 60, 1, 3600);
        c->seal_max_future_s = get_int(j, "seal_max_future_s", 30, 0, 3600);
        c->grant_max_ttl_s = get_int(j, "grant_max_ttl_s", 1800, 1, 86400);
        c->max_body_bytes = static_cast<std::size_t>(get_int(j, "max_body_bytes", 8 << 20, 0, 1ll << 30));
        c->max_header_bytes = static_cast<std::size_t>(get_int(j, "max_header_bytes", 16 << 10, 1024, 1 << 20));
        c->allow_origins = get_strings(j, "allow_origins");
        for (const auto& o : c->allow_origins) {
            if (o != "*" && (o.find("://") == std::string::npos || o.back() == '/')) {
                fail("allow_origins", "entries must be origins such as \"https://app.example.com\" (no path), or \"*\"");
            }
        }
        if (j.contains("public_path_prefix")) {
            if (!j["public_path_prefix"].is_string()) {
                fail("public_path_prefix", "must be a string such as \"/relay\"");
            }
            std::string p = j["public_path_prefix"].get<std::string>();
            while (!p.empty() && p.back() == '/') {
                p.pop_back();
            }
            if (!p.empty() && (p.front() != '/' || p.find_first_of("?#%") != std::string::npos)) {
                fail("public_path_prefix", "must be an absolute path such as \"/relay\"");
            }
            c->public_path_prefix = p;
        }
        for (const auto& entry : get_strings(j, "trusted_proxies")) {
            c->trusted_proxies.add(entry, "trusted_proxies");
        }
        if (j.contains("web_root") && !j["web_root"].is_null()) {
            if (!j["web_root"].is_string()) {
                fail("web_root", "must be a directory path");
            }
            c->web_root = resolve_path(j["web_root"].get<std::string>(), base_dir);
        }
        if (j.contains("metrics_listen") && !j["metrics_listen"].is_null()) {
            if (!j["metrics_listen"].is_string()) {
                fail("metrics_listen", "must be a string \"host:port\"");
            }
            c->metrics_listen = parse_endpoint(j["metrics_listen"].get<std::string>(), "metrics_listen");
        }
        c->header_timeout_s = get_int(j, "header_timeout_s", 10, 1, 3600);
        c->body_timeout_s = get_int(j, "body_timeout_s", 30, 1, 3600);
        c->idle_timeout_s = get_int(j, "idle_timeout_s", 60, 1, 3600);
        c->write_timeout_s = get_int(j, "write_timeout_s", 30, 1, 3600);
        c->upstream_connect_timeout_s = get_int(j, "upstream_connect_timeout_s", 10, 1, 600);
        c->upstream_timeout_s = get_int(j, "upstream_timeout_s", 300, 1, 86400);
        c->sse_keepalive_s = get_int(j, "sse_keepalive_s", 15, 1, 3600);
        c->shutdown_grace_s = get_int(j, "shutdown_grace_s", 30, 0, 3600);
        c->max_in_flight = static_cast<std::size_t>(get_int(j, "max_in_flight", 1024, 1, 1 << 20));
        c->max_pending_body_bytes =
            static_cast<std::size_t>(get_int(j, "max_pending_body_bytes", 256ll << 20, 0, 1ll << 40));
        c->min_body_bytes_per_s = static_cast<std::size_t>(get_int(j, "min_body_bytes_per_s", 1024, 0, 1ll << 30));
        c->body_rate_window_s = get_int(j, "body_rate_window_s", 5, 1, 3600);
        // By default, room for a flood of accepted seals (junk keys are free to
        // make) at the most this relay can open, ~30,000 seals/s a thread, each
        // remembered for the whole window: an honest seal is never refused for
        // lack of room (about 38 bytes an entry, used only as seals arrive).
        const auto flood_capacity = static_cast<std::int64_t>(crypto::replay_cache::capacity_for(
            30000.0 * c->threads, c->seal_max_age_s + c->seal_max_future_s + 1));
        c->replay_cache_entries = static_cast<std::size_t>(
            get_int(j, "replay_cache_entries", std::min<std::int64_t>(flood_capacity, 1ll << 28), 1024, 1ll << 28));
        c->max_connections_per_ip = static_cast<std::size_t>(get_int(j, "max_connections_per_ip", 256, 0, 1 << 20));
        if (j.contains("rate_limit")) {
            const auto& r = j["rate_limit"];
            if (!r.is_object() || !r.contains("requests_per_s") || !r["requests_per_s"].is_number() ||
                r["requests_per_s"].get<double>() < 0) {
                fail("rate_limit", "must be {\"requests_per_s\": N, \"burst\": M} with N >= 0");
            }
            c->per_ip_rate.requests_per_s = r["requests_per_s"].get<double>();
            c->per_ip_rate.burst = r.value("burst", c->per_ip_rate.requests_per_s);
            if (c->per_ip_rate.burst < 1 && c->per_ip_rate.requests_per_s > 0) {
                fail("rate_limit.burst", "must be at least 1");
            }
        }
        if (j.contains("replay_store") && !j["replay_store"].is_null()) {
            c->replay_store = parse_replay_store(j["replay_store"], base_dir);
        }
        // Configured providers are merged over the built-in ones; null removes one.
        json providers = default_providers_json();
        if (j.contains("providers")) {
            if (!j["providers"].is_object()) {
                fail("providers", "must be an object from a name to a provider");
            }
            for (const auto& [name, v] : j["providers"].items()) {
                if (v.is_null()) {
                    providers.erase(name);
                } else if (v.is_object() && providers.contains(name)) {
                    // A built-in preset: the settings given replace its own, the others are kept
                    // ({"openai": {"base_url": "https://eu.api.openai.com"}}).
                    for (const auto& [k, x] : v.items()) {
                        providers[name][k] = x;
                    }
                } else {
                    providers[name] = v;
                }
            }
        }
        for (const auto& [name, v] : providers.items()) {
            c->providers.push_back(parse_provider(name, v, base_dir));
        }
        for (const auto& p : c->providers) {
            if (p.moderation && c->find_provider(p.moderation->via) == nullptr) {
                fail("providers." + p.name + ".moderation.via", "names no configured provider: " + p.moderation->via);
            }
        }
        // A path's body limit is at most the whole budget for bodies (a larger body could never be held).
        c->largest_body_bytes = c->max_body_bytes;
        for (auto& p : c->providers) {
            for (auto& [path, limit] : p.body_limits) {
                limit = std::min(limit, c->max_pending_body_bytes);
                c->largest_body_bytes = std::max(c->largest_body_bytes, limit);
            }
        }
    } catch (const json::exception& e) {
        throw config_error(std::string("config: ") + e.what());
    } catch (const std::invalid_argument&) {
        throw config_error("config: a number could not be read");
    } catch (const std::out_of_range&) {
        throw config_error("config: a number is out of range");
    }
    return c;
}

std::shared_ptr<const config> load_config(const std::string& path) {
    const auto file = read_regular_file(path, 4 << 20);
    if (!file.text) {
        throw config_error("config: cannot read file '" + path + "': " + file.why);
    }
    const auto slash = path.rfind('/');
    const std::string base_dir = slash == std::string::npos ? "." : path.substr(0, slash);
    return parse_config(*file.text, base_dir);
}

}  // namespace byok::relay
