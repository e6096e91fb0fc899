#include "crypto/json_lite.hpp"

#include <cstddef>
#include <limits>

namespace byok::crypto::json_lite {
namespace {

// Containers nested at most this deep, the top-level object counting as 1.
constexpr int max_depth = 32;

class reader {
public:
    explicit reader(std::span<char> buf) noexcept : p_(buf.data()), end_(buf.data() + buf.size()), w_(buf.data()) {}

    bool document(member_sink sink) noexcept {
        skip_ws();
        if (!object(0, &sink)) {
            return false;
        }
        skip_ws();
        return p_ == end_;
    }

private:
    // `sink` is set only for the top-level object.
    bool object(int depth, member_sink* sink) noexcept {
        if (depth >= max_depth || !eat('{')) {
            return false;
        }
        skip_ws();
        if (eat('}')) {
            return true;
        }
        for (;;) {
            skip_ws();
            std::string_view name;
            if (!string(name)) {
                return false;
            }
            skip_ws();
            if (!eat(':')) {
                return false;
            }
            skip_ws();
            value v;
            if (!any(depth, v)) {
                return false;
            }
            if (sink != nullptr && !(*sink)(name, v)) {
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
            value v;
            if (!any(depth, v)) {
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

    bool any(int depth, value& v) noexcept {
        if (p_ == end_) {
            return false;
        }
        switch (*p_) {
        case '{': v.type = kind::other; return object(depth + 1, nullptr);
        case '[': v.type = kind::other; return array(depth + 1);
        case '"': v.type = kind::string; return string(v.str);
        case 't': v.type = kind::other; return literal("true");
        case 'f': v.type = kind::other; return literal("false");
        case 'n': v.type = kind::other; return literal("null");
        default: return number(v);
        }
    }

    bool literal(std::string_view word) noexcept {
        if (static_cast<std::size_t>(end_ - p_) < word.size() || std::string_view(p_, word.size()) != word) {
            return false;
        }
        p_ += word.size();
        return true;
    }

    // number = [ "-" ] int [ frac ] [ exp ]; an integer without frac/exp
    // that fits in int64 is reported as kind::integer.
    bool number(value& v) noexcept {
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
                if (magnitude > (limit - d) / 10) {
                    fits = false;
                } else {
                    magnitude = magnitude * 10 + d;
                }
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
        if (integral && !fits) {
            return false;  // an integer we cannot represent is an error, not a rounding
        }
        if (integral) {
            v.type = kind::integer;
            v.num = negative ? static_cast<std::int64_t>(0 - magnitude) : static_cast<std::int64_t>(magnitude);
        } else {
            v.type = kind::other;
        }
        return true;
    }

    bool digits() noexcept {
        const char* start = p_;
        while (p_ != end_ && is_digit(*p_)) {
            ++p_;
        }
        return p_ != start;
    }

    // Decodes the string at p_ into w_ (w_ <= p_ always holds: every output
    // byte consumes at least one input byte), and returns a view of it.
    bool string(std::string_view& out) noexcept {
        if (!eat('"')) {
            return false;
        }
        char* const start = w_;
        for (;;) {
            if (p_ == end_) {
                return false;
            }
            const auto c = static_cast<unsigned char>(*p_);
            if (c == '"') {
                ++p_;
                break;
            }
            if (c < 0x20) {
                return false;
            }
            if (c == '\\') {
                if (!escape()) {
                    return false;
                }
            } else if (c < 0x80) {
                *w_++ = *p_++;
            } else if (!utf8_sequence()) {
                return false;
            }
        }
        out = std::string_view(start, static_cast<std::size_t>(w_ - start));
        return true;
    }

    bool escape() noexcept {
        ++p_;  // the backslash
        if (p_ == end_) {
            return false;
        }
        const char e = *p_++;
        switch (e) {
        case '"': *w_++ = '"'; return true;
        case '\\': *w_++ = '\\'; return true;
        case '/': *w_++ = '/'; return true;
        case 'b': *w_++ = '\b'; return true;
        case 'f': *w_++ = '\f'; return true;
        case 'n': *w_++ = '\n'; return true;
        case 'r': *w_++ = '\r'; return true;
        case 't': *w_++ = '\t'; return true;
        case 'u': break;
        default: return false;
        }
        std::uint32_t cp = 0;
        if (!hex4(cp)) {
            return false;
        }
        if (cp >= 0xD800 && cp <= 0xDBFF) {
            // A high surrogate must be followed by an escaped low surrogate.
            std::uint32_t low = 0;
            if (end_ - p_ < 6 || p_[0] != '\\' || p_[1] != 'u') {
                return false;
            }
            p_ += 2;
            if (!hex4(low) || low < 0xDC00 || low > 0xDFFF) {
                return false;
            }
            cp = 0x10000 + ((cp - 0xD800) << 10) + (low - 0xDC00);
        } else if (cp >= 0xDC00 && cp <= 0xDFFF) {
            return false;
        }
        // \uXXXX is 6 input bytes (12 for a pair) and at most 4 output bytes.
        if (cp < 0x80) {
            *w_++ = static_cast<char>(cp);
        } else if (cp < 0x800) {
            *w_++ = static_cast<char>(0xC0 | (cp >> 6));
            *w_++ = static_cast<char>(0x80 | (cp & 0x3F));
        } else if (cp < 0x10000) {
            *w_++ = static_cast<char>(0xE0 | (cp >> 12));
            *w_++ = static_cast<char>(0x80 | ((cp >> 6) & 0x3F));
            *w_++ = static_cast<char>(0x80 | (cp & 0x3F));
        } else {
            *w_++ = static_cast<char>(0xF0 | (cp >> 18));
            *w_++ = static_cast<char>(0x80 | ((cp >> 12) & 0x3F));
            *w_++ = static_cast<char>(0x80 | ((cp >> 6) & 0x3F));
            *w_++ = static_cast<char>(0x80 | (cp & 0x3F));
        }
        return true;
    }

    bool hex4(std::uint32_t& cp) noexcept {
        if (end_ - p_ < 4) {
            return false;
        }
        for (int i = 0; i < 4; ++i) {
            const char c = *p_++;
            std::uint32_t d = 0;
            if (c >= '0' && c <= '9') {
                d = static_cast<std::uint32_t>(c - '0');
            } else if (c >= 'a' && c <= 'f') {
                d = static_cast<std::uint32_t>(c - 'a' + 10);
            } else if (c >= 'A' && c <= 'F') {
                d = static_cast<std::uint32_t>(c - 'A' + 10);
            } else {
                return false;
            }
            cp = (cp << 4) | d;
        }
        return true;
    }

    // One well-formed UTF-8 sequence (RFC 3629: no overlongs, no surrogates,
    // nothing above U+10FFFF), copied as is.
    bool utf8_sequence() noexcept {
        const auto b0 = static_cast<unsigned char>(p_[0]);
        int len = 0;
        unsigned char lo = 0x80;
        unsigned char hi = 0xBF;
        if (b0 >= 0xC2 && b0 <= 0xDF) {
            len = 2;
        } else if (b0 >= 0xE0 && b0 <= 0xEF) {
            len = 3;
            if (b0 == 0xE0) {
                lo = 0xA0;
            } else if (b0 == 0xED) {
                hi = 0x9F;
            }
        } else if (b0 >= 0xF0 && b0 <= 0xF4) {
            len = 4;
            if (b0 == 0xF0) {
                lo = 0x90;
            } else if (b0 == 0xF4) {
                hi = 0x8F;
            }
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
        for (int i = 0; i < len; ++i) {
            *w_++ = *p_++;
        }
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

    char* p_;
    char* end_;
    char* w_;
};

}  // namespace

bool parse_object(std::span<char> buf, member_sink sink) noexcept {
    reader r(buf);
    return r.document(sink);
}

}  // namespace byok::crypto::json_lite
