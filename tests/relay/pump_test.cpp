#include "relay/pump.hpp"

#include <doctest/doctest.h>

using namespace byok::relay;
using kind = answer_framing::kind;

TEST_CASE("decide_framing: a length-framed answer keeps its length and never gets comments") {
    const auto f = decide_framing(200, false, 191, true, 11);
    CHECK(f.k == kind::length);
    CHECK_FALSE(f.keepalive_comments);
}

TEST_CASE("decide_framing: the relay frames chunked and close-delimited answers itself") {
    CHECK(decide_framing(200, true, std::nullopt, true, 11).k == kind::chunked);
    CHECK(decide_framing(200, true, std::nullopt, true, 11).keepalive_comments);
    CHECK_FALSE(decide_framing(200, true, std::nullopt, false, 11).keepalive_comments);
    CHECK(decide_framing(200, false, std::nullopt, true, 11).k == kind::chunked);  // close-delimited upstream
    CHECK(decide_framing(200, true, std::nullopt, true, 10).k == kind::close);     // HTTP/1.0 client
    CHECK_FALSE(decide_framing(200, true, std::nullopt, true, 10).keepalive_comments);
    CHECK(decide_framing(204, false, std::nullopt, false, 11).k == kind::none);
    CHECK(decide_framing(304, false, 0, false, 11).k == kind::none);
}

TEST_CASE("sse_boundary: comments go only between events") {
    sse_boundary b;
    CHECK(b.at_boundary());  // nothing forwarded yet
    b.feed("data: {\"delta\":\"Hel");
    CHECK_FALSE(b.at_boundary());
    b.feed("lo\"}\n");
    CHECK_FALSE(b.at_boundary());  // one line end: the event is not over
    b.feed("\n");
    CHECK(b.at_boundary());
    b.feed("event: x\r\ndata: y\r\n");
    CHECK_FALSE(b.at_boundary());  // CRLF counts once
    b.feed("\r\n");
    CHECK(b.at_boundary());
    b.feed("data: z\r");
    CHECK_FALSE(b.at_boundary());
    b.feed("\r");
    CHECK(b.at_boundary());  // bare CRs are line ends too
}
