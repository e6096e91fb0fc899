#include "relay/local_routes.hpp"

#include <cctype>

namespace byok::relay {

namespace http = boost::beast::http;

namespace {

constexpr std::string_view web_headers = "Cache-Control: no-cache\r\nX-Content-Type-Options: nosniff\r\n"
                                         "Referrer-Policy: no-referrer\r\nX-Frame-Options: DENY\r\n";

local_response preflight(const local_request& rq) {
    local_response r;
    r.status = 204;
    r.extra_headers = "Allow: GET, POST, DELETE, OPTIONS\r\n";
    const auto& h = *rq.headers;
    if (!rq.cors.allowed() || h.count(http::field::access_control_request_method) == 0) {
        return r;
    }
    r.extra_headers += "Access-Control-Allow-Methods: GET, POST, DELETE, OPTIONS\r\nAccess-Control-Max-Age: 600\r\n";
    // Echo the requested header names if they are plain tokens (the openai
    // client sends many x-stainless-* headers).
    const std::string_view asked = h[http::field::access_control_request_headers];
    bool tokens = !asked.empty() && asked.size() < 2048;
    for (const char c : asked) {
        if (!(std::isalnum(static_cast<unsigned char>(c)) || c == '-' || c == '_' || c == ',' || c == ' ')) {
            tokens = false;
        }
    }
    r.extra_headers.append("Access-Control-Allow-Headers: ")
        .append(tokens ? asked : std::string_view("authorization, byok-proof, content-type"))
        .append("\r\n");
    return r;
}

local_response json(unsigned status, std::string body, std::string extra = {}) {
    local_response r;
    r.status = status;
    r.content_type = "application/json";
    r.body = std::move(body);
    r.extra_headers = std::move(extra);
    return r;
}

}  // namespace

local_response answer_locally(const local_request& rq, const crypto::keyring& keys, const web_files* files,
                              std::int64_t now_unix) {
    const route& rt = *rq.r;
    if (rq.method == http::verb::options) {
        return preflight(rq);
    }
    if (rt.kind == route_kind::unknown || rt.kind == route_kind::sealed) {
        return error_response(error_code::unknown_route);
    }
    if (rt.kind == route_kind::grants) {
        return error_response(error_code::method_not_allowed, "Allow: POST, OPTIONS\r\n");  // POST is the session's
    }
    if (rq.method != http::verb::get && rq.method != http::verb::head) {
        return error_response(error_code::method_not_allowed, "Allow: GET, HEAD\r\n");
    }
    local_response r;
    switch (rt.kind) {
    case route_kind::keys:
        r = json(200, keys.key_config_json(now_unix), "Cache-Control: public, max-age=300\r\n");
        break;
    case route_kind::healthz:
        if (rq.draining) {
            r = json(503, R"({"status":"draining"})");
            r.close = true;
        } else {
            r = json(200, R"({"status":"ok"})");
        }
        break;
    case route_kind::root:
        r.status = 302;
        r.content_type = "text/plain";
        r.body = "see web/demo/\n";
        r.extra_headers = "Location: web/demo/\r\n";
        break;
    case route_kind::web: {
        const web_files::file* f = files != nullptr ? files->find(rt.web_path) : nullptr;
        if (f == nullptr) {
            return error_response(error_code::unknown_route);
        }
        r.content_type = f->content_type;
        r.shared_body = f->content;
        r.extra_headers = web_headers;
        break;
    }
    case route_kind::sealed:
    case route_kind::grants:
    case route_kind::unknown:
        break;
    }
    r.head_only = rq.method == http::verb::head;
    return r;
}

}  // namespace byok::relay
