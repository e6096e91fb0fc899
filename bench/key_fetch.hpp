#pragma once
// Fetching the relay's key configuration (GET /v1/keys) before a run, and
// the URL handling the load generator needs (http/https, loopback check).

#include <cstdint>
#include <string>
#include <vector>

#include "crypto/grant.hpp"
#include "crypto/keyring.hpp"

namespace byok::bench {

struct parsed_url {
    bool tls = false;
    std::string host;     // without brackets
    std::uint16_t port = 0;
    std::string path;     // "" or "/prefix" (no trailing '/')
    [[nodiscard]] std::string host_header() const;
};

// Throws std::invalid_argument naming what is wrong.
[[nodiscard]] parsed_url parse_url(const std::string& url);

// The address to connect to: host resolved. Unless allow_remote, refuses
// (std::invalid_argument) anything that is not a loopback address.
[[nodiscard]] std::string resolve_address(const parsed_url& u, bool allow_remote);

struct key_config {
    std::string kid;
    crypto::public_key pk{};
    crypto::seal_alg alg = crypto::seal_alg::sealed_box;
};

// GET <url>; the answer's first key of algorithm `alg`. Throws std::runtime_error.
[[nodiscard]] key_config fetch_key_config(const parsed_url& u, const std::string& address, const std::string& ca_file,
                                          crypto::seal_alg alg = crypto::seal_alg::sealed_box);

// What the load generator asks a grant for (docs/protocol.md §13).
struct grant_request {
    std::string provider;       // the first segment of --path
    std::string provider_path;  // the rest of --path, without the query
    std::string origin;         // must be in the relay's allow_origins
    std::vector<std::string> models;  // empty: any model
    std::int64_t ttl_s = 1800;
    const crypto::es256_key* app = nullptr;
};

// POST <relay>/v1/grants, sealed (sealed box, `kc`) with `api_key`: the
// grant token. Throws std::runtime_error naming the answer.
[[nodiscard]] std::string mint_grant(const parsed_url& relay, const std::string& address, const std::string& ca_file,
                                     const key_config& kc, const std::string& api_key, const grant_request& g);

}  // namespace byok::bench
