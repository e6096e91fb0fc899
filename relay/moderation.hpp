#pragma once
// The moderation pre-check's pure parts (issue 14): which text of a request
// is checked, the body of the check sent to OpenAI's POST /v1/moderations,
// and what its answer says. The I/O (the check sent with the user's own key,
// on the request's own provider) is in relay/key_path.cpp, where the key
// lives. Pure functions; thread-safe.

#include <optional>
#include <string>
#include <string_view>
#include <vector>

namespace byok::relay {

// The text parts of a request body: chat "messages" (string contents and
// "text" parts), Anthropic "system" + "messages", Responses "input" (a
// string, or items with string or text-part contents), legacy "prompt". Not
// images, audio or files. Empty when the body is not JSON or has no text.
[[nodiscard]] std::vector<std::string> moderation_texts(std::string_view body);

// {"model": model, "input": [texts...]}.
[[nodiscard]] std::string moderation_request_body(std::string_view model, const std::vector<std::string>& texts);

struct moderation_verdict {
    bool flagged = false;
    std::vector<std::string> categories;  // flagged category names, sorted, de-duplicated (no scores)
};

// Reads a /v1/moderations answer: flagged if any result is. nullopt when it
// is not such an answer (then the check failed, see on_error).
[[nodiscard]] std::optional<moderation_verdict> read_moderation_answer(std::string_view body);

// The 400 content_flagged body: the relay error shape plus "categories".
[[nodiscard]] std::string flagged_error_body(const std::vector<std::string>& categories);

}  // namespace byok::relay
