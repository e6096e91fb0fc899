#pragma once
// Maps a request target to what the relay does with it. Pure functions over
// the immutable config; thread-safe.
//
// Open-proxy guard: a sealed request can only ever reach a configured
// provider's host (the host comes from the config, never from the request),
// and only a path under one of that provider's allowed prefixes. Targets
// that a provider might normalise into another path (dot segments, encoded
// dots or slashes, backslashes, empty segments) are refused outright.

#include <string>
#include <string_view>

#include "relay/config.hpp"

namespace byok::relay {

enum class route_kind { keys, healthz, web, root, sealed, grants, unknown };

struct route {
    route_kind kind = route_kind::unknown;
    const provider* prov = nullptr;
    std::string_view rest;      // sealed: target after "/<provider>", query included
    std::string_view rest_path; // sealed: the same without the query
    std::string_view web_path;  // web: path after "/web/"
    std::size_t body_limit = 0; // sealed: the most body bytes this path takes (max_body_bytes or body_limits)
};

// `target` is the request-target exactly as received (origin-form only). A
// target under public_path_prefix is routed without it.
[[nodiscard]] route classify(const config& cfg, std::string_view target) noexcept;

// The path a seal names for `target`: the client's bytes, prefix included.
// A front proxy passes them as they came (nginx: proxy_pass without a URI),
// so percent-escapes survive; a target without the prefix (a proxy that
// strips it) gets it back.
[[nodiscard]] std::string sealed_path(const config& cfg, std::string_view target);

// True if `path` (no query) is a plain absolute path: only RFC 3986 pchars,
// no "." or ".." segment (also percent-encoded), no %2F / %5C, no
// backslash, no empty segment.
[[nodiscard]] bool is_plain_path(std::string_view path) noexcept;

// True if `path` (plain, no query) is allowed by the provider path entry
// `entry` (config.hpp, provider::paths): the entry's segments, then
// anything below unless the entry ends with a :verb. A literal segment
// matches itself; "{name}" one segment of RFC 3986 unreserved characters
// (no ':', no '%'); "{name}:verb" such a segment followed by ":verb", the last.
[[nodiscard]] bool path_allowed(std::string_view entry, std::string_view path) noexcept;
// True if `path` is `prefix` or lies under it (`prefix` + "/..."): how a
// provider's allowed paths, and a grant's paths, cover a request's path.
[[nodiscard]] bool path_under(std::string_view path, std::string_view prefix) noexcept;

// The upstream request-target for a sealed route: base path + rest.
[[nodiscard]] std::string upstream_target(const provider& p, std::string_view rest);

}  // namespace byok::relay
