#include "mock_responses.hpp"

#include <openssl/sha.h>

#include <algorithm>
#include <array>
#include <cstring>
#include <nlohmann/json.hpp>

namespace byok::mock {

namespace {

// Fixed so that answers are byte-for-byte reproducible.
constexpr std::string_view created = "1763769600";

bool ends_with(std::string_view s, std::string_view suffix) {
    return s.size() >= suffix.size() && s.substr(s.size() - suffix.size()) == suffix;
}

std::string_view text_for(const answer_context& c, std::string& storage) {
    storage = "mock answer ";
    storage += c.sha;
    return storage;
}

std::string json_string(std::string_view s) {
    return nlohmann::json(s).dump(-1, ' ', false, nlohmann::json::error_handler_t::replace);
}

int clamp_int(const nlohmann::json& v, int lo, int hi, int fallback, bool& ok) {
    if (!v.is_number_integer()) {
        ok = false;
        return fallback;
    }
    const auto n = v.get<long long>();
    return static_cast<int>(std::clamp<long long>(n, lo, hi));
}

std::string base64(std::string_view in) {
    static constexpr char alphabet[] = "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/";
    std::string out;
    std::size_t i = 0;
    for (; i + 3 <= in.size(); i += 3) {
        const unsigned v = (unsigned{static_cast<unsigned char>(in[i])} << 16) |
                           (unsigned{static_cast<unsigned char>(in[i + 1])} << 8) | static_cast<unsigned char>(in[i + 2]);
        out += alphabet[(v >> 18) & 63];
        out += alphabet[(v >> 12) & 63];
        out += alphabet[(v >> 6) & 63];
        out += alphabet[v & 63];
    }
    if (i + 1 == in.size()) {
        const unsigned v = unsigned{static_cast<unsigned char>(in[i])} << 16;
        out += alphabet[(v >> 18) & 63];
        out += alphabet[(v >> 12) & 63];
        out += "==";
    } else if (i + 2 == in.size()) {
        const unsigned v = (unsigned{static_cast<unsigned char>(in[i])} << 16) |
                           (unsigned{static_cast<unsigned char>(in[i + 1])} << 8);
        out += alphabet[(v >> 18) & 63];
        out += alphabet[(v >> 12) & 63];
        out += alphabet[(v >> 6) & 63];
        out += '=';
    }
    return out;
}

std::string piece(int i) {
    return "tok" + std::to_string(i) + " ";
}

std::string chat_chunk(const answer_context& c, std::string_view delta, std::string_view finish) {
    std::string out;
    out.reserve(320);
    out += "data: {\"id\":\"chatcmpl-mock-";
    out += std::to_string(c.id);
    out += "\",\"object\":\"chat.completion.chunk\",\"created\":";
    out += created;
    out += ",\"model\":";
    out += c.model_json;
    out += ",\"system_fingerprint\":\"fp_mock\",\"choices\":[{\"index\":0,\"delta\":";
    out += delta;
    out += ",\"logprobs\":null,\"finish_reason\":";
    out += finish;
    out += "}]}\n\n";
    return out;
}

std::string sse(std::string_view event, const std::string& data) {
    std::string out;
    out.reserve(event.size() + data.size() + 16);
    out += "event: ";
    out += event;
    out += "\ndata: ";
    out += data;
    out += "\n\n";
    return out;
}

}  // namespace

route match_route(std::string_view target) noexcept {
    const auto q = target.find('?');
    const std::string_view path = target.substr(0, q);
    if (path.starts_with("/__mock/")) {
        if (path == "/__mock/requests") {
            return route::admin_requests;
        }
        if (path == "/__mock/stats") {
            return route::admin_stats;
        }
        if (path == "/__mock/reset") {
            return route::admin_reset;
        }
        return route::unknown;
    }
    if (ends_with(path, ":generateContent")) {
        return route::gemini_generate;
    }
    if (ends_with(path, ":streamGenerateContent")) {
        return route::gemini_stream;
    }
    if (ends_with(path, "/audio/transcriptions") || ends_with(path, "/audio/translations")) {
        return route::transcriptions;
    }
    if (ends_with(path, "/audio/speech")) {
        return route::speech;
    }
    if (ends_with(path, "/v1/moderations")) {
        return route::moderations;
    }
    if (ends_with(path, "/v1/realtime/client_secrets")) {
        return route::client_secrets;
    }
    if (ends_with(path, "/chat/completions")) {
        return route::chat_completions;
    }
    if (ends_with(path, "/completions")) {
        return route::completions;
    }
    if (ends_with(path, "/v1/responses")) {
        return route::responses;
    }
    if (ends_with(path, "/embeddings")) {
        return route::embeddings;
    }
    if (ends_with(path, "/models")) {
        return route::models;
    }
    if (ends_with(path, "/v1/messages")) {
        return route::messages;
    }
    return route::unknown;
}

bool is_admin(route r) noexcept {
    return r == route::admin_requests || r == route::admin_stats || r == route::admin_reset;
}

bool wants_get(route r) noexcept {
    return r == route::models || r == route::admin_requests || r == route::admin_stats;
}

bool wants_json(route r) noexcept {
    return r != route::transcriptions;
}

std::string model_from_path(std::string_view target) {
    const std::string_view path = target.substr(0, target.find('?'));
    const auto at = path.rfind("/models/");
    const auto colon = path.rfind(':');
    if (at == std::string_view::npos || colon == std::string_view::npos || colon < at + 8) {
        return {};
    }
    return json_string(path.substr(at + 8, colon - at - 8));
}

std::string_view answer_content_type(route r) noexcept {
    return r == route::speech ? "audio/mpeg" : "application/json";
}

request_options parse_options(std::string_view body, bool body_required) {
    request_options o;
    o.model_json = "\"mock-model\"";
    if (!body_required && body.empty()) {
        return o;
    }
    const auto j = nlohmann::json::parse(body, nullptr, false);
    if (j.is_discarded()) {
        o.error = "request body is not valid JSON";
        return o;
    }
    if (!j.is_object()) {
        if (body_required) {
            o.error = "request body must be a JSON object";
        }
        return o;
    }
    if (auto it = j.find("model"); it != j.end() && it->is_string() &&
                                   it->get_ref<const std::string&>().size() <= 256) {
        o.model_json = json_string(it->get_ref<const std::string&>());
    }
    if (auto it = j.find("encoding_format"); it != j.end() && it->is_string()) {
        o.base64 = it->get_ref<const std::string&>() == "base64";
    }
    if (auto it = j.find("stream"); it != j.end() && it->is_boolean()) {
        o.stream = it->get<bool>();
    }
    const auto m = j.find("mock");
    if (m == j.end() || m->is_null()) {
        return o;
    }
    if (!m->is_object()) {
        o.error = "\"mock\" must be an object";
        return o;
    }
    bool ok = true;
    if (auto it = m->find("mode"); it != m->end()) {
        const std::string mode = it->is_string() ? it->get<std::string>() : std::string();
        if (mode == "json") {
            o.mode = mock_mode::json;
        } else if (mode == "fail") {
            o.mode = mock_mode::fail;
        } else if (mode == "hang") {
            o.mode = mock_mode::hang;
        } else if (mode == "reset") {
            o.mode = mock_mode::reset;
        } else {
            o.error = "\"mock.mode\" must be json, fail, hang or reset";
            return o;
        }
    }
    if (auto it = m->find("events"); it != m->end()) {
        o.events = clamp_int(*it, 0, 1'000'000, o.events, ok);
    }
    if (auto it = m->find("interval_ms"); it != m->end()) {
        o.interval_ms = clamp_int(*it, 0, 3'600'000, o.interval_ms, ok);
    }
    if (auto it = m->find("first_delay_ms"); it != m->end()) {
        o.first_delay_ms = clamp_int(*it, 0, 3'600'000, o.first_delay_ms, ok);
    }
    if (auto it = m->find("pause_after"); it != m->end()) {
        o.pause_after = clamp_int(*it, 0, 1'000'000, o.pause_after, ok);
    }
    if (auto it = m->find("pause_ms"); it != m->end()) {
        o.pause_ms = clamp_int(*it, 0, 3'600'000, o.pause_ms, ok);
    }
    if (auto it = m->find("status"); it != m->end()) {
        o.status = clamp_int(*it, 400, 599, o.status, ok);
    }
    if (!ok) {
        o.error = "\"mock\" fields must be integers";
    }
    return o;
}

std::string body_sha256(std::string_view body) {
    std::array<unsigned char, SHA256_DIGEST_LENGTH> d{};
    SHA256(reinterpret_cast<const unsigned char*>(body.data()), body.size(), d.data());
    static constexpr char alphabet[] =
        "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789-_";
    std::string out;
    out.reserve(43);
    std::size_t i = 0;
    for (; i + 3 <= d.size(); i += 3) {
        const unsigned v = (unsigned{d[i]} << 16) | (unsigned{d[i + 1]} << 8) | d[i + 2];
        out += alphabet[(v >> 18) & 63];
        out += alphabet[(v >> 12) & 63];
        out += alphabet[(v >> 6) & 63];
        out += alphabet[v & 63];
    }
    // 32 = 30 + 2 bytes left: three characters, no padding.
    const unsigned v = (unsigned{d[i]} << 16) | (unsigned{d[i + 1]} << 8);
    out += alphabet[(v >> 18) & 63];
    out += alphabet[(v >> 12) & 63];
    out += alphabet[(v >> 6) & 63];
    return out;
}

std::string render_json_answer(const answer_context& c) {
    std::string text_storage;
    const std::string text = json_string(text_for(c, text_storage));
    const std::string id = std::to_string(c.id);
    std::string out;
    out.reserve(700);
    switch (c.r) {
    case route::chat_completions:
        out += "{\"id\":\"chatcmpl-mock-" + id + "\",\"object\":\"chat.completion\",\"created\":";
        out += created;
        out += ",\"model\":" + c.model_json;
        out += ",\"choices\":[{\"index\":0,\"message\":{\"role\":\"assistant\",\"content\":" + text;
        out += ",\"refusal\":null,\"annotations\":[]},\"logprobs\":null,\"finish_reason\":\"stop\"}],"
               "\"usage\":{\"prompt_tokens\":19,\"completion_tokens\":10,\"total_tokens\":29,"
               "\"prompt_tokens_details\":{\"cached_tokens\":0,\"audio_tokens\":0},"
               "\"completion_tokens_details\":{\"reasoning_tokens\":0,\"audio_tokens\":0,"
               "\"accepted_prediction_tokens\":0,\"rejected_prediction_tokens\":0}},"
               "\"service_tier\":\"default\",\"system_fingerprint\":\"fp_mock\"}";
        break;
    case route::completions:
        out += "{\"id\":\"cmpl-mock-" + id + "\",\"object\":\"text_completion\",\"created\":";
        out += created;
        out += ",\"model\":" + c.model_json;
        out += ",\"choices\":[{\"text\":" + text;
        out += ",\"index\":0,\"logprobs\":null,\"finish_reason\":\"stop\"}],"
               "\"usage\":{\"prompt_tokens\":5,\"completion_tokens\":10,\"total_tokens\":15}}";
        break;
    case route::responses:
        out += "{\"id\":\"resp_mock_" + id + "\",\"object\":\"response\",\"created_at\":";
        out += created;
        out += ",\"status\":\"completed\",\"error\":null,\"model\":" + c.model_json;
        out += ",\"output\":[{\"type\":\"message\",\"id\":\"msg_mock_" + id +
               "\",\"status\":\"completed\",\"role\":\"assistant\",\"content\":[{\"type\":"
               "\"output_text\",\"text\":" + text;
        out += ",\"annotations\":[]}]}],\"usage\":{\"input_tokens\":19,\"output_tokens\":10,"
               "\"total_tokens\":29}}";
        break;
    case route::embeddings: {
        out += "{\"object\":\"list\",\"data\":[{\"object\":\"embedding\",\"index\":0,\"embedding\":";
        out += c.base64 ? "\"" : "[";
        std::string floats;  // the same eight values as float32 little-endian, for base64
        for (std::size_t i = 0; i < 8; ++i) {
            const int v = static_cast<unsigned char>(c.sha[i]) % 100;
            if (!c.base64) {
                out += i == 0 ? "0." : ",0.";
                out += std::to_string(v / 10);
                out += std::to_string(v % 10);
            }
            const float f = static_cast<float>(v) / 100.0f;
            unsigned char b[4];
            std::memcpy(b, &f, 4);
            floats.append(reinterpret_cast<const char*>(b), 4);
        }
        out += c.base64 ? base64(floats) + "\"" : "]";
        out += "}],\"model\":" + c.model_json +
               ",\"usage\":{\"prompt_tokens\":5,\"total_tokens\":5}}";
        break;
    }
    case route::models:
        out += "{\"object\":\"list\",\"data\":["
               "{\"id\":\"mock-model\",\"object\":\"model\",\"created\":1763769600,\"owned_by\":\"byok-mock\"},"
               "{\"id\":\"gpt-4o-mini\",\"object\":\"model\",\"created\":1763769600,\"owned_by\":\"byok-mock\"},"
               "{\"id\":\"claude-sonnet-4-5\",\"object\":\"model\",\"created\":1763769600,\"owned_by\":\"byok-mock\"}]}";
        break;
    case route::messages:
        out += "{\"id\":\"msg_mock_" + id + "\",\"type\":\"message\",\"role\":\"assistant\",\"model\":" +
               c.model_json;
        out += ",\"content\":[{\"type\":\"text\",\"text\":" + text;
        out += "}],\"stop_reason\":\"end_turn\",\"stop_sequence\":null,"
               "\"usage\":{\"input_tokens\":19,\"output_tokens\":10}}";
        break;
    case route::gemini_generate:
        out += "{\"candidates\":[{\"content\":{\"parts\":[{\"text\":" + text +
               "}],\"role\":\"model\"},\"finishReason\":\"STOP\",\"index\":0}],"
               "\"usageMetadata\":{\"promptTokenCount\":19,\"candidatesTokenCount\":10,\"totalTokenCount\":29},"
               "\"modelVersion\":" + c.model_json + ",\"responseId\":\"mock-" + id + "\"}";
        break;
    case route::transcriptions:
        out += "{\"text\":" + json_string("mock transcript " + c.sha) + "}";
        break;
    case route::speech:
        out.resize(4096);
        for (std::size_t i = 0; i < out.size(); ++i) {
            out[i] = static_cast<char>((i * 7 + static_cast<unsigned char>(c.sha[i % c.sha.size()])) & 0xff);
        }
        break;
    case route::moderations: {
        const std::string f = c.flagged ? "true" : "false";
        out += "{\"id\":\"modr-mock-" + id + "\",\"model\":\"omni-moderation-latest\",\"results\":[{\"flagged\":" +
               f + ",\"categories\":{\"harassment\":false,\"hate\":false,\"self-harm\":false,\"sexual\":false,"
               "\"violence\":" + f + ",\"violence/graphic\":" + f +
               "},\"category_scores\":{\"harassment\":0.001,\"hate\":0.001,\"self-harm\":0.001,\"sexual\":0.001,"
               "\"violence\":" + (c.flagged ? "0.97" : "0.001") + ",\"violence/graphic\":" +
               (c.flagged ? "0.91" : "0.001") + "}}]}";
        break;
    }
    case route::client_secrets:
        out += "{\"value\":\"ek_mock_" + id + "\",\"expires_at\":1763773200,\"session\":{\"type\":\"realtime\","
               "\"object\":\"realtime.session\",\"id\":\"sess_mock_" + id + "\",\"model\":" + c.model_json + "}}";
        break;
    default:
        out += render_error(c.r, "invalid_request_error", "unknown route", "unknown_url");
        break;
    }
    return out;
}

std::string render_error(route r, std::string_view type, std::string_view message,
                         std::string_view code) {
    if (r == route::messages) {
        return "{\"type\":\"error\",\"error\":{\"type\":" + json_string(type) +
               ",\"message\":" + json_string(message) + "}}";
    }
    return "{\"error\":{\"message\":" + json_string(message) + ",\"type\":" + json_string(type) +
           ",\"param\":null,\"code\":" + json_string(code) + "}}";
}

std::string render_stream_prologue(const answer_context& c) {
    const std::string id = std::to_string(c.id);
    switch (c.r) {
    case route::messages:
        return sse("message_start",
                   "{\"type\":\"message_start\",\"message\":{\"id\":\"msg_mock_" + id +
                       "\",\"type\":\"message\",\"role\":\"assistant\",\"model\":" + c.model_json +
                       ",\"content\":[],\"stop_reason\":null,\"stop_sequence\":null,"
                       "\"usage\":{\"input_tokens\":19,\"output_tokens\":1}}}") +
               sse("content_block_start",
                   "{\"type\":\"content_block_start\",\"index\":0,\"content_block\":"
                   "{\"type\":\"text\",\"text\":\"\"}}");
    case route::responses:
        return sse("response.created",
                   "{\"type\":\"response.created\",\"response\":{\"id\":\"resp_mock_" + id +
                       "\",\"object\":\"response\",\"created_at\":" + std::string(created) +
                       ",\"status\":\"in_progress\",\"model\":" + c.model_json + ",\"output\":[]}}");
    default:
        return {};
    }
}

std::string render_stream_event(const answer_context& c, int i) {
    const std::string p = json_string(piece(i));
    const bool last = i + 1 >= c.events;
    switch (c.r) {
    case route::messages:
        return sse("content_block_delta",
                   "{\"type\":\"content_block_delta\",\"index\":0,\"delta\":{\"type\":\"text_delta\","
                   "\"text\":" + p + "}}");
    case route::responses:
        return sse("response.output_text.delta",
                   "{\"type\":\"response.output_text.delta\",\"item_id\":\"msg_mock_" +
                       std::to_string(c.id) + "\",\"output_index\":0,\"content_index\":0,\"delta\":" +
                       p + "}");
    case route::gemini_stream: {
        std::string out = "data: {\"candidates\":[{\"content\":{\"parts\":[{\"text\":" + p +
                          "}],\"role\":\"model\"},\"index\":0";
        if (last) {
            out += ",\"finishReason\":\"STOP\"}],\"usageMetadata\":{\"promptTokenCount\":19,\"candidatesTokenCount\":" +
                   std::to_string(c.events) + ",\"totalTokenCount\":" + std::to_string(19 + c.events) + "}";
        } else {
            out += "}]";
        }
        return out + ",\"modelVersion\":" + c.model_json + ",\"responseId\":\"mock-" + std::to_string(c.id) +
               "\"}\r\n\r\n";
    }
    case route::completions:
        return "data: {\"id\":\"cmpl-mock-" + std::to_string(c.id) +
               "\",\"object\":\"text_completion\",\"created\":" + std::string(created) +
               ",\"model\":" + c.model_json + ",\"choices\":[{\"text\":" + p +
               ",\"index\":0,\"logprobs\":null,\"finish_reason\":" + (last ? "\"stop\"" : "null") +
               "}]}\n\n";
    default:
        return chat_chunk(c,
                          i == 0 ? "{\"role\":\"assistant\",\"content\":" + p + "}"
                                 : "{\"content\":" + p + "}",
                          last ? "\"stop\"" : "null");
    }
}

std::string render_stream_epilogue(const answer_context& c) {
    switch (c.r) {
    case route::messages:
        return sse("content_block_stop", "{\"type\":\"content_block_stop\",\"index\":0}") +
               sse("message_delta",
                   "{\"type\":\"message_delta\",\"delta\":{\"stop_reason\":\"end_turn\","
                   "\"stop_sequence\":null},\"usage\":{\"output_tokens\":" +
                       std::to_string(c.events) + "}}") +
               sse("message_stop", "{\"type\":\"message_stop\"}");
    case route::responses: {
        std::string text;
        for (int i = 0; i < c.events; ++i) {
            text += piece(i);
        }
        return sse("response.completed",
                   "{\"type\":\"response.completed\",\"response\":{\"id\":\"resp_mock_" +
                       std::to_string(c.id) + "\",\"object\":\"response\",\"created_at\":" +
                       std::string(created) + ",\"status\":\"completed\",\"model\":" + c.model_json +
                       ",\"output\":[{\"type\":\"message\",\"id\":\"msg_mock_" +
                       std::to_string(c.id) +
                       "\",\"status\":\"completed\",\"role\":\"assistant\",\"content\":[{\"type\":"
                       "\"output_text\",\"text\":" + json_string(text) +
                       ",\"annotations\":[]}]}],\"usage\":{\"input_tokens\":19,\"output_tokens\":" +
                       std::to_string(c.events) + ",\"total_tokens\":" +
                       std::to_string(19 + c.events) + "}}}");
    }
    case route::gemini_stream:
        return {};  // Gemini ends its stream with the last event, no [DONE]
    default:
        return "data: [DONE]\n\n";
    }
}

}  // namespace byok::mock
