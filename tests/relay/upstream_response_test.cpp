#include "relay/upstream.hpp"

#include <boost/asio/co_spawn.hpp>
#include <boost/asio/io_context.hpp>
#include <boost/asio/use_future.hpp>
#include <boost/asio/write.hpp>
#include <doctest/doctest.h>
#include "loopback.hpp"

#include <string>

using namespace byok::relay;
namespace asio = boost::asio;
using asio::ip::tcp;

// The provider side is a plain socket the test writes raw bytes to; the
// relay side is an upstream_conn without TLS, read by upstream_response.
namespace {

struct fake_provider {
    asio::io_context ioc;
    upstream_conn conn{ioc, nullptr};
    tcp::socket provider{ioc};
    fake_provider() { test::connect_loopback(ioc, conn.socket(), provider); }
    void send(std::string_view bytes) { asio::write(provider, asio::buffer(bytes)); }
};

struct read_answer {
    boost::system::error_code head_ec;
    unsigned status = 0;
    std::string body;
    bool done = false;
    bool reusable = false;
};

// Reads the head, then the body until done or an error.
read_answer read_all(fake_provider& f) {
    read_answer out;
    auto task = [&]() -> asio::awaitable<void> {
        upstream_response r(f.conn, std::chrono::seconds(5));
        out.head_ec = co_await r.read_head();
        if (out.head_ec) {
            co_return;
        }
        out.status = r.status();
        char buf[64];
        for (;;) {
            boost::system::error_code ec;
            const std::size_t n = r.parse_body(asio::buffer(buf), ec);
            out.body.append(buf, n);
            if (ec || r.done()) {
                break;
            }
            if (n == 0) {
                if (const auto fec = co_await r.fill(); fec && !r.done()) {
                    break;
                }
            }
        }
        out.done = r.done();
        out.reusable = r.reusable();
    };
    auto fut = asio::co_spawn(f.ioc, task(), asio::use_future);
    f.ioc.run();
    fut.get();
    return out;
}

}  // namespace

TEST_CASE("upstream_response: 103 Early Hints and 100 Continue are skipped, the final answer is read") {
    fake_provider f;
    f.send("HTTP/1.1 103 Early Hints\r\nLink: </a.css>; rel=preload\r\n\r\n"
           "HTTP/1.1 100 Continue\r\n\r\n"
           "HTTP/1.1 200 OK\r\nContent-Length: 5\r\n\r\nhello");
    const auto a = read_all(f);
    CHECK_FALSE(a.head_ec);
    CHECK(a.status == 200);
    CHECK(a.body == "hello");
    CHECK(a.done);
    CHECK(a.reusable);
}

TEST_CASE("upstream_response: an interim head alone is not an answer (the read goes on)") {
    fake_provider f;
    f.send("HTTP/1.1 103 Early Hints\r\n\r\n");
    f.provider.shutdown(tcp::socket::shutdown_send);  // and then nothing: the answer never comes
    const auto a = read_all(f);
    CHECK(a.head_ec);  // not a 103 passed on as the answer
    CHECK(a.status == 0);
}

TEST_CASE("upstream_response: 101 Switching Protocols is an error") {
    fake_provider f;
    f.send("HTTP/1.1 101 Switching Protocols\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n\r\n");
    const auto a = read_all(f);
    CHECK(a.head_ec == boost::beast::http::error::bad_status);
}

TEST_CASE("upstream_response: more interim heads than allowed are an error") {
    fake_provider f;
    std::string many;
    for (std::size_t i = 0; i <= upstream_response::max_interim; ++i) {
        many += "HTTP/1.1 103 Early Hints\r\n\r\n";
    }
    f.send(many + "HTTP/1.1 200 OK\r\nContent-Length: 0\r\n\r\n");
    CHECK(read_all(f).head_ec == boost::beast::http::error::bad_status);
}

TEST_CASE("upstream_response: interim heads count against the one head limit") {
    fake_provider f;
    const std::string field = "Link: <" + std::string(1000, 'a') + ">\r\n";
    std::string interim = "HTTP/1.1 103 Early Hints\r\n";
    for (int i = 0; i < 6; ++i) {
        interim += field;
    }
    interim += "\r\n";
    // Three interim heads of 6 KiB each: each under 16 KiB, together over it.
    f.send(interim + interim + interim + "HTTP/1.1 200 OK\r\nContent-Length: 0\r\n\r\n");
    CHECK(read_all(f).head_ec == boost::beast::http::error::header_limit);
}

TEST_CASE("upstream_response: bytes after a Content-Length body make the connection unusable") {
    fake_provider f;
    f.send("HTTP/1.1 200 OK\r\nContent-Length: 2\r\n\r\nokEXTRA");
    const auto a = read_all(f);
    CHECK(a.body == "ok");
    CHECK(a.done);
    CHECK_FALSE(a.reusable);
}

TEST_CASE("upstream_response: Connection: close and a close-delimited body are not reused") {
    {
        fake_provider f;
        f.send("HTTP/1.1 200 OK\r\nContent-Length: 2\r\nConnection: close\r\n\r\nok");
        const auto a = read_all(f);
        CHECK(a.done);
        CHECK_FALSE(a.reusable);
    }
    {
        fake_provider f;
        f.send("HTTP/1.1 200 OK\r\n\r\nuntil the end");
        f.provider.shutdown(tcp::socket::shutdown_send);
        const auto a = read_all(f);
        CHECK(a.body == "until the end");
        CHECK(a.done);
        CHECK_FALSE(a.reusable);
    }
}

TEST_CASE("upstream_response: a chunked answer cut short is not done") {
    fake_provider f;
    f.send("HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n5\r\nhello\r\n");
    f.provider.shutdown(tcp::socket::shutdown_send);
    const auto a = read_all(f);
    CHECK(a.body == "hello");
    CHECK_FALSE(a.done);
    CHECK_FALSE(a.reusable);
}
