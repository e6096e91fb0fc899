#include "relay/moderation.hpp"

#include <doctest/doctest.h>

#include <nlohmann/json.hpp>

using namespace byok::relay;

TEST_CASE("moderation_texts: the text parts of chat, Anthropic and Responses bodies, nothing else") {
    using v = std::vector<std::string>;
    CHECK(moderation_texts(R"({"model":"m","messages":[{"role":"system","content":"be nice"},
        {"role":"user","content":[{"type":"text","text":"hello"},{"type":"image_url","image_url":{"url":"data:x"}}]}]})") ==
          v{"be nice", "hello"});
    CHECK(moderation_texts(R"({"system":[{"type":"text","text":"sys"}],"messages":[{"role":"user","content":"hi"}]})") ==
          v{"sys", "hi"});
    CHECK(moderation_texts(R"({"model":"m","input":"just text"})") == v{"just text"});
    CHECK(moderation_texts(R"({"instructions":"ins","input":[{"role":"user","content":[{"type":"input_text","text":"a"},
        {"type":"input_image","image_url":"x"}]},{"role":"user","content":"b"}]})") == v{"ins", "a", "b"});
    CHECK(moderation_texts(R"({"model":"m","input":["e1","e2"]})") == v{"e1", "e2"});
    CHECK(moderation_texts(R"({"prompt":"p"})") == v{"p"});
    CHECK(moderation_texts("not json").empty());
    CHECK(moderation_texts("--boundary\r\nmultipart").empty());
    CHECK(moderation_texts(R"({"messages":[{"role":"user","content":""}]})").empty());
}

TEST_CASE("moderation_request_body: model and the texts as input") {
    const auto j = nlohmann::json::parse(moderation_request_body("omni-moderation-latest", {"a", "b\"c"}));
    CHECK(j["model"] == "omni-moderation-latest");
    CHECK(j["input"] == nlohmann::json::array({"a", "b\"c"}));
}

TEST_CASE("read_moderation_answer: flagged if any result is; category names only; garbage is no verdict") {
    const auto v = read_moderation_answer(
        R"({"results":[{"flagged":false,"categories":{"hate":false}},
                       {"flagged":true,"categories":{"violence":true,"violence/graphic":true,"hate":false,
                        "<script>":true},"category_scores":{"violence":0.9}}]})");
    REQUIRE(v);
    CHECK(v->flagged);
    CHECK(v->categories == std::vector<std::string>{"violence", "violence/graphic"});
    const auto clean = read_moderation_answer(R"({"results":[{"flagged":false,"categories":{"hate":false}}]})");
    REQUIRE(clean);
    CHECK_FALSE(clean->flagged);
    CHECK(clean->categories.empty());
    for (const char* bad : {"", "{}", R"({"results":[]})", R"({"results":[{"categories":{}}]})",
                            R"({"results":[{"flagged":"yes"}]})", R"({"error":{"message":"x"}})", "[1]"}) {
        CHECK_MESSAGE(!read_moderation_answer(bad), bad);
    }
}

TEST_CASE("flagged_error_body: the relay error shape with the categories") {
    const auto j = nlohmann::json::parse(flagged_error_body({"violence"}));
    CHECK(j["error"]["type"] == "relay_error");
    CHECK(j["error"]["code"] == "content_flagged");
    CHECK(j["error"]["categories"] == nlohmann::json::array({"violence"}));
}
