#include "relay/local_routes.hpp"

#include <boost/beast/http/fields.hpp>
#include <doctest/doctest.h>

using namespace byok::relay;
namespace http = boost::beast::http;

namespace {

std::shared_ptr<const config> cfg_with_origin() {
    return parse_config(R"({"key_files":["k.json"],"allow_origins":["https://app.example"]})", "/tmp");
}

}  // namespace

TEST_CASE("decide_cors: an allowed origin is echoed; others and bad values are not") {
    const auto cfg = cfg_with_origin();
    http::fields f;
    CHECK_FALSE(decide_cors(*cfg, f).allowed());
    f.set(http::field::origin, "https://app.example");
    CHECK(decide_cors(*cfg, f).origin == "https://app.example");
    f.set(http::field::origin, "https://evil.example");
    CHECK_FALSE(decide_cors(*cfg, f).allowed());
    std::string out;
    append_cors(out, decide_cors(*cfg, f));
    CHECK(out == "Vary: Origin\r\n");
}

TEST_CASE("render_head: length, CORS and close in one place") {
    const auto cfg = cfg_with_origin();
    http::fields f;
    f.set(http::field::origin, "https://app.example");
    auto r = error_response(error_code::unknown_route);
    const std::string h = render_head(r, decide_cors(*cfg, f), false, 0);
    CHECK(h.rfind("HTTP/1.1 404 Not Found\r\n", 0) == 0);
    CHECK(h.find("Content-Length: " + std::to_string(r.body.size()) + "\r\n") != std::string::npos);
    CHECK(h.find("Access-Control-Allow-Origin: https://app.example\r\n") != std::string::npos);
    CHECK(h.find("Connection: close\r\n") != std::string::npos);
    CHECK(h.substr(h.size() - 4) == "\r\n\r\n");
    local_response none;
    none.status = 204;
    CHECK(render_head(none, {}, true, 0).find("Content-Length") == std::string::npos);
}

TEST_CASE("answer_locally: preflight, unknown route, methods") {
    const auto cfg = cfg_with_origin();
    http::fields f;
    f.set(http::field::origin, "https://app.example");
    f.set(http::field::access_control_request_method, "POST");
    f.set(http::field::access_control_request_headers, "authorization, x-stainless-os");
    const route unknown{};
    local_request rq{http::verb::options, &unknown, &f, decide_cors(*cfg, f), false};
    auto keys = byok::crypto::keyring::from_keys([] {
        std::vector<byok::crypto::relay_key> v;
        v.push_back(byok::crypto::relay_key::generate(1'700'000'000));
        return v;
    }());
    auto r = answer_locally(rq, *keys, nullptr, 1'700'000'000);
    CHECK(r.status == 204);
    CHECK(r.extra_headers.find("Access-Control-Allow-Headers: authorization, x-stainless-os\r\n") != std::string::npos);
    f.set(http::field::access_control_request_headers, "bad\"header");
    r = answer_locally(rq, *keys, nullptr, 1'700'000'000);
    CHECK(r.extra_headers.find("Access-Control-Allow-Headers: authorization, byok-proof, content-type\r\n") != std::string::npos);

    rq.method = http::verb::get;
    CHECK(answer_locally(rq, *keys, nullptr, 1'700'000'000).error == "unknown_route");
    route keys_route;
    keys_route.kind = route_kind::keys;
    rq.r = &keys_route;
    r = answer_locally(rq, *keys, nullptr, 1'700'000'000);
    CHECK(r.status == 200);
    CHECK(r.body.find(keys->keys()[0].kid()) != std::string::npos);
    rq.method = http::verb::post;
    r = answer_locally(rq, *keys, nullptr, 1'700'000'000);
    CHECK(r.status == 405);
    route health;
    health.kind = route_kind::healthz;
    rq.r = &health;
    rq.method = http::verb::get;
    rq.draining = true;
    r = answer_locally(rq, *keys, nullptr, 1'700'000'000);
    CHECK(r.status == 503);
    CHECK(r.close);
}

TEST_CASE("error_response: every overloaded answer says when to retry; others add nothing") {
    CHECK(error_response(error_code::overloaded).extra_headers == "Retry-After: 1\r\n");
    CHECK(error_response(error_code::bad_seal).extra_headers.empty());
    CHECK(error_response(error_code::rate_limited, "Retry-After: 7\r\n").extra_headers == "Retry-After: 7\r\n");
}

TEST_CASE("web_files::type_for: the served types, and nothing else") {
    CHECK(web_files::type_for("index.html") == "text/html; charset=utf-8");
    CHECK(web_files::type_for("a.min.mjs") == "text/javascript; charset=utf-8");
    CHECK(web_files::type_for("x.js.map") == "application/json");
    CHECK(web_files::type_for("libsodium.wasm") == "application/wasm");
    CHECK(web_files::type_for("README").empty());
    CHECK(web_files::type_for("key.pem").empty());
}
