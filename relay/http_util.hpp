#pragma once
// Small HTTP/1.1 helpers the session uses: framing checks the parser does not
// make, the Date header, status reason phrases. Pure; thread-safe.

#include <algorithm>
#include <cstdint>
#include <string>
#include <string_view>
#include <vector>

#include <boost/beast/core/flat_buffer.hpp>
#include <boost/beast/http/fields.hpp>
#include <boost/beast/http/message.hpp>

#include "crypto/secret.hpp"

#include "relay/config.hpp"

namespace byok::relay {

// Request framing that Boost 1.81's Beast parser accepts but a front proxy
// may read differently (request smuggling, RFC 9112 §6.1, §6.3):
// Content-Length together with Transfer-Encoding, more than one
// Content-Length or Transfer-Encoding field, a Transfer-Encoding other than
// exactly "chunked", any Transfer-Encoding on HTTP/1.0. True if acceptable.
[[nodiscard]] bool framing_ok(const boost::beast::http::fields& f, unsigned version) noexcept;

// A client session's read buffer. Its storage is wiped whenever it is freed
// (growth, shrink_to_fit, end of connection): a client that sends its key
// unsealed ("Authorization: Bearer sk-...", "x-api-key: ...") is refused, but
// its key must not stay behind in freed heap (tests/integration/residue.test.mjs).
using read_buffer = boost::beast::basic_flat_buffer<crypto::wiping_allocator<char>>;

// The session's read buffer as seen by http::async_read_header, noting
// obs-fold (a CRLF followed by SP or HTAB inside the header section, RFC 9112
// §5.2) in the bytes the parser consumes. Beast 1.81 silently joins folded
// lines into one value; a front proxy may not ("Transfer-Encoding:\r\n
// chunked"), so the relay refuses a folded header with 400. Consumed header
// bytes are wiped at once (they may hold an unsealed key).
//
// It also holds the header section to `header_limit` bytes in all. Beast's
// parser checks its header_limit against what one put() is given, but it
// consumes the start line and complete fields as it goes: fed 4 KiB reads,
// it took a 19 KiB header section under a 16 KiB limit. Here max_size()
// shrinks by every byte consumed, so a longer section ends the read with
// http::error::buffer_overflow (answered 431 like header_limit).
class fold_watch_buffer {
public:
    using const_buffers_type = read_buffer::const_buffers_type;
    using mutable_buffers_type = read_buffer::mutable_buffers_type;

    fold_watch_buffer(read_buffer& b, std::size_t header_limit) noexcept : b_(b), limit_(header_limit) {}

    [[nodiscard]] std::size_t size() const noexcept { return b_.size(); }
    [[nodiscard]] std::size_t max_size() const noexcept {
        const std::size_t left = limit_ > consumed_ ? limit_ - consumed_ : 0;
        return std::max(std::min(b_.max_size(), left), std::min(b_.size(), b_.max_size()));
    }
    [[nodiscard]] std::size_t capacity() const noexcept { return b_.capacity(); }
    [[nodiscard]] const_buffers_type data() const noexcept { return b_.data(); }
    [[nodiscard]] mutable_buffers_type prepare(std::size_t n) { return b_.prepare(n); }
    void commit(std::size_t n) noexcept { b_.commit(n); }
    void consume(std::size_t n) noexcept;

    [[nodiscard]] bool folded() const noexcept { return folded_; }

private:
    read_buffer& b_;
    std::size_t limit_;
    std::size_t consumed_ = 0;
    char prev_ = '\0';
    bool folded_ = false;
};

// Zeroes the target and every field value of a parsed request head in place.
// Beast frees them with std::allocator, unwiped; called just before the
// parser goes away, so a key sent in clear (a header, a query string) does
// not outlive its request. The head is unusable afterwards.
void wipe_request_head(boost::beast::http::request_header<>& h) noexcept;

// IMF-fixdate of `unix_seconds`, e.g. "Sun, 22 Nov 2026 16:45:03 GMT".
// In a per-thread buffer that a later call on the same thread for another
// second rewrites: append it where it is needed, do not keep the view.
[[nodiscard]] std::string_view http_date(std::int64_t unix_seconds);

[[nodiscard]] std::string_view reason_phrase(unsigned status) noexcept;

// ASCII lower case, without the C library's locale lookup (a call per byte).
[[nodiscard]] constexpr char ascii_lower(char c) noexcept {
    return c >= 'A' && c <= 'Z' ? static_cast<char>(c + ('a' - 'A')) : c;
}

// Case-insensitive ASCII comparison.
[[nodiscard]] bool iequals(std::string_view a, std::string_view b) noexcept;

// True for header names the relay forwards from client to provider.
[[nodiscard]] bool forward_request_header(std::string_view lower_name) noexcept;
// True for header names the relay passes from provider back to the client.
[[nodiscard]] bool forward_response_header(std::string_view lower_name) noexcept;

// True if every byte is allowed in a field value (no CR, LF, NUL or other controls but HTAB).
[[nodiscard]] bool field_value_ok(std::string_view v) noexcept;

// Calls emit(lower_case_name, value) for each field whose lower-case name
// `allowed` accepts (forward_request_header, forward_response_header) and
// whose value has no control characters: the one place the forwarding
// allowlists are applied, to the provider's request head and to the
// client's answer head. Allocates nothing.
template <class Allowed, class Emit>
void for_each_allowed_field(const boost::beast::http::fields& fields, Allowed allowed, Emit&& emit) {
    char name[64];
    for (const auto& f : fields) {
        const std::string_view n = f.name_string();
        if (n.size() >= sizeof name) {
            continue;  // no forwarded header has a longer name
        }
        for (std::size_t i = 0; i < n.size(); ++i) {
            name[i] = ascii_lower(n[i]);
        }
        const std::string_view lower(name, n.size());
        if (allowed(lower) && field_value_ok(f.value())) {
            emit(lower, f.value());
        }
    }
}

// The client's address for limits and the access log: the socket peer,
// unless the peer is one of `trusted_proxies`; then the rightmost
// X-Forwarded-For hop that is not a trusted proxy (hops left of it were
// written by the client and prove nothing). Garbage in the chain stops the
// walk and the peer is used. An untrusted peer's X-Forwarded-For is ignored.
[[nodiscard]] std::string client_ip(const boost::beast::http::fields& f, const std::string& peer_ip,
                                    const ip_set& trusted_proxies);

}  // namespace byok::relay
