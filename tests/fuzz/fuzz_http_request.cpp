// The HTTP request path as far as the relay's own code goes: raw bytes
// through Beast's request_parser with the limits the server sets (header
// limit, body limit, the same parser type), then what session.cpp does with
// a parsed head: framing_ok, the client address (trusted proxies and
// X-Forwarded-For), CORS origin value check, classify (the open-proxy guard),
// upstream_target and the request-header allowlist. Pipelined requests are
// parsed one after another, as the server does on a kept-alive connection.
//
// Properties: a sealed route only ever leads to a configured provider, under
// an allowed prefix, with a path no provider could normalise into another one.
#include <algorithm>
#include <cctype>
#include <cstring>
#include <string>

#include <boost/asio/buffer.hpp>
#include <boost/asio/ip/address.hpp>
#include <boost/beast/core/flat_buffer.hpp>
#include <boost/beast/http/parser.hpp>
#include <boost/beast/http/string_body.hpp>

#include "relay/config.hpp"
#include "relay/http_util.hpp"
#include "relay/router.hpp"

#include "fuzz_support.hpp"

namespace http = boost::beast::http;
using namespace byok::relay;

namespace {

const config& cfg() {
    static const auto c = [] {
        const std::string web = byok::fuzz::temp_dir();
        const std::string text = R"({
          "listen": "127.0.0.1:0", "key_files": ["unused.json"],
          "trusted_proxies": ["127.0.0.1", "10.0.0.1", "::1"],
          "allow_origins": ["https://app.example"],
          "web_root": ")" + web + R"(",
          "providers": {
            "local": {"base_url": "http://127.0.0.1:9/base/", "auth": "api-key", "paths": ["/v1/chat", "/v2"]}
          }})";
        return parse_config(text, web);
    }();
    return *c;
}

bool icontains(std::string_view hay, std::string_view needle) {
    return std::search(hay.begin(), hay.end(), needle.begin(), needle.end(), [](char a, char b) {
               return std::tolower(static_cast<unsigned char>(a)) == std::tolower(static_cast<unsigned char>(b));
           }) != hay.end();
}

void check_route(const route& r, std::string_view target) {
    const auto& c = cfg();
    switch (r.kind) {
    case route_kind::sealed: {
        BYOK_FUZZ_CHECK(r.prov != nullptr);
        BYOK_FUZZ_CHECK(r.prov >= c.providers.data() && r.prov < c.providers.data() + c.providers.size());
        BYOK_FUZZ_CHECK(!r.rest_path.empty() && r.rest_path.front() == '/');
        BYOK_FUZZ_CHECK(is_plain_path(r.rest_path));
        for (const std::string_view bad : {"//", "/./", "/../", "%2e", "%2f", "%5c", "%00", "\\", "#"}) {
            BYOK_FUZZ_CHECK(!icontains(r.rest_path, bad));
        }
        BYOK_FUZZ_CHECK(!(r.rest_path.size() >= 2 && r.rest_path.substr(r.rest_path.size() - 2) == "/."));
        BYOK_FUZZ_CHECK(!(r.rest_path.size() >= 3 && r.rest_path.substr(r.rest_path.size() - 3) == "/.."));
        for (const char ch : r.rest) {
            const auto u = static_cast<unsigned char>(ch);
            BYOK_FUZZ_CHECK(u > 0x20 && u < 0x7f);
        }
        bool allowed = false;
        for (const auto& p : r.prov->paths) {
            allowed = allowed || (r.rest_path.substr(0, p.size()) == p &&
                                  (r.rest_path.size() == p.size() || r.rest_path[p.size()] == '/'));
        }
        BYOK_FUZZ_CHECK(allowed);
        const std::string up = upstream_target(*r.prov, r.rest);
        BYOK_FUZZ_CHECK(up.substr(0, r.prov->base_path.size() + 1) == r.prov->base_path + "/");
        BYOK_FUZZ_CHECK(target.substr(0, r.prov->name.size() + 2) == "/" + r.prov->name + "/");
        break;
    }
    case route_kind::web:
        BYOK_FUZZ_CHECK(is_plain_path(target.substr(0, target.find('?'))));
        break;
    default:
        break;
    }
}

void after_head(const http::request_parser<http::string_body>& p) {
    const auto& req = p.get();
    const bool framing = framing_ok(req.base(), req.version());
    if (framing) {
        BYOK_FUZZ_CHECK(req.base().count(http::field::content_length) <= 1);
        BYOK_FUZZ_CHECK(req.base().count(http::field::transfer_encoding) <= 1);
        BYOK_FUZZ_CHECK(!(req.base().count(http::field::content_length) == 1 &&
                          req.base().count(http::field::transfer_encoding) == 1));
        if (p.chunked()) {
            BYOK_FUZZ_CHECK(req.version() >= 11);
        }
    }
    for (const char* peer : {"127.0.0.1", "192.0.2.7"}) {
        const std::string ip = client_ip(req.base(), peer, cfg().trusted_proxies);
        if (std::string_view(peer) == "192.0.2.7") {
            BYOK_FUZZ_CHECK(ip == peer);  // an untrusted peer's X-Forwarded-For changes nothing
        } else {
            boost::system::error_code ec;
            (void)boost::asio::ip::make_address(ip, ec);
            BYOK_FUZZ_CHECK(!ec);
        }
    }
    if (const auto it = req.find(http::field::origin); it != req.end()) {
        (void)field_value_ok(it->value());
    }
    const std::string_view target = req.target();
    const route r = classify(cfg(), target);
    check_route(r, target);
    if (r.kind == route_kind::sealed) {
        // The header allowlist the upstream request is built from.
        for (const auto& f : req.base()) {
            std::string name(f.name_string());
            for (auto& ch : name) {
                ch = static_cast<char>(std::tolower(static_cast<unsigned char>(ch)));
            }
            if (forward_request_header(name) && field_value_ok(f.value())) {
                BYOK_FUZZ_CHECK(f.value().find_first_of("\r\n") == std::string_view::npos);
            }
        }
    }
}

}  // namespace

extern "C" int LLVMFuzzerTestOneInput(const std::uint8_t* data, std::size_t size) {
    const auto& c = cfg();
    // The connection's whole input, already buffered (as session.cpp's buffer_).
    read_buffer buffer;
    if (size == 0) {
        return 0;
    }
    const auto space = buffer.prepare(size);
    std::memcpy(space.data(), data, size);
    buffer.commit(size);
    for (int round = 0; round < 8 && buffer.size() > 0; ++round) {
        http::request_parser<http::string_body> p;
        p.header_limit(static_cast<std::uint32_t>(c.max_header_bytes));
        p.body_limit(c.max_body_bytes);
        boost::beast::error_code ec;
        // http::async_read_header hands the parser everything buffered so far
        // and consumes what it used; so does this loop, through the same
        // obs-fold watch the session uses.
        fold_watch_buffer head(buffer, c.max_header_bytes);
        while (!p.is_header_done()) {
            const std::size_t n = p.put(head.data(), ec);
            head.consume(n);
            if (ec || n == 0) {
                return 0;  // need_more at the end of the input, or a parse error (answered 400/431)
            }
        }
        after_head(p);
        if (!framing_ok(p.get().base(), p.get().version()) || head.folded()) {
            return 0;  // answered 400 and closed
        }
        // The body, as http::async_read reads it (eager: everything buffered is parsed).
        p.eager(true);
        while (!p.is_done()) {
            const std::size_t n = p.put(buffer.data(), ec);
            buffer.consume(n);
            if (ec || n == 0) {
                return 0;  // need_more at the end of the input, a bad chunk (400), body_limit (413)
            }
        }
        if (!p.get().keep_alive()) {
            return 0;
        }
    }
    return 0;
}
