#pragma once
// The relay's configuration: parsed once at start from a JSON file into an
// immutable value, shared as std::shared_ptr<const config>. Only this code
// reads the configuration file. Keys are never in the config, only the paths
// of key files.

#include <array>
#include <cstdint>
#include <memory>
#include <optional>
#include <stdexcept>
#include <string>
#include <string_view>
#include <utility>
#include <vector>

#include "crypto/secret.hpp"

namespace byok::relay {

// A configuration error: what() names the field and what is wrong with it.
class config_error : public std::runtime_error {
public:
    using std::runtime_error::runtime_error;
};

// How the key goes upstream: always in a header, never in a query string.
// `header` is the generic {"header": "<name>", "prefix": "<text>"} form.
enum class auth_style { bearer, x_api_key, api_key, x_goog_api_key, header };

struct endpoint {
    std::string host;  // as written ("127.0.0.1", "::1", "localhost")
    std::uint16_t port = 0;
};

// The moderation pre-check of a provider (opt-in): before a request is
// forwarded, its text goes to POST /v1/moderations of `via` with the user's
// own key; a flagged request is refused (400 content_flagged).
struct moderation_check {
    std::string via;                            // a provider name: the provider itself, or another with key_file
    std::string model = "omni-moderation-latest";
    bool refuse_on_error = true;                // on_error "refuse" (502 moderation_unavailable) or "allow"
    // For `via` another provider: the operator's key for it, read from
    // key_file at start into locked secret memory (the user's key is only
    // ever sent to its own provider). Null when `via` is the provider itself.
    std::shared_ptr<const crypto::secret_bytes> operator_key;
};

struct provider {
    std::string name;         // the path prefix: /<name>/...
    std::string base_url;     // as configured
    bool tls = true;          // https (always, unless a loopback http:// base URL)
    std::string host;         // from base_url
    std::uint16_t port = 443;
    std::string base_path;    // base_url's path without trailing '/', may be empty
    auth_style auth = auth_style::bearer;
    std::string auth_line;               // the header line up to the key: "Authorization: Bearer "
    std::optional<std::string> ca_file;  // PEM bundle; system store when absent
    // Allowed path entries, e.g. "/v1/chat/completions" (and every path below
    // it), "/openai/deployments/{deployment}/chat/completions" (one segment
    // of unreserved characters for the parameter),
    // "/v1beta/models/{model}:generateContent" (a :verb ends the path).
    // relay/router.cpp matches them.
    std::vector<std::string> paths;
    // Body limits above or below max_body_bytes for some paths (uploads):
    // entries written and matched like `paths`, first match wins.
    std::vector<std::pair<std::string, std::size_t>> body_limits;
    std::optional<moderation_check> moderation;
    std::string host_header;             // "host" or "host:port"
};

// A set of IP networks ("203.0.113.7", "10.0.0.0/8", "fd00::/8"). An
// IPv4-mapped IPv6 address (::ffff:a.b.c.d, what a dual-stack socket
// reports) is matched as the IPv4 address it carries.
class ip_set {
public:
    // Throws config_error naming `field` for an entry that is not an address or network.
    void add(std::string_view entry, std::string_view field);
    [[nodiscard]] bool contains(std::string_view ip) const noexcept;
    [[nodiscard]] bool empty() const noexcept { return nets_.empty(); }

private:
    struct net {
        std::array<unsigned char, 16> bytes{};
        bool v4 = false;
        unsigned prefix = 0;
    };
    std::vector<net> nets_;
};

struct rate_limit {
    double requests_per_s = 0;  // 0 = off
    double burst = 0;
};

// The shared replay store (issue 15): several replicas claim each seal in
// one Redis, so a seal accepted by one is refused by all (relay/replay_store.hpp).
enum class replay_store_failure { refuse, local };

struct replay_store_config {
    std::string url;   // as configured ("redis://host:port/db"); never holds a password
    std::string host;  // DNS name or IP address
    std::uint16_t port = 6379;
    unsigned db = 0;
    bool tls = false;                     // rediss://, verified against ca_file (system store when absent)
    std::optional<std::string> ca_file;
    std::optional<std::string> password;  // read from password_file at start; never logged
    std::int64_t timeout_ms = 50;         // per claim
    replay_store_failure on_error = replay_store_failure::refuse;
};

struct config {
    endpoint listen{"127.0.0.1", 8080};
    unsigned threads = 1;
    std::vector<std::string> key_files;
    std::optional<std::string> key_list_file;  // the signed key list served at /v1/keys (relay/key_list.hpp)
    std::int64_t seal_max_age_s = 60;
    std::int64_t seal_max_future_s = 30;
    std::int64_t grant_max_ttl_s = 1800;  // the longest a scoped key grant may live (POST /v1/grants)
    std::size_t max_body_bytes = 8u << 20;
    std::size_t max_header_bytes = 16u << 10;
    std::vector<std::string> allow_origins;  // exact origins, or "*"
    std::string public_path_prefix;          // "" or "/relay" (no trailing '/')
    ip_set trusted_proxies;  // peers whose X-Forwarded-For is believed
    std::optional<std::string> web_root;
    std::optional<endpoint> metrics_listen;
    std::int64_t header_timeout_s = 10;
    std::int64_t body_timeout_s = 30;
    std::int64_t idle_timeout_s = 60;
    std::int64_t write_timeout_s = 30;
    std::int64_t upstream_connect_timeout_s = 10;
    std::int64_t upstream_timeout_s = 300;
    std::int64_t sse_keepalive_s = 15;
    std::int64_t shutdown_grace_s = 30;
    std::size_t max_in_flight = 1024;           // upstream exchanges at once (body complete, seal opened)
    std::size_t max_pending_body_bytes = 256u << 20;  // bytes held in unfinished request bodies, all clients
    std::size_t min_body_bytes_per_s = 1024;    // a body slower than this over a window is dropped (408)
    std::int64_t body_rate_window_s = 5;
    std::size_t replay_cache_entries = 1u << 20;  // parse_config: by default sized for a flood at peak rate
    std::size_t max_connections_per_ip = 256;  // 0 = off
    rate_limit per_ip_rate;
    std::vector<provider> providers;
    std::optional<replay_store_config> replay_store;  // none: the local replay cache alone
    // The largest body any route accepts (max_body_bytes or a provider's
    // body_limits, at most max_pending_body_bytes): the parser's limit until
    // the route is known.
    std::size_t largest_body_bytes = 8u << 20;

    [[nodiscard]] const provider* find_provider(std::string_view name) const noexcept;
};

// Parses the JSON text of a configuration file. Throws config_error naming
// the field. Relative key_files / ca_file / web_root are resolved against
// `base_dir` (the config file's directory).
[[nodiscard]] std::shared_ptr<const config> parse_config(std::string_view json_text, const std::string& base_dir);
// Reads and parses a configuration file.
[[nodiscard]] std::shared_ptr<const config> load_config(const std::string& path);

// Parses "host:port", "[v6]:port". Throws config_error mentioning `field`.
[[nodiscard]] endpoint parse_endpoint(std::string_view text, std::string_view field);

// True if `entry` is a valid `paths` / `body_limits` entry (see provider::paths).
[[nodiscard]] bool is_path_entry(std::string_view entry) noexcept;

// The built-in providers (openai, anthropic, gemini, mistral, groq,
// openrouter, deepseek, xai, together).
[[nodiscard]] std::vector<provider> default_providers();

}  // namespace byok::relay
