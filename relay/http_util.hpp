#pragma once
// Small HTTP/1.1 helpers the session uses: framing checks the parser does not
// make, the Date header, status reason phrases. Pure; thread-safe.

#include <cstdint>
#include <string>
#include <string_view>

#include <boost/beast/http/fields.hpp>

namespace byok::relay {

// Request framing that Boost 1.81's Beast parser accepts but a front proxy
// may read differently (request smuggling, RFC 9112 §6.1, §6.3):
// Content-Length together with Transfer-Encoding, more than one
// Content-Length or Transfer-Encoding field, a Transfer-Encoding other than
// exactly "chunked", any Transfer-Encoding on HTTP/1.0. True if acceptable.
[[nodiscard]] bool framing_ok(const boost::beast::http::fields& f, unsigned version) noexcept;

// IMF-fixdate of `unix_seconds`, e.g. "Sun, 22 Nov 2026 16:45:03 GMT".
[[nodiscard]] std::string http_date(std::int64_t unix_seconds);

[[nodiscard]] std::string_view reason_phrase(unsigned status) noexcept;

// Case-insensitive ASCII comparison.
[[nodiscard]] bool iequals(std::string_view a, std::string_view b) noexcept;

// True for header names the relay forwards from client to provider.
[[nodiscard]] bool forward_request_header(std::string_view lower_name) noexcept;
// True for header names the relay passes from provider back to the client.
[[nodiscard]] bool forward_response_header(std::string_view lower_name) noexcept;

// True if every byte is allowed in a field value (no CR, LF, NUL or other controls but HTAB).
[[nodiscard]] bool field_value_ok(std::string_view v) noexcept;

}  // namespace byok::relay
