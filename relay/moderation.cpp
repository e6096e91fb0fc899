#include "relay/moderation.hpp"

#include <algorithm>

#include "relay/errors.hpp"

// GCC 12 reports false maybe-uninitialized warnings inside nlohmann::json's
// iterators at -O2 (as in relay/config.cpp).
#if defined(__GNUC__) && !defined(__clang__)  // the warning is GCC's; clang has no such option
#pragma GCC diagnostic push
#pragma GCC diagnostic ignored "-Wmaybe-uninitialized"
#endif
#include <nlohmann/json.hpp>
#if defined(__GNUC__) && !defined(__clang__)
#pragma GCC diagnostic pop
#endif

namespace byok::relay {
namespace {

using json = nlohmann::json;

// A category name is echoed to the client: short, and only the characters
// OpenAI's names use ("self-harm/intent", "violence/graphic").
bool plain_name(const std::string& n) {
    return !n.empty() && n.size() <= 64 && std::all_of(n.begin(), n.end(), [](char c) {
        return (c >= 'a' && c <= 'z') || (c >= '0' && c <= '9') || c == '-' || c == '_' || c == '/';
    });
}

// A message content: a string, or a list of parts of which "text" ones count
// ({"type":"text"|"input_text"|"output_text","text":"..."}).
void add_content(const json& c, std::vector<std::string>& out) {
    if (c.is_string()) {
        out.push_back(c.get<std::string>());
        return;
    }
    if (!c.is_array()) {
        return;
    }
    for (const auto& part : c) {
        if (part.is_string()) {
            out.push_back(part.get<std::string>());
        } else if (part.is_object() && part.contains("text") && part["text"].is_string()) {
            const std::string type = part.value("type", std::string("text"));
            if (type == "text" || type == "input_text" || type == "output_text") {
                out.push_back(part["text"].get<std::string>());
            }
        }
    }
}

void add_messages(const json& messages, std::vector<std::string>& out) {
    if (!messages.is_array()) {
        return;
    }
    for (const auto& m : messages) {
        if (m.is_object() && m.contains("content")) {
            add_content(m["content"], out);
        }
    }
}

}  // namespace

std::vector<std::string> moderation_texts(std::string_view body) {
    std::vector<std::string> out;
    const json j = json::parse(body, nullptr, false);
    if (j.is_discarded() || !j.is_object()) {
        return out;
    }
    if (j.contains("system")) {
        add_content(j["system"], out);  // Anthropic: a string or text blocks
    }
    if (j.contains("instructions")) {
        add_content(j["instructions"], out);  // Responses
    }
    if (j.contains("messages")) {
        add_messages(j["messages"], out);
    }
    if (j.contains("input")) {
        const json& in = j["input"];
        if (in.is_array() && std::any_of(in.begin(), in.end(), [](const json& x) { return x.is_object(); })) {
            add_messages(in, out);  // Responses items
        } else {
            add_content(in, out);  // a string or a list of strings
        }
    }
    if (j.contains("prompt")) {
        add_content(j["prompt"], out);
    }
    std::erase_if(out, [](const std::string& s) { return s.empty(); });
    return out;
}

std::string moderation_request_body(std::string_view model, const std::vector<std::string>& texts) {
    json j;
    j["model"] = model;
    j["input"] = texts;
    return j.dump(-1, ' ', false, json::error_handler_t::replace);
}

std::optional<moderation_verdict> read_moderation_answer(std::string_view body) {
    const json j = json::parse(body, nullptr, false);
    if (j.is_discarded() || !j.is_object() || !j.contains("results") || !j["results"].is_array() ||
        j["results"].empty()) {
        return std::nullopt;
    }
    moderation_verdict v;
    for (const auto& r : j["results"]) {
        if (!r.is_object() || !r.contains("flagged") || !r["flagged"].is_boolean()) {
            return std::nullopt;
        }
        v.flagged = v.flagged || r["flagged"].get<bool>();
        if (r.contains("categories") && r["categories"].is_object()) {
            for (const auto& [name, on] : r["categories"].items()) {
                if (on.is_boolean() && on.get<bool>() && plain_name(name)) {
                    v.categories.push_back(name);
                }
            }
        }
    }
    std::sort(v.categories.begin(), v.categories.end());
    v.categories.erase(std::unique(v.categories.begin(), v.categories.end()), v.categories.end());
    if (!v.flagged) {
        v.categories.clear();
    }
    return v;
}

std::string flagged_error_body(const std::vector<std::string>& categories) {
    const auto& d = describe(error_code::content_flagged);
    json j;
    j["error"]["message"] = d.message;
    j["error"]["type"] = "relay_error";
    j["error"]["code"] = d.code;
    j["error"]["categories"] = categories;
    return j.dump();
}

}  // namespace byok::relay
