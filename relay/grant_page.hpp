#pragma once
// The relay's consent page for grants (GET /v1/grant and its three files
// under /v1/grant/), compiled into the binary from web/grant/ and
// web/byok-relay.js (cmake/embed_files.cmake), so it is served on the
// relay's own origin with or without web_root, and nobody who can write
// web_root can change the page users paste their key into. Immutable;
// thread-safe.

#include <memory>
#include <span>
#include <string>
#include <string_view>

namespace byok::relay {

struct embedded_file {
    std::string_view name;
    std::string_view content;
};

// Every embedded file (defined in the generated grant_page_files.cpp).
[[nodiscard]] std::span<const embedded_file> grant_page_files() noexcept;

struct grant_page_file {
    std::shared_ptr<const std::string> content;
    std::string_view content_type;
};

// `rel`: the path after "/v1/grant" ("" for the page, "/grant.js" for a
// file). Null for anything else.
[[nodiscard]] const grant_page_file* find_grant_page_file(std::string_view rel);

// The headers every consent-page answer carries: no framing (clickjacking),
// scripts and styles from the relay's origin only (no inline script), no
// referrer, no caching of a page that held a key field.
inline constexpr std::string_view grant_page_headers =
    "Content-Security-Policy: default-src 'none'; script-src 'self'; style-src 'self'; connect-src 'self'; "
    "img-src 'self' data:; frame-ancestors 'none'; base-uri 'none'; form-action 'none'\r\n"
    "X-Frame-Options: DENY\r\nX-Content-Type-Options: nosniff\r\nReferrer-Policy: no-referrer\r\n"
    "Cache-Control: no-store\r\n";

}  // namespace byok::relay
