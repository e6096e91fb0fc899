#pragma once
// The one way the relay writes an answer of its own (errors, local routes,
// preflights): a response value, then its head rendered in one place. The
// CORS decision is made once per request, from its Origin header, and
// carried as a value. Pure; thread-safe.

#include <cstdint>
#include <memory>
#include <string>
#include <string_view>

#include <boost/beast/http/fields.hpp>

#include "relay/config.hpp"
#include "relay/errors.hpp"

namespace byok::relay {

// Whether the request's origin may read the answer.
struct cors_decision {
    std::string_view origin;  // the request's Origin header when allowed; empty when not (views the request)
    [[nodiscard]] bool allowed() const noexcept { return !origin.empty(); }
};

[[nodiscard]] cors_decision decide_cors(const config& cfg, const boost::beast::http::fields& request) noexcept;

// The headers an app may read from an answer the relay makes itself (Date:
// a browser client corrects its clock from it after seal_expired).
inline constexpr std::string_view local_exposed_headers = "Date, Retry-After";

// "Vary: Origin", and when allowed the Access-Control-Allow-Origin and
// Access-Control-Expose-Headers lines; `exposed` is the comma-separated list
// of names an app may read: for a relayed answer, Date and every provider
// header the relay passed on (rate limits, request ids), whatever their names.
void append_cors(std::string& out, const cors_decision& cors,
                 std::string_view exposed = local_exposed_headers);

// An answer the relay makes itself.
struct local_response {
    unsigned status = 200;
    std::string_view content_type;     // static text; empty for none
    std::string body;                  // unless `shared_body` is set
    std::shared_ptr<const std::string> shared_body;  // a file loaded at start, shared by requests
    std::string extra_headers;         // whole "Name: value\r\n" lines
    std::string_view error;            // the error code for the log and metrics, "" if none
    bool head_only = false;            // HEAD: Content-Length of the body, no body bytes
    bool close = false;                // the connection closes after this answer

    [[nodiscard]] std::string_view body_view() const noexcept { return shared_body ? *shared_body : body; }
};

// The JSON error answer for `e`, with optional extra header lines. An
// `overloaded` answer always carries "Retry-After: 1" (the relay sheds load
// that passes within a second or so: a full budget, all slots busy).
[[nodiscard]] local_response error_response(error_code e, std::string extra_headers = {});

// The whole head of `r`: status line, Date, Content-Type, Content-Length
// (not for 1xx, 204, 304), extra lines, CORS, "Connection: close" when the
// connection will not be kept.
[[nodiscard]] std::string render_head(const local_response& r, const cors_decision& cors, bool keep_alive,
                                      std::int64_t now_unix);

}  // namespace byok::relay
