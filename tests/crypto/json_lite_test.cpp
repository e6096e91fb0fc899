#include "crypto/json_lite.hpp"

#include <doctest/doctest.h>

#include <cstdint>
#include <limits>
#include <map>
#include <optional>
#include <string>
#include <vector>

using byok::crypto::json_lite::kind;
using byok::crypto::json_lite::parse_object;
using byok::crypto::json_lite::value;

namespace {

struct member {
    std::string name;
    kind type;
    std::string str;
    std::int64_t num;
};

// Parses a copy of `text`; nullopt if the parser refuses it.
std::optional<std::vector<member>> parse(std::string text) {
    std::vector<member> out;
    auto sink = [&](std::string_view n, const value& v) {
        out.push_back({std::string(n), v.type, std::string(v.str), v.num});
        return true;
    };
    if (!parse_object(std::span(text.data(), text.size()), sink)) {
        return std::nullopt;
    }
    return out;
}

// The decoded string value of {"s": <json_string>}, or nullopt if refused.
std::optional<std::string> string_value(const std::string& json_string) {
    const auto m = parse("{\"s\":" + json_string + "}");
    if (!m) {
        return std::nullopt;
    }
    REQUIRE(m->size() == 1);
    REQUIRE((*m)[0].type == kind::string);
    return (*m)[0].str;
}

std::optional<member> number_value(const std::string& json_number) {
    const auto m = parse("{\"n\":" + json_number + "}");
    if (!m) {
        return std::nullopt;
    }
    REQUIRE(m->size() == 1);
    return (*m)[0];
}

std::string nested(int levels) {
    // `levels` containers in all, the outer object included.
    std::string open = "{\"a\":";
    std::string close = "}";
    for (int i = 1; i < levels; ++i) {
        open += (i % 2 == 0) ? "{\"b\":" : "[";
        close.insert(0, (i % 2 == 0) ? "}" : "]");
    }
    return open + "0" + close;
}

}  // namespace

TEST_CASE("json_lite: members are reported in order with their kinds") {
    const auto m = parse(R"({"s":"x","i":-5,"f":1.5,"t":true,"n":null,"o":{"k":"v"},"a":[1,"2"]})");
    REQUIRE(m);
    REQUIRE(m->size() == 7);
    CHECK((*m)[0].name == "s");
    CHECK((*m)[0].type == kind::string);
    CHECK((*m)[0].str == "x");
    CHECK((*m)[1].type == kind::integer);
    CHECK((*m)[1].num == -5);
    for (std::size_t i = 2; i < 7; ++i) {
        CHECK((*m)[i].type == kind::other);
    }
    CHECK(parse("{}")->empty());
}

TEST_CASE("json_lite: white space is allowed where RFC 8259 allows it, and nowhere else counts") {
    CHECK(parse(" \t\r\n{ \"a\" : 1 , \"b\" :\n\"c\" } \n\t"));
    CHECK_FALSE(parse("\f{}"));    // form feed is not JSON white space
    CHECK_FALSE(parse("\v{}"));    // nor vertical tab
    CHECK_FALSE(parse("{}\xc2\xa0"));  // nor NBSP
    CHECK_FALSE(parse(""));
    CHECK_FALSE(parse("   "));
}

TEST_CASE("json_lite: trailing garbage and structural errors are refused") {
    for (const char* bad : {"{}x", "{}{}", "{} 1", "{\"a\":1,}", "{,}", "{\"a\"}", "{\"a\":}", "{\"a\" 1}",
                            "{'a':1}", "{a:1}", "{\"a\":1", "{\"a\":[1,]}", "{\"a\":[1 2]}", "[]", "\"s\"", "1",
                            "{\"a\":tru}", "{\"a\":nul}", "{\"a\":True}", "{\"a\":+1}", "{\"a\":.5}", "{\"a\":1.}",
                            "{\"a\":1e}", "{\"a\":01}", "{\"a\":-}", "{\"a\":0x10}", "{\"a\":NaN}",
                            "{\"a\":Infinity}"}) {
        CAPTURE(bad);
        CHECK_FALSE(parse(bad));
    }
    std::string with_nul("{\"a\":1}");
    with_nul.push_back('\0');
    CHECK_FALSE(parse(with_nul));
}

TEST_CASE("json_lite: escapes decode") {
    CHECK(string_value(R"("\"\\\/\b\f\n\r\t")") == "\"\\/\b\f\n\r\t");
    CHECK(string_value(R"("\u0041\u00e9\u20AC")") == "A\xc3\xa9\xe2\x82\xac");
    CHECK(string_value(R"("\u0000")") == std::string(1, '\0'));
    CHECK(string_value(R"("a\u007fb")") == "a\x7f" "b");
    for (const char* bad : {R"("\x41")", R"("\a")", R"("\u12")", R"("\u12G4")", R"("\U0041")", R"("\)", R"("\")",
                            R"("\ ")"}) {
        CAPTURE(bad);
        CHECK_FALSE(string_value(bad));
    }
}

TEST_CASE("json_lite: \\u surrogate pairs decode; lone or reversed surrogates are refused") {
    CHECK(string_value(R"("\ud83d\ude00")") == "\xf0\x9f\x98\x80");  // U+1F600
    CHECK(string_value(R"("\uD800\uDC00")") == "\xf0\x90\x80\x80");  // U+10000
    CHECK(string_value(R"("\uDBFF\uDFFF")") == "\xf4\x8f\xbf\xbf");  // U+10FFFF
    for (const char* bad : {R"("\ud83d")", R"("\ude00")", R"("\ude00\ud83d")", R"("\ud83dx")", R"("\ud83d\u0041")",
                            R"("\ud83d\ud83d")", R"("\ud83d\n")", R"("\ud83d\ude0")"}) {
        CAPTURE(bad);
        CHECK_FALSE(string_value(bad));
    }
}

TEST_CASE("json_lite: well-formed UTF-8 passes through; every kind of ill-formed UTF-8 is refused") {
    CHECK(string_value("\"\xc2\x80\xdf\xbf\"") == "\xc2\x80\xdf\xbf");
    CHECK(string_value("\"\xe0\xa0\x80\xef\xbf\xbf\"") == "\xe0\xa0\x80\xef\xbf\xbf");
    CHECK(string_value("\"\xed\x9f\xbf\xee\x80\x80\"") == "\xed\x9f\xbf\xee\x80\x80");  // around the surrogates
    CHECK(string_value("\"\xf0\x90\x80\x80\xf4\x8f\xbf\xbf\"") == "\xf0\x90\x80\x80\xf4\x8f\xbf\xbf");
    for (const char* bad : {
             "\"\xc0\x80\"",          // overlong NUL
             "\"\xc1\xbf\"",          // overlong 2-byte
             "\"\xe0\x80\x80\"",      // overlong 3-byte
             "\"\xe0\x9f\xbf\"",      // overlong 3-byte, top
             "\"\xf0\x80\x80\x80\"",  // overlong 4-byte
             "\"\xf0\x8f\xbf\xbf\"",  // overlong 4-byte, top
             "\"\xed\xa0\x80\"",      // U+D800 encoded directly
             "\"\xed\xbf\xbf\"",      // U+DFFF encoded directly
             "\"\xf4\x90\x80\x80\"",  // U+110000
             "\"\xf5\x80\x80\x80\"",  // lead byte past U+10FFFF
             "\"\xf8\x88\x80\x80\x80\"", "\"\xff\"", "\"\xfe\"",
             "\"\x80\"",              // lone continuation byte
             "\"\xc2\"",              // truncated 2-byte
             "\"\xe2\x82\"",          // truncated 3-byte
             "\"\xf0\x9f\x98\"",      // truncated 4-byte
             "\"\xc2\x41\"",          // bad continuation
             "\"\xe2\x28\xa1\"",
         }) {
        CAPTURE(bad);
        CHECK_FALSE(string_value(bad));
    }
    CHECK_FALSE(parse("{\"\xc0\xaf\":1}"));  // in a name too
    std::string truncated_at_end = "{\"s\":\"\xe2\x82";  // buffer ends inside the sequence
    CHECK_FALSE(parse(truncated_at_end));
}

TEST_CASE("json_lite: raw control characters in strings are refused; DEL is not a control character") {
    for (int c = 0; c < 0x20; ++c) {
        CAPTURE(c);
        CHECK_FALSE(string_value("\"a" + std::string(1, static_cast<char>(c)) + "b\""));
    }
    CHECK(string_value("\"a\x7f\"") == "a\x7f");
}

TEST_CASE("json_lite: nesting is limited to 32 levels") {
    CHECK(parse(nested(1)));
    CHECK(parse(nested(32)));
    CHECK_FALSE(parse(nested(33)));
    CHECK_FALSE(parse(nested(1000)));
    // Depth counts inside arrays too, and deep arrays are refused without a crash.
    CHECK_FALSE(parse("{\"a\":" + std::string(100000, '[')));
}

TEST_CASE("json_lite: integers within int64 are integers; beyond is an error, not a rounding") {
    CHECK(number_value("0")->num == 0);
    CHECK(number_value("-0")->num == 0);
    CHECK(number_value("-0")->type == kind::integer);
    CHECK(number_value("9223372036854775807")->num == std::numeric_limits<std::int64_t>::max());
    CHECK(number_value("-9223372036854775808")->num == std::numeric_limits<std::int64_t>::min());
    CHECK(number_value("1800000000")->num == 1800000000);
    for (const char* overflow : {"9223372036854775808", "-9223372036854775809", "18446744073709551616",
                                 "99999999999999999999999999"}) {
        CAPTURE(overflow);
        CHECK_FALSE(number_value(overflow));
    }
}

TEST_CASE("json_lite: fractions and exponents are valid numbers but not integers") {
    for (const char* other : {"1.5", "1.0", "-0.0", "1e3", "1E+3", "1e-3", "0.5e10", "99999999999999999999.5",
                              "1e400"}) {
        CAPTURE(other);
        const auto v = number_value(other);
        REQUIRE(v);
        CHECK(v->type == kind::other);
    }
}

TEST_CASE("json_lite: strings are decoded in place and stay valid after later members") {
    std::string text = R"({"a":"x\u0041y","b":"\ud83d\ude00","c":"plain"})";
    std::map<std::string, std::string_view> seen;
    auto sink = [&](std::string_view n, const value& v) {
        seen[std::string(n)] = v.str;
        return true;
    };
    REQUIRE(parse_object(std::span(text.data(), text.size()), sink));
    CHECK(seen["a"] == "xAy");
    CHECK(seen["b"] == "\xf0\x9f\x98\x80");
    CHECK(seen["c"] == "plain");
    // Every view points into the caller's buffer: nothing was copied to the heap.
    for (const auto& [name, v] : seen) {
        CHECK(v.data() >= text.data());
        CHECK(v.data() + v.size() <= text.data() + text.size());
    }
}

TEST_CASE("json_lite: a sink that says stop fails the parse") {
    std::string text = R"({"a":1,"b":2})";
    int calls = 0;
    auto sink = [&](std::string_view, const value&) { return ++calls < 1; };
    CHECK_FALSE(parse_object(std::span(text.data(), text.size()), sink));
    CHECK(calls == 1);
}

TEST_CASE("json_lite: nested members are checked but not reported") {
    const auto m = parse(R"({"o":{"key":"inner","deep":{"x":[{"y":"\ud800"}]}}})");
    CHECK_FALSE(m);  // the lone surrogate deep inside still fails the document
    const auto ok = parse(R"({"o":{"key":"inner"},"key":"outer"})");
    REQUIRE(ok);
    REQUIRE(ok->size() == 2);
    CHECK((*ok)[1].str == "outer");
}
