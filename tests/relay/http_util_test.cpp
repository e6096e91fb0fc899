#include "relay/http_util.hpp"

#include <cstdint>
#include <cstring>
#include <string>

#include <doctest/doctest.h>

#include "relay/errors.hpp"

namespace http = boost::beast::http;
using namespace byok::relay;

TEST_CASE("framing_ok refuses the request-smuggling shapes Beast 1.81 lets through") {
    http::fields f;
    CHECK(framing_ok(f, 11));
    f.set(http::field::content_length, "5");
    CHECK(framing_ok(f, 11));
    f.insert(http::field::content_length, "5");
    CHECK_FALSE(framing_ok(f, 11));  // two Content-Lengths, even equal ones

    http::fields both;
    both.set(http::field::content_length, "5");
    both.set(http::field::transfer_encoding, "chunked");
    CHECK_FALSE(framing_ok(both, 11));

    for (const char* te : {"chunked", "Chunked", " chunked ", "CHUNKED"}) {
        http::fields g;
        g.set(http::field::transfer_encoding, te);
        CHECK_MESSAGE(framing_ok(g, 11), te);
        CHECK_MESSAGE(!framing_ok(g, 10), te);  // no Transfer-Encoding on HTTP/1.0
    }
    for (const char* te : {"gzip", "chunked, gzip", "gzip, chunked", "identity", "chunked;x=1", "xchunked", ""}) {
        http::fields g;
        g.set(http::field::transfer_encoding, te);
        CHECK_MESSAGE(!framing_ok(g, 11), te);
    }
    http::fields two;
    two.insert(http::field::transfer_encoding, "chunked");
    two.insert(http::field::transfer_encoding, "chunked");
    CHECK_FALSE(framing_ok(two, 11));
}

TEST_CASE("http_date is an IMF-fixdate") {
    CHECK(http_date(0) == "Thu, 01 Jan 1970 00:00:00 GMT");
    CHECK(http_date(1795366703) == "Sun, 22 Nov 2026 16:58:23 GMT");
    // Cached per second: the same second twice, then another, then the first again.
    CHECK(http_date(1795366703) == "Sun, 22 Nov 2026 16:58:23 GMT");
    CHECK(http_date(1795366704) == "Sun, 22 Nov 2026 16:58:24 GMT");
    CHECK(http_date(0) == "Thu, 01 Jan 1970 00:00:00 GMT");
}

TEST_CASE("header allowlists") {
    for (const char* n : {"content-type", "accept", "openai-organization", "openai-project", "openai-beta",
                          "anthropic-version", "anthropic-beta", "idempotency-key", "user-agent",
                          "x-goog-api-client", "http-referer", "x-title"}) {
        CHECK_MESSAGE(forward_request_header(n), n);
    }
    for (const char* n : {"authorization", "cookie", "x-forwarded-for", "host", "connection", "transfer-encoding",
                          "content-length", "x-api-key", "proxy-authorization", "te", "upgrade", "x-stainless-os",
                          "anthropic-dangerous-direct-browser-access", "x-goog-api-key", "api-key", "origin",
                          "referer"}) {
        CHECK_MESSAGE(!forward_request_header(n), n);
    }
    for (const char* n : {"content-type", "x-request-id", "openai-processing-ms", "x-ratelimit-remaining-requests",
                          "retry-after", "anthropic-ratelimit-requests-limit", "retry-after-ms", "request-id"}) {
        CHECK_MESSAGE(forward_response_header(n), n);
    }
    for (const char* n : {"set-cookie", "x-internal-secret", "connection", "transfer-encoding", "content-length",
                          "server", "strict-transport-security", "alt-svc"}) {
        CHECK_MESSAGE(!forward_response_header(n), n);
    }
    CHECK(field_value_ok("text/event-stream; charset=utf-8"));
    CHECK(field_value_ok("a\tb"));
    CHECK_FALSE(field_value_ok("a\r\nInjected: 1"));
    CHECK_FALSE(field_value_ok(std::string_view("a\0b", 3)));
}

TEST_CASE("every error has a status, a code and a message without internals") {
    for (int i = 0; i <= static_cast<int>(error_code::internal_error); ++i) {
        const auto e = static_cast<error_code>(i);
        const auto& d = describe(e);
        CHECK(d.status >= 400);
        CHECK(d.status < 600);
        CHECK(!d.code.empty());
        const std::string body = error_body(e);
        CHECK(body.find(R"("type":"relay_error")") != std::string::npos);
        CHECK(body.find(std::string(R"("code":")") + std::string(d.code) + "\"") != std::string::npos);
    }
    CHECK(describe(error_code::seal_replayed).status == 401);
    CHECK(describe(error_code::headers_too_large).status == 431);
    CHECK(describe(error_code::body_too_large).status == 413);
    CHECK(describe(error_code::upstream_unreachable).status == 502);
    CHECK(describe(error_code::upstream_timeout).status == 504);
    CHECK(describe(error_code::overloaded).status == 503);
    CHECK(describe(error_code::rate_limited).status == 429);
    CHECK(from_seal_error(byok::crypto::seal_error::replay_cache_full) == error_code::overloaded);
}

TEST_CASE("fold_watch_buffer finds a line that starts with SP or HTAB across any split of the head") {
    // Against the rule read byte by byte: a SP/HTAB right after an LF, where
    // the LF may have been consumed by an earlier call. Heads are built from
    // the few bytes that matter, so most contain every boundary case.
    std::uint32_t rng = 12345;
    auto next = [&rng] {
        rng = rng * 1664525u + 1013904223u;
        return rng >> 8;
    };
    const char alphabet[] = {'a', ':', ' ', '\t', '\r', '\n'};
    int folded_heads = 0;
    for (int round = 0; round < 20000; ++round) {
        std::string head(1 + next() % 40, 'a');
        for (char& c : head) {
            c = alphabet[next() % sizeof(alphabet)];
        }
        bool expected = false;
        for (std::size_t i = 1; i < head.size(); ++i) {
            expected = expected || ((head[i] == ' ' || head[i] == '\t') && head[i - 1] == '\n');
        }
        read_buffer b;
        const auto room = b.prepare(head.size());
        std::memcpy(room.data(), head.data(), head.size());
        b.commit(head.size());
        fold_watch_buffer w(b, 1 << 16);
        std::size_t left = head.size();
        while (left > 0) {
            const std::size_t n = next() % 4 == 0 ? left : std::min<std::size_t>(left, next() % 6);
            w.consume(n);
            left -= n;
        }
        CHECK_MESSAGE(w.folded() == expected, head);
        CHECK(b.size() == 0);
        folded_heads += expected ? 1 : 0;
    }
    CHECK(folded_heads > 1000);  // the generator reaches both answers
    CHECK(folded_heads < 19000);
}
