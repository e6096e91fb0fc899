#include "relay/pump.hpp"

#include <array>
#include <chrono>
#include <cstdio>
#include <exception>
#include <functional>
#include <random>
#include <string>
#include <thread>

#include <boost/asio/co_spawn.hpp>
#include <boost/asio/io_context.hpp>
#include <boost/asio/write.hpp>
#include <doctest/doctest.h>
#include "loopback.hpp"

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

TEST_CASE("sse_boundary: pieces split anywhere give the answer of a byte-by-byte scan") {
    // The reference: whether the bytes so far end with two line ends in a
    // row (CRLF counting as one), scanned one byte at a time from the start.
    const auto reference = [](std::string_view all) {
        unsigned ends = 2;
        char prev = '\n';
        for (const char c : all) {
            if (c == '\n' && prev == '\r') {
            } else if (c == '\r' || c == '\n') {
                ++ends;
            } else {
                ends = 0;
            }
            prev = c;
        }
        return ends >= 2;
    };
    std::mt19937 rng(11);  // fixed: the same cases every run
    static constexpr char alphabet[] = {'a', ':', '\r', '\n', '\n', '\r'};
    for (int round = 0; round < 2000; ++round) {
        sse_boundary b;
        std::string all;
        const int pieces = 1 + static_cast<int>(rng() % 6);
        for (int p = 0; p < pieces; ++p) {
            std::string piece(rng() % 7, ' ');
            for (char& c : piece) {
                c = alphabet[rng() % sizeof alphabet];
            }
            b.feed(piece);
            all += piece;
            CAPTURE(all);
            REQUIRE(b.at_boundary() == reference(all));
        }
    }
}

// ---- the pump over real sockets -------------------------------------------------
// A fake provider (a plain socket the test writes raw bytes to, from its own
// thread), the pump on the test thread, and a client that reads from its own
// thread: what the client receives is compared with what the provider sent.

namespace {

namespace asio = boost::asio;
using asio::ip::tcp;

struct pump_rig {
    asio::io_context ioc;
    config cfg;
    upstream_conn conn{ioc, nullptr};
    tcp::socket provider{ioc};
    tcp::socket relay_side{ioc};  // the client's connection, as the relay holds it
    tcp::socket client{ioc};
    socket_deadline client_deadline{relay_side};

    pump_rig() {
        test::connect_loopback(ioc, conn.socket(), provider);
        test::connect_loopback(ioc, client, relay_side);
    }

    // Fills the client connection's send buffer (the client reads these
    // bytes first): the pump's first write then waits for the client.
    std::size_t fill_client_socket() {
        relay_side.non_blocking(true);
        const std::string junk(65536, '#');
        std::size_t total = 0;
        for (;;) {
            boost::system::error_code ec;
            const std::size_t n = relay_side.write_some(asio::buffer(junk), ec);
            total += n;
            if (ec) {
                break;
            }
        }
        relay_side.non_blocking(false);
        return total;
    }

    // Runs the pump until the answer ended; `provide` writes the provider's
    // side and `consume_after` is how long the client waits before it reads.
    // Returns everything the client received.
    std::string run(const std::function<void(tcp::socket&)>& provide, std::chrono::milliseconds consume_after,
                    pump_result& res) {
        std::thread up([&] {
            provide(provider);
            boost::system::error_code ignored;
            provider.shutdown(tcp::socket::shutdown_send, ignored);
        });
        std::string got;
        std::thread down([&] {
            std::this_thread::sleep_for(consume_after);
            std::array<char, 65536> buf{};
            boost::system::error_code ec;
            for (;;) {
                const std::size_t n = client.read_some(asio::buffer(buf), ec);
                got.append(buf.data(), n);
                if (ec) {
                    break;
                }
            }
        });
        answer_pump pump(relay_side, client_deadline, conn, cfg, cors_decision{}, true, 11);
        std::exception_ptr failed;
        asio::co_spawn(ioc, pump.run(), [&](std::exception_ptr e, pump_result r) {
            failed = e;
            res = r;
            ioc.stop();  // the deadlines' timers would keep run() going
        });
        ioc.run();
        boost::system::error_code ignored;
        relay_side.shutdown(tcp::socket::shutdown_send, ignored);  // the client reads to the end
        up.join();
        down.join();
        if (failed) {
            std::rethrow_exception(failed);
        }
        return got;
    }
};

// The body of a chunked HTTP/1.1 answer; `complete` false if the last chunk is missing.
std::string dechunk(std::string_view wire, bool& complete) {
    complete = false;
    std::string body;
    std::size_t at = wire.find("\r\n\r\n");
    if (at == std::string_view::npos) {
        return body;
    }
    at += 4;
    for (;;) {
        const std::size_t eol = wire.find("\r\n", at);
        if (eol == std::string_view::npos) {
            return body;
        }
        const std::size_t size = std::stoul(std::string(wire.substr(at, eol - at)), nullptr, 16);
        at = eol + 2;
        if (size == 0) {
            complete = wire.substr(at) == "\r\n";
            return body;
        }
        if (at + size + 2 > wire.size() || wire.substr(at + size, 2) != "\r\n") {
            return body;
        }
        body.append(wire.substr(at, size));
        at += size + 2;
    }
}

std::string pattern(std::size_t n) {
    std::string s(n, '\0');
    for (std::size_t i = 0; i < n; ++i) {
        s[i] = static_cast<char>('a' + (i * 7 + i / 4099) % 26);
    }
    return s;
}

// Where two long strings first differ (npos: equal); a failed check prints the index, not megabytes.
std::size_t first_difference(std::string_view a, std::string_view b) {
    const std::size_t n = std::min(a.size(), b.size());
    for (std::size_t i = 0; i < n; ++i) {
        if (a[i] != b[i]) {
            return i;
        }
    }
    return a.size() == b.size() ? std::string::npos : n;
}

void send_all(tcp::socket& s, std::string_view bytes) { asio::write(s, asio::buffer(bytes)); }

}  // namespace

TEST_CASE("answer_pump: a keep-alive comment arrives after sse_keepalive_s of silence, between events only") {
    pump_rig rig;
    rig.cfg.sse_keepalive_s = 1;
    pump_result res;
    const std::string wire = rig.run(
        [](tcp::socket& p) {
            send_all(p, "HTTP/1.1 200 OK\r\nContent-Type: text/event-stream\r\nTransfer-Encoding: chunked\r\n\r\n");
            // A few events at once: the reader sends them itself, the writer sleeps.
            for (int i = 0; i < 5; ++i) {
                send_all(p, "f\r\ndata: {\"n\":1}\n\n\r\n");
                std::this_thread::sleep_for(std::chrono::milliseconds(20));
            }
            // Silent past sse_keepalive_s between two events: a comment.
            std::this_thread::sleep_for(std::chrono::milliseconds(1600));
            // Silent past it in the middle of an event: no comment there.
            send_all(p, "9\r\ndata: {\"n\r\n");
            std::this_thread::sleep_for(std::chrono::milliseconds(1600));
            send_all(p, "5\r\n\":2}\n\r\n1\r\n\n\r\n0\r\n\r\n");
        },
        std::chrono::milliseconds(0), res);
    CHECK(res.complete);
    CHECK_FALSE(res.client_gone);
    bool complete = false;
    const std::string body = dechunk(wire, complete);
    CHECK(complete);
    std::string five;
    for (int i = 0; i < 5; ++i) {
        five += "data: {\"n\":1}\n\n";
    }
    REQUIRE(body.starts_with(five));
    // One comment (more only if this machine stalled the provider's thread),
    // then the last event whole: nothing written into it during its pause.
    std::string_view rest = std::string_view(body).substr(five.size());
    int comments = 0;
    while (rest.starts_with(": keep-alive\n\n")) {
        rest.remove_prefix(14);
        ++comments;
    }
    CHECK(comments >= 1);
    CHECK(rest == "data: {\"n\":2}\n\n");
}

TEST_CASE("answer_pump: a client that reads late gets every byte in order (chunked and length-framed)") {
    // More than the sockets between pump and client can hold: the pump's
    // sends come up short and the writer finishes them.
    const std::string data = pattern(6 * 1024 * 1024 + 123);
    SUBCASE("chunked") {
        pump_rig rig;
        pump_result res;
        const std::string wire = rig.run(
            [&](tcp::socket& p) {
                send_all(p, "HTTP/1.1 200 OK\r\nContent-Type: text/event-stream\r\nTransfer-Encoding: chunked\r\n\r\n");
                for (std::size_t at = 0; at < data.size(); at += 10000) {
                    const std::string_view part = std::string_view(data).substr(at, 10000);
                    char size[24];
                    const int k = std::snprintf(size, sizeof size, "%zx\r\n", part.size());
                    send_all(p, std::string_view(size, static_cast<std::size_t>(k)));
                    send_all(p, part);
                    send_all(p, "\r\n");
                }
                send_all(p, "0\r\n\r\n");
            },
            std::chrono::milliseconds(300), res);
        CHECK(res.complete);
        bool complete = false;
        const std::string body = dechunk(wire, complete);
        CHECK(complete);
        CHECK(body.size() == data.size());
        CHECK(first_difference(body, data) == std::string::npos);
    }
    SUBCASE("length") {
        pump_rig rig;
        pump_result res;
        const std::string wire = rig.run(
            [&](tcp::socket& p) {
                send_all(p, "HTTP/1.1 200 OK\r\nContent-Type: text/event-stream\r\nContent-Length: " +
                                std::to_string(data.size()) + "\r\n\r\n");
                send_all(p, data);
            },
            std::chrono::milliseconds(300), res);
        CHECK(res.complete);
        const std::size_t at = wire.find("\r\n\r\n");
        REQUIRE(at != std::string::npos);
        CHECK(wire.substr(0, at).find("Content-Length: " + std::to_string(data.size())) != std::string::npos);
        CHECK(wire.size() - at - 4 == data.size());
        CHECK(first_difference(wire.substr(at + 4), data) == std::string::npos);  // byte for byte, nothing added
    }
}

TEST_CASE("answer_pump: a piece read while the head waits for the client is not lost") {
    // The head comes alone, so it goes out without a first piece; the
    // client's socket is full, so its write waits; meanwhile the reader
    // hands the next piece over. The writer must write that piece after the
    // head, not take it for one it already wrote.
    pump_rig rig;
    const std::size_t junk = rig.fill_client_socket();
    const std::string data = pattern(3000);
    pump_result res;
    const std::string wire = rig.run(
        [&](tcp::socket& p) {
            send_all(p, "HTTP/1.1 200 OK\r\nContent-Type: text/event-stream\r\nContent-Length: " +
                            std::to_string(data.size()) + "\r\n\r\n");
            std::this_thread::sleep_for(std::chrono::milliseconds(100));  // the head is read alone
            send_all(p, data);
        },
        std::chrono::milliseconds(400), res);
    CHECK(res.complete);
    REQUIRE(wire.size() > junk);
    const std::string_view answer = std::string_view(wire).substr(junk);
    const std::size_t at = answer.find("\r\n\r\n");
    REQUIRE(at != std::string::npos);
    CHECK(answer.substr(at + 4).size() == data.size());
    CHECK(first_difference(answer.substr(at + 4), data) == std::string::npos);
}

TEST_CASE("answer_pump: an answer that arrives whole reaches the client whole, at once or after the socket fills") {
    // The whole answer goes out with one non-blocking send; what a full
    // socket does not take is written under the client's deadline.
    const std::string data = pattern(3500);
    const std::string answer =
        "HTTP/1.1 200 OK\r\nContent-Type: application/json\r\nContent-Length: " + std::to_string(data.size()) +
        "\r\n\r\n" + data;
    for (const bool full : {false, true}) {
        CAPTURE(full);
        pump_rig rig;
        const std::size_t junk = full ? rig.fill_client_socket() : 0;
        pump_result res;
        const std::string wire = rig.run([&](tcp::socket& p) { send_all(p, answer); },
                                         std::chrono::milliseconds(full ? 300 : 0), res);
        CHECK(res.complete);
        CHECK_FALSE(res.client_gone);
        REQUIRE(wire.size() > junk);
        const std::string_view got = std::string_view(wire).substr(junk);
        const std::size_t at = got.find("\r\n\r\n");
        REQUIRE(at != std::string::npos);
        CHECK(got.substr(0, at).find("Content-Length: 3500") != std::string::npos);
        CHECK(got.substr(at + 4).size() == data.size());
        CHECK(first_difference(got.substr(at + 4), data) == std::string::npos);
        CHECK(res.bytes_out == got.size());
    }
}
