#pragma once
// Finds where SSE events end in a body that arrives in pieces, by the
// WHATWG rules: a line ends in CR, LF or CRLF; a blank line ends an event;
// an event is dispatched (counted) only if it had a "data" field, so comment
// lines (": keep-alive") and blocks without data are not events.

#include <cstddef>

namespace byok::bench {

class sse_events {
public:
    // Feeds the next bytes; returns how many events they completed.
    std::size_t feed(const char* p, std::size_t n) noexcept {
        std::size_t done = 0;
        for (std::size_t i = 0; i < n; ++i) {
            const char ch = p[i];
            if (after_cr_) {
                after_cr_ = false;
                if (ch == '\n') {
                    continue;  // the LF of a CRLF
                }
            }
            if (ch == '\r' || ch == '\n') {
                after_cr_ = ch == '\r';
                done += end_line();
                continue;
            }
            if (name_ < 4) {
                name_ = ch == "data"[name_] ? name_ + 1 : other;
            } else if (name_ == 4) {
                name_ = ch == ':' ? data : other;
            }
            line_empty_ = false;
        }
        return done;
    }

private:
    // name_: 0-4 characters of "data" matched so far, or one of these.
    static constexpr unsigned data = 5;   // the field name was "data"
    static constexpr unsigned other = 6;  // another field, or a comment

    std::size_t end_line() noexcept {
        std::size_t done = 0;
        if (line_empty_) {
            if (has_data_) {
                done = 1;
                has_data_ = false;
            }
        } else if (name_ == 4 || name_ == data) {  // "data" alone is a data field with an empty value
            has_data_ = true;
        }
        line_empty_ = true;
        name_ = 0;
        return done;
    }

    bool after_cr_ = false;
    bool line_empty_ = true;
    bool has_data_ = false;
    unsigned name_ = 0;
};

}  // namespace byok::bench
