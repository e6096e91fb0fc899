#pragma once
// The fenced blocks labelled "example:<name>" in docs/protocol.md, for the
// tests that check the document's worked examples are real
// (tests/crypto/protocol_doc_test.cpp, tests/relay/grants_test.cpp).

#include <fstream>
#include <map>
#include <string>

#include <doctest/doctest.h>

namespace byok::test {

// label -> block content, without the final newline.
inline std::map<std::string, std::string> example_blocks() {
    const std::string doc = std::string(BYOK_SOURCE_DIR) + "/docs/protocol.md";
    std::ifstream in(doc);
    REQUIRE_MESSAGE(in.good(), "cannot read " << doc);
    std::map<std::string, std::string> out;
    std::string line;
    std::string label;
    std::string content;
    bool inside = false;
    while (std::getline(in, line)) {
        if (!inside && line.rfind("```", 0) == 0) {
            inside = true;
            const auto at = line.find(" example:");
            label = at == std::string::npos ? "" : line.substr(at + 9);
            content.clear();
        } else if (inside && line == "```") {
            inside = false;
            if (!label.empty()) {
                REQUIRE_MESSAGE(!out.contains(label), "two blocks labelled example:" << label);
                if (!content.empty()) {
                    content.pop_back();
                }
                out[label] = content;
            }
        } else if (inside) {
            content += line;
            content += '\n';
        }
    }
    REQUIRE_FALSE(inside);
    return out;
}


}  // namespace byok::test
