#pragma once
// A strict RFC 8259 reader for one flat JSON object, made for secrets.
//
// General JSON parsers copy every string into heap blocks they free without
// wiping (and keep the raw token for error messages), so an opened seal would
// leave pieces of the user's key all over the heap. This reader allocates
// nothing: it decodes every string in place, inside the buffer it is given
// (a decoded string is never longer than its encoding), so the key only ever
// exists in that buffer, which the caller keeps in secret memory.
//
// It reports each top-level member whose value is a string or an integer;
// other values (objects, arrays, fractions, true/false/null) are checked and
// reported as `other`. Nesting is limited to 32 levels.

#include <cstdint>
#include <span>
#include <string_view>
#include <type_traits>

namespace byok::crypto::json_lite {

enum class kind { string, integer, other };

struct value {
    kind type = kind::other;
    std::string_view str;  // decoded; valid while the buffer lives (kind::string)
    std::int64_t num = 0;  // kind::integer, within int64
};

// The members of one object, each taken at most once: a second copy of a
// member is an ambiguity a parser elsewhere might resolve differently, so
// take() refuses it (and a member of the wrong kind).
class once_members {
public:
    // True, and member `bit` marked seen, if `v` is of kind `want` and the
    // member was not seen before.
    [[nodiscard]] bool take(unsigned bit, const value& v, kind want) noexcept {
        if ((seen_ & bit) != 0 || v.type != want) {
            return false;
        }
        seen_ |= bit;
        return true;
    }
    [[nodiscard]] unsigned seen() const noexcept { return seen_; }

private:
    unsigned seen_ = 0;
};

// A non-owning reference to a callable bool(std::string_view name, const value&).
// Returning false stops the parse, which then fails.
class member_sink {
public:
    template <class F>
        requires(!std::is_same_v<std::remove_cv_t<F>, member_sink>)
    member_sink(F& f) noexcept  // NOLINT: implicit by design, like std::function_ref
        : obj_(&f), call_([](void* o, std::string_view n, const value& v) {
              return (*static_cast<F*>(o))(n, v);
          }) {}
    bool operator()(std::string_view name, const value& v) const { return call_(obj_, name, v); }

private:
    void* obj_;
    bool (*call_)(void*, std::string_view, const value&);
};

// Parses `buf` as one JSON object (optionally surrounded by white space),
// rewriting it in place. Returns false on any syntax error, invalid UTF-8,
// lone surrogate, integer overflow, nesting too deep, or if `sink` said stop.
[[nodiscard]] bool parse_object(std::span<char> buf, member_sink sink) noexcept;

}  // namespace byok::crypto::json_lite
