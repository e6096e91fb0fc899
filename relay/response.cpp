#include "relay/response.hpp"

#include "relay/http_util.hpp"

namespace byok::relay {

namespace http = boost::beast::http;

cors_decision decide_cors(const config& cfg, const http::fields& request) noexcept {
    const auto it = request.find(http::field::origin);
    if (it == request.end()) {
        return {};
    }
    const std::string_view origin = it->value();
    if (origin.empty() || !field_value_ok(origin)) {
        return {};
    }
    for (const auto& o : cfg.allow_origins) {
        if (o == "*" || o == origin) {
            return {origin};
        }
    }
    return {};
}

void append_cors(std::string& out, const cors_decision& cors, std::string_view exposed) {
    if (cors.allowed()) {
        out.append("Access-Control-Allow-Origin: ").append(cors.origin).append("\r\n");
        if (!exposed.empty()) {
            out.append("Access-Control-Expose-Headers: ").append(exposed).append("\r\n");
        }
    }
    out.append("Vary: Origin\r\n");
}

local_response error_response(error_code e, std::string extra_headers) {
    const auto& d = describe(e);
    local_response r;
    r.status = d.status;
    r.content_type = "application/json";
    r.body = error_body(e);
    r.extra_headers = std::move(extra_headers);
    if (e == error_code::overloaded) {
        r.extra_headers.append("Retry-After: 1\r\n");
    }
    r.error = d.code;
    return r;
}

std::string render_head(const local_response& r, const cors_decision& cors, bool keep_alive, std::int64_t now_unix) {
    std::string h;
    h.reserve(320 + r.extra_headers.size());
    h.append("HTTP/1.1 ").append(std::to_string(r.status)).append(" ").append(reason_phrase(r.status));
    h.append("\r\nDate: ").append(http_date(now_unix)).append("\r\n");
    if (!r.content_type.empty()) {
        h.append("Content-Type: ").append(r.content_type).append("\r\n");
    }
    if (r.status >= 200 && r.status != 204 && r.status != 304) {
        h.append("Content-Length: ").append(std::to_string(r.body_view().size())).append("\r\n");
    }
    h.append(r.extra_headers);
    if (r.status >= 200) {
        append_cors(h, cors);
    }
    if (!keep_alive && r.status >= 200) {
        h.append("Connection: close\r\n");
    }
    h.append("\r\n");
    return h;
}

}  // namespace byok::relay
