#include "relay/grants.hpp"

#include <algorithm>
#include <set>
#include <vector>

// GCC 12 reports false maybe-uninitialized warnings inside nlohmann::json's
// headers (as in relay/config.cpp).
#if defined(__GNUC__) && !defined(__clang__)  // the warning is GCC's; clang has no such option
#pragma GCC diagnostic push
#pragma GCC diagnostic ignored "-Wmaybe-uninitialized"
#endif
#include <nlohmann/json.hpp>
#if defined(__GNUC__) && !defined(__clang__)
#pragma GCC diagnostic pop
#endif

#include "crypto/json_lite.hpp"
#include "relay/router.hpp"

namespace byok::relay {
namespace {

using json = nlohmann::json;

// Parses `text`, refusing a member name given twice in any object (the
// library would keep the last copy): the relay's reading of a request must
// be the only one.
std::optional<json> parse_strict(std::string_view text) {
    std::vector<std::set<std::string>> names;
    bool duplicate = false;
    const json::parser_callback_t cb = [&](int, json::parse_event_t ev, json& parsed) {
        switch (ev) {
        case json::parse_event_t::object_start: names.emplace_back(); break;
        case json::parse_event_t::object_end: names.pop_back(); break;
        case json::parse_event_t::key:
            if (!names.empty() && !names.back().insert(parsed.get<std::string>()).second) {
                duplicate = true;
            }
            break;
        default: break;
        }
        return true;
    };
    json j = json::parse(text, cb, false);
    if (j.is_discarded() || duplicate || !j.is_object()) {
        return std::nullopt;
    }
    return j;
}

// An origin as a browser sends it: scheme "://" host [":" port], nothing else.
bool is_origin(std::string_view o) noexcept {
    const auto sep = o.find("://");
    if (sep == std::string_view::npos || sep == 0 || o.size() > crypto::max_grant_origin_bytes) {
        return false;
    }
    const std::string_view rest = o.substr(sep + 3);
    return !rest.empty() && std::all_of(rest.begin(), rest.end(), [](char c) {
        return (c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z') || (c >= '0' && c <= '9') || c == '.' || c == '-' ||
               c == ':' || c == '[' || c == ']';
    });
}

bool string_array(const json& j, std::size_t max_items, std::size_t max_bytes, std::vector<std::string>& out) {
    if (!j.is_array() || j.size() > max_items) {
        return false;
    }
    for (const auto& e : j) {
        if (!e.is_string()) {
            return false;
        }
        const auto& s = e.get_ref<const std::string&>();
        if (s.empty() || s.size() > max_bytes) {
            return false;
        }
        out.push_back(s);
    }
    return true;
}

}  // namespace

std::pair<std::string_view, std::size_t> proof_header(const boost::beast::http::fields& h) {
    const auto it = h.find(proof_header_name);
    return {it == h.end() ? std::string_view() : std::string_view(it->value()), h.count(proof_header_name)};
}

std::variant<error_code, crypto::grant_scope> parse_grant_request(const config& cfg, std::string_view body,
                                                                 std::int64_t now) {
    const auto parsed = parse_strict(body);
    if (!parsed) {
        return error_code::bad_request;
    }
    const json& j = *parsed;
    crypto::grant_scope s;
    auto str = [&](const char* name, std::size_t max, std::string& out) {
        const auto it = j.find(name);
        if (it == j.end() || !it->is_string()) {
            return false;
        }
        out = it->get<std::string>();
        return !out.empty() && out.size() <= max;
    };
    if (!str("provider", crypto::max_grant_provider_bytes, s.provider) ||
        !str("origin", crypto::max_grant_origin_bytes, s.origin) || !is_origin(s.origin)) {
        return error_code::bad_request;
    }
    const provider* prov = cfg.find_provider(s.provider);
    const auto paths = j.find("paths");
    if (prov == nullptr || paths == j.end() || paths->empty() ||
        !string_array(*paths, crypto::max_grant_paths, crypto::max_grant_path_bytes, s.paths)) {
        return error_code::bad_request;
    }
    if (const auto models = j.find("models"); models != j.end() &&
        !string_array(*models, crypto::max_grant_models, crypto::max_grant_model_bytes, s.models)) {
        return error_code::bad_request;
    }
    const auto ttl = j.find("ttl_s");
    if (ttl == j.end() || !ttl->is_number_integer() || ttl->get<std::int64_t>() < 1) {
        return error_code::bad_request;
    }
    const auto cnf = j.find("cnf");
    if (cnf == j.end() || !cnf->is_object()) {
        return error_code::bad_request;
    }
    const auto jwk = cnf->find("jwk");
    if (jwk == cnf->end() || !jwk->is_object()) {
        return error_code::bad_request;
    }
    auto member = [&](const char* name) {
        const auto it = jwk->find(name);
        return it != jwk->end() && it->is_string() ? it->get<std::string>() : std::string();
    };
    const auto point = member("kty") == "EC" && member("crv") == "P-256"
                           ? crypto::p256_from_jwk(member("x"), member("y"))
                           : std::nullopt;
    if (!point) {
        return error_code::bad_request;
    }
    s.cnf = *point;

    // What the operator allows: the provider's paths, the origins, the lifetime.
    for (const auto& p : s.paths) {
        if (!is_plain_path(p) ||
            std::none_of(prov->paths.begin(), prov->paths.end(), [&](const std::string& a) { return path_allowed(a, p); })) {
            return error_code::path_not_allowed;
        }
    }
    if (std::none_of(cfg.allow_origins.begin(), cfg.allow_origins.end(),
                     [&](const std::string& o) { return o == "*" || o == s.origin; })) {
        return error_code::origin_mismatch;
    }
    if (ttl->get<std::int64_t>() > cfg.grant_max_ttl_s) {
        return error_code::grant_too_long;
    }
    s.iat = now;
    s.exp = now + ttl->get<std::int64_t>();
    return s;
}

std::string grant_response_body(std::string_view token, const crypto::grant_scope& s) {
    // In the order docs/protocol.md shows.
    using ordered = nlohmann::ordered_json;
    ordered scope = {{"provider", s.provider}, {"paths", s.paths}};
    if (!s.models.empty()) {
        scope["models"] = s.models;
    }
    scope["origin"] = s.origin;
    scope["iat"] = s.iat;
    scope["cnf"] = {{"jkt", crypto::jwk_thumbprint(s.cnf)}};
    const ordered out = {{"grant", std::string(token)}, {"exp", s.exp}, {"scope", std::move(scope)}};
    return out.dump();
}

std::optional<error_code> check_grant_scope(const crypto::opened_grant& g, const grant_use& u) {
    const auto origin = u.headers->find(boost::beast::http::field::origin);
    if (origin != u.headers->end() && origin->value() != g.origin()) {
        return error_code::origin_mismatch;
    }
    const auto paths = g.paths();
    if (u.provider != g.provider() ||
        std::none_of(paths.begin(), paths.end(), [&](std::string_view p) { return path_under(u.rest_path, p); })) {
        return error_code::path_not_allowed;
    }
    if (!g.models().empty() && !body_model_allowed(g.models(), u.body)) {
        return error_code::model_not_allowed;
    }
    return std::nullopt;
}

bool body_model_allowed(std::span<const std::string_view> models, std::string_view body) {
    // The body is not secret; json_lite reads a copy in place.
    std::string copy(body);
    std::string_view model;
    int copies = 0;
    auto on_member = [&](std::string_view name, const crypto::json_lite::value& v) {
        if (name == "model") {
            ++copies;
            model = v.type == crypto::json_lite::kind::string ? v.str : std::string_view();
        }
        return true;
    };
    return crypto::json_lite::parse_object(copy, on_member) && copies == 1 && !model.empty() &&
           std::find(models.begin(), models.end(), model) != models.end();
}

}  // namespace byok::relay
