// json_lite::parse_object on arbitrary bytes, with a differential oracle:
// whatever the strict in-place reader accepts, nlohmann::json (a general
// RFC 8259 parser) must accept too, and each top-level string member must
// decode to the same text.
#include "crypto/json_lite.hpp"

#include <cstring>
#include <map>
#include <string>
#include <vector>

#include <nlohmann/json.hpp>

#include "fuzz_support.hpp"

using byok::crypto::json_lite::kind;
using byok::crypto::json_lite::value;

extern "C" int LLVMFuzzerTestOneInput(const std::uint8_t* data, std::size_t size) {
    std::vector<char> buf(data, data + size);
    const char* lo = buf.data();
    const char* hi = buf.data() + buf.size();
    std::map<std::string, std::vector<std::string>> strings;
    std::map<std::string, std::int64_t> ints;
    auto sink = [&](std::string_view name, const value& v) {
        // Every view points into the caller's buffer: nothing was allocated.
        BYOK_FUZZ_CHECK(name.empty() || (name.data() >= lo && name.data() + name.size() <= hi));
        if (v.type == kind::string) {
            BYOK_FUZZ_CHECK(v.str.empty() || (v.str.data() >= lo && v.str.data() + v.str.size() <= hi));
            strings[std::string(name)].emplace_back(v.str);
        } else if (v.type == kind::integer) {
            ints[std::string(name)] = v.num;
        }
        return true;
    };
    const bool ok = byok::crypto::json_lite::parse_object(std::span<char>(buf), sink);
    if (!ok) {
        return 0;
    }
    const std::string_view text = byok::fuzz::as_view(data, size);
    nlohmann::json j;
    try {
        j = nlohmann::json::parse(text);
    } catch (const nlohmann::json::out_of_range&) {
        // nlohmann refuses numbers past double's range ("1E+2542"); RFC 8259
        // §6 lets a parser take or refuse them, and json_lite takes them as
        // `other`. Not a disagreement about the grammar.
        return 0;
    } catch (const nlohmann::json::parse_error&) {
        BYOK_FUZZ_CHECK(false && "json_lite accepted what nlohmann::json rejects");
    }
    BYOK_FUZZ_CHECK(j.is_object());
    for (const auto& [name, values] : strings) {
        if (values.size() == 1 && j.contains(name) && j.at(name).is_string()) {
            BYOK_FUZZ_CHECK(j.at(name).get<std::string>() == values.front());
        }
    }
    for (const auto& [name, num] : ints) {
        if (j.contains(name) && j.at(name).is_number_integer() && strings.count(name) == 0) {
            BYOK_FUZZ_CHECK(j.at(name).get<std::int64_t>() == num);
        }
    }
    return 0;
}
