#include "relay/grants.hpp"

#include <algorithm>
#include <array>
#include <cstring>
#include <set>
#include <vector>

// GCC 12 reports false maybe-uninitialized warnings inside nlohmann::json's
// headers (as in relay/config.cpp).
#pragma GCC diagnostic ignored "-Wmaybe-uninitialized"
#include <nlohmann/json.hpp>

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

// The top-level "model" of a request body, read without copying the body
// or decoding anything else: a strict RFC 8259 reader of one object (valid
// UTF-8, no lone surrogate, no raw control character, integers within
// int64, at most 32 levels deep: what crypto/json_lite accepts) that only
// decodes the names of the top-level members and the value of "model".
// Plain string bytes are skipped by a table lookup, with no copy (bodies of
// long conversations are mostly that).
class model_scanner {
public:
    explicit model_scanner(std::string_view body) noexcept : p_(body.data()), end_(body.data() + body.size()) {}

    // True if the body is one valid JSON object (white space around allowed).
    bool document() noexcept {
        skip_ws();
        if (!object(0)) {
            return false;
        }
        skip_ws();
        return p_ == end_;
    }
    // How many top-level members are named "model" (after unescaping).
    [[nodiscard]] int copies() const noexcept { return copies_; }
    // The last one's value, unescaped, if it was a string of at most
    // max_grant_model_bytes (a longer one names no grant's model).
    [[nodiscard]] std::optional<std::string_view> model() const noexcept {
        return model_ok_ ? std::optional(std::string_view(model_.data, model_.n)) : std::nullopt;
    }

private:
    static constexpr int max_depth = 32;  // as crypto/json_lite

    // A bounded output for the few strings that are decoded.
    template <std::size_t N>
    struct small_text {
        char data[N];
        std::size_t n = 0;
        bool overflow = false;
        void put(char c) noexcept {
            if (n < N) {
                data[n++] = c;
            } else {
                overflow = true;
            }
        }
    };
    using name_text = small_text<8>;
    using model_text = small_text<crypto::max_grant_model_bytes>;

    bool object(int depth) noexcept {
        if (depth >= max_depth || !eat('{')) {
            return false;
        }
        skip_ws();
        if (eat('}')) {
            return true;
        }
        for (;;) {
            skip_ws();
            bool is_model = false;
            if (depth == 0) {
                name_text name;
                if (!string(&name)) {
                    return false;
                }
                is_model = !name.overflow && std::string_view(name.data, name.n) == "model";
            } else if (!string<name_text>(nullptr)) {
                return false;
            }
            skip_ws();
            if (!eat(':')) {
                return false;
            }
            skip_ws();
            if (is_model) {
                ++copies_;
                model_ok_ = false;
                if (p_ != end_ && *p_ == '"') {
                    model_.n = 0;
                    model_.overflow = false;
                    if (!string(&model_)) {
                        return false;
                    }
                    model_ok_ = !model_.overflow;
                } else if (!value(depth)) {
                    return false;
                }
            } else if (!value(depth)) {
                return false;
            }
            skip_ws();
            if (eat('}')) {
                return true;
            }
            if (!eat(',')) {
                return false;
            }
        }
    }

    bool array(int depth) noexcept {
        if (depth >= max_depth || !eat('[')) {
            return false;
        }
        skip_ws();
        if (eat(']')) {
            return true;
        }
        for (;;) {
            skip_ws();
            if (!value(depth)) {
                return false;
            }
            skip_ws();
            if (eat(']')) {
                return true;
            }
            if (!eat(',')) {
                return false;
            }
        }
    }

    bool value(int depth) noexcept {
        if (p_ == end_) {
            return false;
        }
        switch (*p_) {
        case '{': return object(depth + 1);
        case '[': return array(depth + 1);
        case '"': return string<name_text>(nullptr);
        case 't': return literal("true");
        case 'f': return literal("false");
        case 'n': return literal("null");
        default: return number();
        }
    }

    bool literal(std::string_view word) noexcept {
        if (static_cast<std::size_t>(end_ - p_) < word.size() || std::string_view(p_, word.size()) != word) {
            return false;
        }
        p_ += word.size();
        return true;
    }

    bool number() noexcept {
        const bool negative = eat('-');
        if (p_ == end_ || !is_digit(*p_)) {
            return false;
        }
        bool fits = true;
        std::uint64_t magnitude = 0;
        const std::uint64_t limit = negative ? std::uint64_t{1} << 63 : (std::uint64_t{1} << 63) - 1;
        if (*p_ == '0') {
            ++p_;
        } else {
            while (p_ != end_ && is_digit(*p_)) {
                const auto d = static_cast<std::uint64_t>(*p_ - '0');
                fits = fits && magnitude <= (limit - d) / 10;
                magnitude = fits ? magnitude * 10 + d : magnitude;
                ++p_;
            }
        }
        bool integral = true;
        if (eat('.')) {
            integral = false;
            if (!digits()) {
                return false;
            }
        }
        if (p_ != end_ && (*p_ == 'e' || *p_ == 'E')) {
            ++p_;
            integral = false;
            if (p_ != end_ && (*p_ == '+' || *p_ == '-')) {
                ++p_;
            }
            if (!digits()) {
                return false;
            }
        }
        return fits || !integral;
    }

    bool digits() noexcept {
        const char* start = p_;
        while (p_ != end_ && is_digit(*p_)) {
            ++p_;
        }
        return p_ != start;
    }

    // A string at p_, validated; decoded into *out when out is not null.
    template <class Out>
    bool string(Out* out) noexcept {
        if (!eat('"')) {
            return false;
        }
        for (;;) {
            // A local cursor: p_ itself would be reloaded after every char read (chars alias it).
            const char* const run = p_;
            const char* q = p_;
            const char* const end = end_;
            while (end - q >= 8 && plain_word(q)) {
                q += 8;
            }
            while (q != end && plain_byte[static_cast<unsigned char>(*q)]) {
                ++q;
            }
            p_ = q;
            if (out != nullptr) {
                for (const char* c = run; c != p_; ++c) {
                    out->put(*c);
                }
            }
            if (p_ == end_) {
                return false;
            }
            const auto c = static_cast<unsigned char>(*p_);
            if (c == '"') {
                ++p_;
                return true;
            }
            if (c < 0x20) {
                return false;
            }
            if (c == '\\') {
                std::uint32_t cp = 0;
                if (!escape(cp)) {
                    return false;
                }
                if (out != nullptr) {
                    put_utf8(*out, cp);
                }
            } else {
                const char* seq = p_;
                if (!utf8_sequence()) {
                    return false;
                }
                if (out != nullptr) {
                    for (const char* b = seq; b != p_; ++b) {
                        out->put(*b);
                    }
                }
            }
        }
    }

    // True if all of the 8 bytes at p stand for themselves (SWAR: no byte
    // below 0x20 or from 0x80 up, no '"', no backslash). Exact: any such
    // byte makes it false, and the byte loop then looks at each.
    static bool plain_word(const char* p) noexcept {
        constexpr std::uint64_t ones = 0x0101010101010101;
        constexpr std::uint64_t high = 0x8080808080808080;
        std::uint64_t v = 0;
        std::memcpy(&v, p, sizeof v);
        const auto below = [](std::uint64_t x, std::uint64_t n) { return (x - n * ones) & ~x & high; };
        return ((v & high) | below(v, 0x20) | below(v ^ ('"' * ones), 1) | below(v ^ ('\\' * ones), 1)) == 0;
    }

    // The ASCII bytes that stand for themselves inside a string.
    static constexpr std::array<bool, 256> plain_byte = [] {
        std::array<bool, 256> t{};
        for (int c = 0x20; c < 0x80; ++c) {
            t[static_cast<std::size_t>(c)] = c != '"' && c != '\\';
        }
        return t;
    }();

    // The escape at p_ (a backslash), as the code point it stands for.
    bool escape(std::uint32_t& cp) noexcept {
        ++p_;
        if (p_ == end_) {
            return false;
        }
        switch (*p_++) {
        case '"': cp = '"'; return true;
        case '\\': cp = '\\'; return true;
        case '/': cp = '/'; return true;
        case 'b': cp = '\b'; return true;
        case 'f': cp = '\f'; return true;
        case 'n': cp = '\n'; return true;
        case 'r': cp = '\r'; return true;
        case 't': cp = '\t'; return true;
        case 'u': break;
        default: return false;
        }
        if (!hex4(cp)) {
            return false;
        }
        if (cp >= 0xD800 && cp <= 0xDBFF) {
            std::uint32_t low = 0;
            if (end_ - p_ < 6 || p_[0] != '\\' || p_[1] != 'u') {
                return false;
            }
            p_ += 2;
            if (!hex4(low) || low < 0xDC00 || low > 0xDFFF) {
                return false;
            }
            cp = 0x10000 + ((cp - 0xD800) << 10) + (low - 0xDC00);
            return true;
        }
        return cp < 0xDC00 || cp > 0xDFFF;
    }

    bool hex4(std::uint32_t& cp) noexcept {
        if (end_ - p_ < 4) {
            return false;
        }
        cp = 0;
        for (int i = 0; i < 4; ++i) {
            const char c = *p_++;
            const int d = c >= '0' && c <= '9' ? c - '0'
                          : c >= 'a' && c <= 'f' ? c - 'a' + 10
                          : c >= 'A' && c <= 'F' ? c - 'A' + 10
                                                 : -1;
            if (d < 0) {
                return false;
            }
            cp = (cp << 4) | static_cast<std::uint32_t>(d);
        }
        return true;
    }

    template <class Out>
    static void put_utf8(Out& out, std::uint32_t cp) noexcept {
        if (cp < 0x80) {
            out.put(static_cast<char>(cp));
        } else if (cp < 0x800) {
            out.put(static_cast<char>(0xC0 | (cp >> 6)));
            out.put(static_cast<char>(0x80 | (cp & 0x3F)));
        } else if (cp < 0x10000) {
            out.put(static_cast<char>(0xE0 | (cp >> 12)));
            out.put(static_cast<char>(0x80 | ((cp >> 6) & 0x3F)));
            out.put(static_cast<char>(0x80 | (cp & 0x3F)));
        } else {
            out.put(static_cast<char>(0xF0 | (cp >> 18)));
            out.put(static_cast<char>(0x80 | ((cp >> 12) & 0x3F)));
            out.put(static_cast<char>(0x80 | ((cp >> 6) & 0x3F)));
            out.put(static_cast<char>(0x80 | (cp & 0x3F)));
        }
    }

    // One well-formed UTF-8 sequence of two to four bytes (RFC 3629).
    bool utf8_sequence() noexcept {
        const auto b0 = static_cast<unsigned char>(*p_);
        int len = 0;
        unsigned char lo = 0x80;
        unsigned char hi = 0xBF;
        if (b0 >= 0xC2 && b0 <= 0xDF) {
            len = 2;
        } else if (b0 >= 0xE0 && b0 <= 0xEF) {
            len = 3;
            lo = b0 == 0xE0 ? 0xA0 : 0x80;
            hi = b0 == 0xED ? 0x9F : 0xBF;
        } else if (b0 >= 0xF0 && b0 <= 0xF4) {
            len = 4;
            lo = b0 == 0xF0 ? 0x90 : 0x80;
            hi = b0 == 0xF4 ? 0x8F : 0xBF;
        } else {
            return false;
        }
        if (end_ - p_ < len) {
            return false;
        }
        const auto b1 = static_cast<unsigned char>(p_[1]);
        if (b1 < lo || b1 > hi) {
            return false;
        }
        for (int i = 2; i < len; ++i) {
            const auto b = static_cast<unsigned char>(p_[i]);
            if (b < 0x80 || b > 0xBF) {
                return false;
            }
        }
        p_ += len;
        return true;
    }

    static bool is_digit(char c) noexcept { return c >= '0' && c <= '9'; }
    void skip_ws() noexcept {
        while (p_ != end_ && (*p_ == ' ' || *p_ == '\t' || *p_ == '\n' || *p_ == '\r')) {
            ++p_;
        }
    }
    bool eat(char c) noexcept {
        if (p_ != end_ && *p_ == c) {
            ++p_;
            return true;
        }
        return false;
    }

    const char* p_;
    const char* end_;
    int copies_ = 0;
    model_text model_;
    bool model_ok_ = false;
};

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
    model_scanner scan(body);
    if (!scan.document() || scan.copies() != 1 || !scan.model()) {
        return false;
    }
    const std::string_view model = *scan.model();
    return !model.empty() && std::find(models.begin(), models.end(), model) != models.end();
}

}  // namespace byok::relay
