#include "bench/key_fetch.hpp"

#include <ctime>
#include <stdexcept>

#include <boost/asio/connect.hpp>
#include <boost/asio/io_context.hpp>
#include <boost/asio/ip/address.hpp>
#include <boost/asio/ip/tcp.hpp>
#include <boost/asio/ssl/context.hpp>
#include <boost/asio/ssl/host_name_verification.hpp>
#include <boost/asio/ssl/stream.hpp>
#include <boost/beast/core/flat_buffer.hpp>
#include <boost/beast/core/tcp_stream.hpp>
#include <boost/beast/http/read.hpp>
#include <boost/beast/http/string_body.hpp>
#include <boost/beast/http/write.hpp>
#include <openssl/ssl.h>
#pragma GCC diagnostic ignored "-Wmaybe-uninitialized"
#include <nlohmann/json.hpp>

#include "crypto/encoding.hpp"
#include "crypto/keyring.hpp"
#include "crypto/seal.hpp"

namespace byok::bench {
namespace {

namespace asio = boost::asio;
namespace beast = boost::beast;
namespace http = beast::http;

template <class Stream>
http::response<http::string_body> send(Stream& s, const parsed_url& u, http::request<http::string_body>& req) {
    req.set(http::field::host, u.host_header());
    req.set(http::field::user_agent, "byok-loadgen");
    req.set(http::field::connection, "close");
    req.prepare_payload();
    http::write(s, req);
    beast::flat_buffer buf;
    http::response_parser<http::string_body> p;
    p.body_limit(1 << 20);
    http::read(s, buf, p);
    return p.release();
}

// One request on a connection of its own (https: verified), the answer read whole.
http::response<http::string_body> exchange(const parsed_url& u, const std::string& address, const std::string& ca_file,
                                           http::request<http::string_body> req) {
    asio::io_context ioc;
    const asio::ip::tcp::endpoint ep(asio::ip::make_address(address), u.port);
    const std::string what = std::string(req.method_string()) + " " + std::string(req.target());
    try {
        if (u.tls) {
            asio::ssl::context ctx(asio::ssl::context::tls_client);
            ctx.set_verify_mode(asio::ssl::verify_peer);
            if (ca_file.empty()) {
                ctx.set_default_verify_paths();
            } else {
                ctx.load_verify_file(ca_file);
            }
            asio::ssl::stream<beast::tcp_stream> s(ioc, ctx);
            beast::get_lowest_layer(s).expires_after(std::chrono::seconds(10));
            beast::get_lowest_layer(s).connect(ep);
            boost::system::error_code aec;
            (void)asio::ip::make_address(u.host, aec);
            if (aec) {
                SSL_set_tlsext_host_name(s.native_handle(), u.host.c_str());
            }
            s.set_verify_callback(asio::ssl::host_name_verification(u.host));
            s.handshake(asio::ssl::stream_base::client);
            return send(s, u, req);
        }
        beast::tcp_stream s(ioc);
        s.expires_after(std::chrono::seconds(10));
        s.connect(ep);
        return send(s, u, req);
    } catch (const boost::system::system_error& e) {
        throw std::runtime_error(what + " failed: " + e.code().message());
    }
}

}  // namespace

std::string parsed_url::host_header() const {
    const bool v6 = host.find(':') != std::string::npos;
    std::string h = v6 ? "[" + host + "]" : host;
    if (port != (tls ? 443 : 80)) {
        h += ":" + std::to_string(port);
    }
    return h;
}

parsed_url parse_url(const std::string& url) {
    parsed_url u;
    std::string rest;
    if (url.rfind("http://", 0) == 0) {
        rest = url.substr(7);
    } else if (url.rfind("https://", 0) == 0) {
        u.tls = true;
        rest = url.substr(8);
    } else {
        throw std::invalid_argument("the URL must start with http:// or https://: " + url);
    }
    const auto slash = rest.find('/');
    const std::string authority = rest.substr(0, slash);
    u.path = slash == std::string::npos ? "" : rest.substr(slash);
    while (!u.path.empty() && u.path.back() == '/') {
        u.path.pop_back();
    }
    std::string port_text;
    if (!authority.empty() && authority.front() == '[') {
        const auto close = authority.find(']');
        if (close == std::string::npos) {
            throw std::invalid_argument("unterminated IPv6 literal in " + url);
        }
        u.host = authority.substr(1, close - 1);
        if (close + 1 < authority.size() && authority[close + 1] == ':') {
            port_text = authority.substr(close + 2);
        }
    } else {
        const auto colon = authority.rfind(':');
        u.host = authority.substr(0, colon);
        if (colon != std::string::npos) {
            port_text = authority.substr(colon + 1);
        }
    }
    if (u.host.empty() || authority.find('@') != std::string::npos ||
        u.path.find_first_of("?#") != std::string::npos) {
        throw std::invalid_argument("the URL must be scheme://host[:port][/prefix]: " + url);
    }
    u.port = u.tls ? 443 : 80;
    if (!port_text.empty()) {
        char* end = nullptr;
        const long p = std::strtol(port_text.c_str(), &end, 10);
        if (end == nullptr || *end != '\0' || p <= 0 || p > 65535) {
            throw std::invalid_argument("bad port in " + url);
        }
        u.port = static_cast<std::uint16_t>(p);
    }
    return u;
}

std::string resolve_address(const parsed_url& u, bool allow_remote) {
    boost::system::error_code ec;
    auto addr = asio::ip::make_address(u.host, ec);
    if (ec) {
        if (u.host == "localhost") {
            return "127.0.0.1";
        }
        if (!allow_remote) {
            throw std::invalid_argument("refusing to load " + u.host +
                                        ": only loopback addresses (127.0.0.0/8, ::1, localhost) unless --allow-remote");
        }
        asio::io_context ioc;
        asio::ip::tcp::resolver r(ioc);
        const auto results = r.resolve(u.host, std::to_string(u.port));
        if (results.empty()) {
            throw std::invalid_argument("cannot resolve " + u.host);
        }
        return results.begin()->endpoint().address().to_string();
    }
    if (!addr.is_loopback() && !allow_remote) {
        throw std::invalid_argument("refusing to load " + u.host +
                                    ": only loopback addresses (127.0.0.0/8, ::1, localhost) unless --allow-remote");
    }
    return addr.to_string();
}

key_config fetch_key_config(const parsed_url& u, const std::string& address, const std::string& ca_file,
                            crypto::seal_alg alg) {
    const std::string target = u.path.empty() ? "/" : u.path;
    const auto res = exchange(u, address, ca_file, http::request<http::string_body>(http::verb::get, target, 11));
    if (res.result_int() != 200) {
        throw std::runtime_error("GET " + target + " answered " + std::to_string(res.result_int()));
    }
    const auto j = nlohmann::json::parse(res.body(), nullptr, false);
    if (j.is_discarded() || !j.contains("keys") || !j["keys"].is_array()) {
        throw std::runtime_error("GET " + target + " did not answer a key configuration ({\"keys\":[{kid,pk}]})");
    }
    // The first key of the algorithm asked for (an entry without "alg" is a
    // sealed-box key, as relays before HPKE listed them).
    const std::string_view want = alg == crypto::seal_alg::hpke ? crypto::hpke_alg : crypto::sealed_box_alg;
    const nlohmann::json* chosen = nullptr;
    for (const auto& e : j["keys"]) {
        if (!e.is_object() || !e.contains("kid") || !e["kid"].is_string() || !e.contains("pk") || !e["pk"].is_string()) {
            continue;
        }
        const bool has_alg = e.contains("alg") && e["alg"].is_string();
        const std::string_view e_alg = has_alg ? std::string_view(e["alg"].get_ref<const std::string&>())
                                               : crypto::sealed_box_alg;
        if (e_alg == want) {
            chosen = &e;
            break;
        }
    }
    if (chosen == nullptr) {
        throw std::runtime_error("GET " + target + " listed no " + std::string(want) + " key ({\"keys\":[{kid,pk,alg}]})");
    }
    key_config k;
    k.alg = alg;
    k.kid = (*chosen)["kid"].get<std::string>();
    const auto pk_text = (*chosen)["pk"].get<std::string>();
    const auto n = crypto::base64url_decode(pk_text, k.pk);
    if (!n || *n != k.pk.size()) {
        throw std::runtime_error("GET " + target + ": the key's pk is not 32 bytes of base64url");
    }
    return k;
}

std::string mint_grant(const parsed_url& relay, const std::string& address, const std::string& ca_file,
                       const key_config& kc, const std::string& api_key, const grant_request& g) {
    if (kc.alg != crypto::seal_alg::sealed_box) {
        throw std::runtime_error("minting a grant needs the relay's sealed-box key");
    }
    nlohmann::json body_json = {{"provider", g.provider}, {"paths", {g.provider_path}}, {"ttl_s", g.ttl_s},
                                      {"origin", g.origin}, {"cnf", {{"jwk", nlohmann::json::parse(g.app->public_jwk())}}}};
    if (!g.models.empty()) {
        body_json["models"] = g.models;
    }
    const std::string body = body_json.dump();
    const std::string target = relay.path + "/v1/grants";
    const auto payload = crypto::make_payload(api_key, static_cast<std::int64_t>(std::time(nullptr)), "POST", target,
                                              crypto::sha256(body));
    http::request<http::string_body> req(http::verb::post, target, 11);
    req.set(http::field::content_type, "application/json");
    req.set(http::field::authorization, crypto::seal_header(kc.kid, kc.pk, payload.span()));
    req.body() = body;
    const auto res = exchange(relay, address, ca_file, std::move(req));
    const auto j = nlohmann::json::parse(res.body(), nullptr, false);
    if (res.result_int() != 201 || j.is_discarded() || !j.contains("grant") || !j["grant"].is_string()) {
        throw std::runtime_error("POST " + target + " answered " + std::to_string(res.result_int()) + ": " +
                                 res.body().substr(0, 200));
    }
    return j["grant"].get<std::string>();
}

}  // namespace byok::bench
