#pragma once
// What byok-mock-provider answers: route matching, the per-request options
// read from the body's "mock" object, and the rendering of OpenAI- and
// Anthropic-shaped bodies and SSE events. Pure functions, thread-safe.
//
// Deterministic content, so tests can check an answer arrived intact:
//  - a non-streaming answer's text is "mock answer " + body_sha256, where
//    body_sha256 is base64url-no-pad(SHA-256(request body)), the same value
//    /__mock/requests records;
//  - streamed content event i (0-based) carries the text piece "tok<i> ", so
//    the concatenated text of N events is "tok0 tok1 ... tok<N-1> ".

#include <cstdint>
#include <string>
#include <string_view>

namespace byok::mock {

enum class route {
    chat_completions,  // POST .../v1/chat/completions
    completions,       // POST .../v1/completions
    responses,         // POST .../v1/responses
    embeddings,        // POST .../v1/embeddings
    models,            // GET  .../v1/models
    messages,          // POST .../v1/messages (Anthropic)
    gemini_generate,   // POST .../models/<model>:generateContent (Gemini native)
    gemini_stream,     // POST .../models/<model>:streamGenerateContent (SSE with ?alt=sse)
    transcriptions,    // POST .../v1/audio/transcriptions|translations (multipart; answer names the body's SHA-256)
    speech,            // POST .../v1/audio/speech (binary answer, see render_speech)
    moderations,       // POST .../v1/moderations (flagged if the body holds MOCK_FLAG)
    client_secrets,    // POST .../v1/realtime/client_secrets
    admin_requests,    // GET  /__mock/requests
    admin_stats,       // GET  /__mock/stats
    admin_reset,       // POST /__mock/reset
    unknown,
};

// Matches the path part of target (query ignored). Provider routes match any
// target ending with the route's path ("/chat/completions", "/models",
// "/embeddings": with or without /v1, for DeepSeek and Gemini's OpenAI
// paths), so base URLs with a prefix work.
[[nodiscard]] route match_route(std::string_view target) noexcept;
[[nodiscard]] bool is_admin(route r) noexcept;
[[nodiscard]] bool wants_get(route r) noexcept;  // else POST
// Whether the body is JSON with the "mock" options (not a multipart upload).
[[nodiscard]] bool wants_json(route r) noexcept;
// Gemini native: the model named in the path ("models/<m>:verb") as a JSON string literal, or "".
[[nodiscard]] std::string model_from_path(std::string_view target);
// The Content-Type of a successful non-streamed answer.
[[nodiscard]] std::string_view answer_content_type(route r) noexcept;

enum class mock_mode { json, fail, hang, reset };

// Options read from the request body.
struct request_options {
    bool stream = false;
    mock_mode mode = mock_mode::json;
    int events = 20;
    int interval_ms = 0;
    int first_delay_ms = 0;
    int pause_after = 0;       // with pause_ms: after this many events, one pause...
    int pause_ms = 0;          // ...of this many ms (a stream whose first events come at once, the rest later)
    int status = 500;          // for mode "fail"; "mock": {"status": N} overrides
    std::string model_json;    // the request's "model" as a JSON string literal
    std::string error;         // non-empty: the body was not acceptable (answer 400)
    bool base64 = false;       // embeddings: "encoding_format": "base64" (float32 little-endian, base64)
};

// Parses body as JSON. A GET (models) passes an empty body and gets defaults.
[[nodiscard]] request_options parse_options(std::string_view body, bool body_required);

[[nodiscard]] std::string body_sha256(std::string_view body);

// Everything the renderers need about one request.
struct answer_context {
    route r = route::chat_completions;
    std::string model_json;  // JSON string literal, e.g. "\"gpt-4o\""
    std::string sha;         // body_sha256
    std::uint64_t id = 0;
    int events = 20;
    bool flagged = false;    // moderations: the body held MOCK_FLAG
    bool base64 = false;     // embeddings as base64 of float32 values (what the openai clients ask for)
};

// The non-streamed answer body: JSON, or for speech 4096 bytes of "audio"
// in which byte i is (i * 7 + sha[i % sha.size()]) & 0xff: every byte value,
// NULs and CR/LF included, so a binary answer is checked byte for byte.
[[nodiscard]] std::string render_json_answer(const answer_context& c);
// An OpenAI-shaped error body ({"error":{...}}), or Anthropic-shaped for messages.
[[nodiscard]] std::string render_error(route r, std::string_view type, std::string_view message,
                                       std::string_view code);

// SSE: prologue (may be empty), events 0..events-1, epilogue. Each returns
// complete SSE events ("...\n\n").
[[nodiscard]] std::string render_stream_prologue(const answer_context& c);
[[nodiscard]] std::string render_stream_event(const answer_context& c, int i);
[[nodiscard]] std::string render_stream_epilogue(const answer_context& c);

}  // namespace byok::mock
