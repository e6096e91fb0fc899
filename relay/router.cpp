#include "relay/router.hpp"

#include <algorithm>

namespace byok::relay {
namespace {

bool is_pchar(char c) noexcept {
    if ((c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z') || (c >= '0' && c <= '9')) {
        return true;
    }
    switch (c) {
    case '-': case '.': case '_': case '~': case '!': case '$': case '&': case '\'': case '(': case ')':
    case '*': case '+': case ',': case ';': case '=': case ':': case '@': case '%': case '/':
        return true;
    default:
        return false;
    }
}

bool is_hex(char c) noexcept {
    return (c >= '0' && c <= '9') || (c >= 'a' && c <= 'f') || (c >= 'A' && c <= 'F');
}

bool is_unreserved(char c) noexcept {
    return (c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z') || (c >= '0' && c <= '9') || c == '-' || c == '.' ||
           c == '_' || c == '~';
}

// The next segment of `s` from `pos` (after a '/'); `pos` moves past it and its '/'.
std::string_view next_segment(std::string_view s, std::size_t& pos, bool& last) noexcept {
    const auto end = s.find('/', pos);
    last = end == std::string_view::npos;
    const auto seg = s.substr(pos, last ? std::string_view::npos : end - pos);
    pos = last ? s.size() : end + 1;
    return seg;
}

bool is_query_safe(std::string_view q) noexcept {
    for (const char c : q) {
        const auto u = static_cast<unsigned char>(c);
        if (u <= 0x20 || u >= 0x7f || c == '#' || c == '\\') {
            return false;
        }
    }
    return true;
}

// `target` without public_path_prefix, if it begins with that whole segment.
std::string_view strip_public_prefix(const config& cfg, std::string_view target) noexcept {
    const std::string_view prefix = cfg.public_path_prefix;
    if (prefix.empty() || !target.starts_with(prefix)) {
        return target;
    }
    const std::string_view rest = target.substr(prefix.size());
    return rest.starts_with('/') ? rest : target;
}

}  // namespace

bool path_under(std::string_view path, std::string_view prefix) noexcept {
    return path.substr(0, prefix.size()) == prefix && (path.size() == prefix.size() || path[prefix.size()] == '/');
}

bool is_plain_path(std::string_view path) noexcept {
    if (path.empty() || path.front() != '/') {
        return false;
    }
    for (std::size_t i = 0; i < path.size(); ++i) {
        const char c = path[i];
        if (!is_pchar(c)) {
            return false;
        }
        if (c == '%') {
            if (i + 2 >= path.size() || !is_hex(path[i + 1]) || !is_hex(path[i + 2])) {
                return false;
            }
            const char hi = path[i + 1];
            const char lo = static_cast<char>(path[i + 2] | 0x20);
            // %2e ('.'), %2f ('/'), %5c ('\'), %00: a provider could decode them into a different path.
            if ((hi == '2' && (lo == 'e' || lo == 'f')) || (hi == '5' && lo == 'c') || (hi == '0' && lo == '0')) {
                return false;
            }
        }
    }
    std::size_t start = 1;
    for (;;) {
        const auto end = path.find('/', start);
        const auto seg = path.substr(start, end == std::string_view::npos ? std::string_view::npos : end - start);
        if (seg == "." || seg == "..") {
            return false;
        }
        if (seg.empty() && end != std::string_view::npos) {
            return false;  // "//": an empty segment
        }
        if (end == std::string_view::npos) {
            break;
        }
        start = end + 1;
    }
    return true;
}

bool path_allowed(std::string_view entry, std::string_view path) noexcept {
    if (entry.empty() || path.empty() || entry.front() != '/' || path.front() != '/') {
        return false;
    }
    if (entry == "/") {
        return true;
    }
    std::size_t ep = 1;
    std::size_t pp = 1;
    bool path_ended = false;
    for (;;) {
        bool entry_last = false;
        const std::string_view want = next_segment(entry, ep, entry_last);
        if (path_ended) {
            return false;  // the path is shorter than the entry
        }
        const std::string_view seg = next_segment(path, pp, path_ended);
        if (!want.empty() && want.front() == '{') {
            const std::string_view verb = want.substr(want.find('}') + 1);  // "" or ":verb"
            if (seg.size() <= verb.size() || seg.substr(seg.size() - verb.size()) != verb) {
                return false;
            }
            const std::string_view value = seg.substr(0, seg.size() - verb.size());
            if (value == "." || value == ".." ||
                !std::all_of(value.begin(), value.end(), [](char c) { return is_unreserved(c); })) {
                return false;
            }
            if (!verb.empty()) {
                return path_ended;  // a :verb ends the path
            }
        } else if (seg != want) {
            return false;
        }
        if (entry_last) {
            return true;  // the entry, and anything below it
        }
    }
}

route classify(const config& cfg, std::string_view target) noexcept {
    route r;
    target = strip_public_prefix(cfg, target);
    const auto q = target.find('?');
    const std::string_view path = target.substr(0, q);
    if (path.empty() || path.front() != '/') {
        return r;  // absolute-form, authority-form and asterisk-form are not served
    }
    if (q != std::string_view::npos && !is_query_safe(target.substr(q + 1))) {
        return r;
    }
    if (path == "/v1/keys") {
        r.kind = route_kind::keys;
        return r;
    }
    if (path == "/v1/grants") {
        r.kind = route_kind::grants;  // minting a scoped key grant: a sealed POST (relay/grants.hpp)
        return r;
    }
    if (path == "/healthz") {
        r.kind = route_kind::healthz;
        return r;
    }
    if (cfg.web_root) {
        if (path == "/") {
            r.kind = route_kind::root;
            return r;
        }
        if (path.substr(0, 5) == "/web/" && is_plain_path(path)) {
            r.kind = route_kind::web;
            r.web_path = path.substr(5);
            return r;
        }
    }
    if (path.size() < 2) {
        return r;
    }
    const auto slash = path.find('/', 1);
    if (slash == std::string_view::npos) {
        return r;
    }
    const provider* p = cfg.find_provider(path.substr(1, slash - 1));
    if (p == nullptr) {
        return r;
    }
    const std::string_view rest_path = path.substr(slash);
    if (!is_plain_path(rest_path)) {
        return r;
    }
    for (const auto& allowed : p->paths) {
        if (path_allowed(allowed, rest_path)) {
            r.kind = route_kind::sealed;
            r.prov = p;
            r.rest = target.substr(slash);
            r.rest_path = rest_path;
            r.body_limit = cfg.max_body_bytes;
            for (const auto& [entry, limit] : p->body_limits) {
                if (path_allowed(entry, rest_path)) {
                    r.body_limit = limit;
                    break;
                }
            }
            return r;
        }
    }
    return r;
}

std::string upstream_target(const provider& p, std::string_view rest) {
    std::string out;
    out.reserve(p.base_path.size() + rest.size());
    out.append(p.base_path).append(rest);
    return out;
}

std::string sealed_path(const config& cfg, std::string_view target) {
    if (strip_public_prefix(cfg, target).size() != target.size()) {
        return std::string(target);
    }
    std::string out;
    out.reserve(cfg.public_path_prefix.size() + target.size());
    out.append(cfg.public_path_prefix).append(target);
    return out;
}

}  // namespace byok::relay
