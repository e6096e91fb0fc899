#include "mock_server.hpp"

#include <boost/asio/as_tuple.hpp>
#include <boost/asio/co_spawn.hpp>
#include <boost/asio/detached.hpp>
#include <boost/asio/io_context.hpp>
#include <boost/asio/ip/tcp.hpp>
#include <boost/asio/signal_set.hpp>
#include <boost/asio/ssl.hpp>
#include <boost/asio/steady_timer.hpp>
#include <boost/asio/use_awaitable.hpp>
#include <boost/asio/write.hpp>
#include <boost/beast/core/flat_buffer.hpp>
#include <boost/beast/core/stream_traits.hpp>
#include <boost/beast/http/error.hpp>
#include <boost/beast/http/read.hpp>
#include <boost/beast/http/status.hpp>
#include <boost/beast/http/string_body.hpp>
#include <boost/beast/http/parser.hpp>

#include <algorithm>
#include <chrono>
#include <cstdio>
#include <cstring>
#include <memory>
#include <optional>
#include <thread>
#include <tuple>
#include <type_traits>
#include <vector>

#include "mock_responses.hpp"

namespace byok::mock {

namespace {

namespace asio = boost::asio;
namespace beast = boost::beast;
namespace http = beast::http;
namespace ssl = asio::ssl;
using tcp = asio::ip::tcp;
using clock_type = std::chrono::steady_clock;
using namespace std::chrono_literals;

constexpr auto nothrow = asio::as_tuple(asio::use_awaitable);

constexpr std::size_t header_limit = 16 * 1024;
constexpr std::uint64_t body_limit = 16 * 1024 * 1024;
constexpr auto handshake_timeout = 10s;
constexpr auto idle_timeout = 120s;       // waiting for the next request on a kept-alive connection
constexpr auto body_timeout = 60s;        // rest of a request once its header arrived
constexpr auto write_timeout = 30s;
constexpr std::size_t watch_buffer_cap = 64 * 1024;

// Headers a relay must not pass on to browsers; the relay tests check they are stripped.
constexpr std::string_view leaky_headers =
    "set-cookie: mock_session=mock-cookie-must-not-leak; Path=/; HttpOnly\r\n"
    "x-internal-secret: mock-internal-secret-must-not-leak\r\n";

// Shared, read-only after start.
struct server_shared {
    mock_state& state;
    int delay_ms;
    ssl::context* tls;  // null: plain HTTP
};

enum class outcome { done, aborted, closed };

std::string chunk(std::string_view data) {
    char size[24];
    const int n = std::snprintf(size, sizeof size, "%zx\r\n", data.size());
    std::string out;
    out.reserve(data.size() + static_cast<std::size_t>(n) + 2);
    out.append(size, static_cast<std::size_t>(n));
    out += data;
    out += "\r\n";
    return out;
}

template <class Stream>
class session : public std::enable_shared_from_this<session<Stream>> {
public:
    static constexpr bool is_tls = !std::is_same_v<Stream, tcp::socket>;

    session(tcp::socket socket, const server_shared& shared)
        : stream_(make_stream(std::move(socket), shared)),
          wake_(stream_.get_executor()),
          watchdog_(stream_.get_executor()),
          shared_(shared) {}

    asio::awaitable<void> run() {
        auto self = this->shared_from_this();
        asio::co_spawn(stream_.get_executor(), [self] { return self->watchdog(); }, asio::detached);
        try {
            co_await serve();
        } catch (...) {
            finish();
            throw;
        }
        finish();
    }

private:
    static Stream make_stream(tcp::socket socket, const server_shared& shared) {
        if constexpr (is_tls) {
            return Stream(std::move(socket), *shared.tls);
        } else {
            return socket;
        }
    }

    tcp::socket& socket() { return beast::get_lowest_layer(stream_); }

    void arm(clock_type::duration d) { deadline_ = clock_type::now() + d; }
    void disarm() { deadline_ = clock_type::time_point::max(); }

    // Closes the socket once deadline_ passes. Ticks at most once a second, so
    // moving deadline_ costs nothing on the request path.
    asio::awaitable<void> watchdog() {
        while (!done_) {
            const auto now = clock_type::now();
            if (deadline_ <= now) {
                boost::system::error_code ignored;
                socket().close(ignored);
                co_return;
            }
            watchdog_.expires_at(std::min(deadline_, now + 1s));
            co_await watchdog_.async_wait(nothrow);
        }
    }

    void finish() {
        if (done_) {
            return;
        }
        done_ = true;
        watchdog_.cancel();
        boost::system::error_code ignored;
        socket().close(ignored);
        shared_.state.connection_closed();
    }

    asio::awaitable<void> serve() {
        bool ok = true;
        if constexpr (is_tls) {
            arm(handshake_timeout);
            const auto result = co_await stream_.async_handshake(ssl::stream_base::server, nothrow);
            disarm();
            ok = !std::get<0>(result);
            if (ok) {
                shared_.state.tls_handshake(SSL_session_reused(stream_.native_handle()) == 1);
            }
        }
        while (ok) {
            ok = co_await serve_one();
        }
        co_return;
    }

    asio::awaitable<bool> write(std::string_view data) {
        arm(write_timeout);
        auto [ec, n] = co_await asio::async_write(stream_, asio::buffer(data.data(), data.size()), nothrow);
        disarm();
        co_return !ec;
    }

    // length == chunked: chunked transfer coding; length == until_close: the
    // body ends when the connection closes (an HTTP/1.0 stream).
    static constexpr std::size_t chunked = static_cast<std::size_t>(-1);
    static constexpr std::size_t until_close = static_cast<std::size_t>(-2);

    static std::string head(unsigned status, std::string_view content_type, std::size_t length,
                            bool keep_alive, unsigned version, std::string_view extra) {
        std::string out;
        out.reserve(400);
        out += version == 10 ? "HTTP/1.0 " : "HTTP/1.1 ";
        out += std::to_string(status);
        out += ' ';
        out += http::obsolete_reason(static_cast<http::status>(status));
        out += "\r\nserver: byok-mock-provider\r\ncontent-type: ";
        out += content_type;
        if (length == chunked) {
            out += "\r\ncache-control: no-cache\r\ntransfer-encoding: chunked\r\n";
        } else if (length == until_close) {
            out += "\r\ncache-control: no-cache\r\n";
        } else {
            out += "\r\ncontent-length: ";
            out += std::to_string(length);
            out += "\r\n";
        }
        if (!keep_alive) {
            out += "connection: close\r\n";
        } else if (version == 10) {
            out += "connection: keep-alive\r\n";
        }
        out += extra;
        out += "\r\n";
        return out;
    }

    // Answers a request that could not be read; the connection closes after.
    asio::awaitable<void> reject(unsigned status, std::string_view message) {
        const std::string body = render_error(route::unknown, "invalid_request_error", message,
                                              "mock_bad_request");
        co_await write(head(status, "application/json", body.size(), false, 11, {}) + body);
    }

    asio::awaitable<bool> serve_one() {
        std::optional<http::request_parser<http::string_body>> parser;
        parser.emplace();
        parser->header_limit(header_limit);
        parser->body_limit(body_limit);

        arm(idle_timeout);
        auto [ec, n] = co_await http::async_read_header(stream_, buffer_, *parser, nothrow);
        if (!ec) {
            const auto expect = parser->get()[http::field::expect];
            if (beast::iequals(expect, "100-continue") && !parser->is_done()) {
                if (!co_await write("HTTP/1.1 100 Continue\r\n\r\n")) {
                    co_return false;
                }
            }
            arm(body_timeout);
            std::tie(ec, n) = co_await http::async_read(stream_, buffer_, *parser, nothrow);
        }
        disarm();
        if (ec) {
            if (ec == http::error::header_limit) {
                co_await reject(431, "request header too large");
            } else if (ec == http::error::body_limit) {
                co_await reject(413, "request body too large");
            } else if (ec.category() == http::make_error_code(http::error::bad_target).category() &&
                       ec != http::error::end_of_stream && ec != http::error::partial_message) {
                co_await reject(400, "malformed HTTP request");
            }
            co_return false;
        }

        auto& req = parser->get();
        const bool keep_alive = req.keep_alive();
        const unsigned version = req.version();
        const route r = match_route(req.target());
        if (is_admin(r)) {
            co_return co_await serve_admin(r, req.method(), keep_alive, version);
        }

        auto& state = shared_.state;
        state.request_served();
        const std::string& body = req.body();
        std::string sha = body_sha256(body);
        if (state.recording()) {
            recorded_request rec;
            rec.method = std::string(req.method_string());
            rec.target = std::string(req.target());
            rec.headers.reserve(16);
            for (const auto& f : req) {
                std::string name(f.name_string());
                for (auto& ch : name) {
                    if (ch >= 'A' && ch <= 'Z') {
                        ch = static_cast<char>(ch - 'A' + 'a');
                    }
                }
                rec.headers.emplace_back(std::move(name), std::string(f.value()));
            }
            rec.body_sha256 = sha;
            rec.body_bytes = body.size();
            state.record(std::move(rec));
        }

        const std::uint64_t id = state.next_id();
        std::string extra;
        extra.reserve(300);
        extra += r == route::messages ? "request-id: req_mock_" : "x-request-id: req_mock_";
        extra += std::to_string(id);
        extra += "\r\nopenai-processing-ms: ";
        extra += std::to_string(shared_.delay_ms);
        extra += r == route::messages ? "\r\nanthropic-ratelimit-requests-remaining: 9999\r\n"
                                      : "\r\nx-ratelimit-remaining-requests: 9999\r\n";
        extra += leaky_headers;

        auto send_error = [&](unsigned status, std::string_view type, std::string_view message,
                              std::string_view code) -> asio::awaitable<bool> {
            const std::string err = render_error(r, type, message, code);
            if (!co_await write(head(status, "application/json", err.size(), keep_alive,
                                     version, extra) + err)) {
                co_return false;
            }
            co_return keep_alive;
        };

        if (r == route::unknown) {
            co_return co_await send_error(404, "invalid_request_error", "unknown route", "unknown_url");
        }
        const bool get = req.method() == http::verb::get;
        if (get != wants_get(r)) {
            co_return co_await send_error(405, "invalid_request_error", "method not allowed",
                                          "method_not_allowed");
        }
        request_options opts;
        if (wants_json(r)) {
            opts = parse_options(body, !wants_get(r));
        } else {
            opts.model_json = "\"mock-model\"";  // a multipart upload: no options
        }
        if (r == route::gemini_generate || r == route::gemini_stream) {
            opts.model_json = model_from_path(req.target());  // Gemini names the model in the path
            opts.stream = r == route::gemini_stream;
        } else if (r == route::speech || r == route::moderations || r == route::client_secrets) {
            opts.stream = false;
        }
        if (r == route::moderations && body.find("MOCK_MODERATION_DOWN") != std::string::npos) {
            opts.mode = mock_mode::fail;
            opts.status = 503;
        }
        if (!opts.error.empty()) {
            co_return co_await send_error(400, "invalid_request_error", opts.error, "mock_bad_request");
        }

        answer_context ctx;
        ctx.r = r;
        ctx.model_json = std::move(opts.model_json);
        ctx.sha = std::move(sha);
        ctx.id = id;
        ctx.events = opts.events;
        ctx.base64 = opts.base64;
        ctx.flagged = r == route::moderations && body.find("MOCK_FLAG") != std::string::npos;

        const bool slow = shared_.delay_ms > 0 || opts.first_delay_ms > 0 || opts.interval_ms > 0 ||
                          opts.pause_ms > 0 || opts.mode == mock_mode::hang;
        if (slow) {
            start_watch();
        }
        const outcome result = co_await answer(ctx, opts, keep_alive, version, extra);
        co_await stop_watch();
        if (result == outcome::aborted) {
            state.stream_aborted();
            co_return false;
        }
        if (result == outcome::closed) {
            co_return false;
        }
        co_return keep_alive;
    }

    asio::awaitable<outcome> answer(const answer_context& ctx, const request_options& opts,
                                    bool keep_alive, unsigned version, const std::string& extra) {
        if (opts.mode == mock_mode::hang) {
            // Hold the connection until the peer goes away; no deadline.
            while (!peer_gone_ && watching_) {
                wake_.expires_at(clock_type::time_point::max());
                co_await wake_.async_wait(nothrow);
            }
            co_return outcome::aborted;
        }
        if (!co_await sleep(shared_.delay_ms)) {
            co_return outcome::aborted;
        }
        if (opts.mode == mock_mode::fail) {
            const std::string err = render_error(ctx.r, ctx.r == route::messages ? "api_error" : "server_error",
                                                 "mock failure", "mock_fail");
            if (!co_await sleep(opts.first_delay_ms)) {
                co_return outcome::aborted;
            }
            const bool ok = co_await write(head(static_cast<unsigned>(opts.status), "application/json",
                                                err.size(), keep_alive, version, extra) + err);
            co_return ok ? outcome::done : outcome::aborted;
        }
        const bool stream = opts.mode == mock_mode::reset ||
                            (opts.stream && ctx.r != route::embeddings && ctx.r != route::models);
        if (!stream) {
            if (!co_await sleep(opts.first_delay_ms)) {
                co_return outcome::aborted;
            }
            const std::string body = render_json_answer(ctx);
            const bool ok = co_await write(head(200, answer_content_type(ctx.r), body.size(),
                                                keep_alive, version, extra) + body);
            co_return ok ? outcome::done : outcome::aborted;
        }

        // SSE over chunked transfer coding; every event is its own write.
        if (version == 10) {
            keep_alive = false;  // no chunked coding in HTTP/1.0: close delimits the body
        }
        std::string first = head(200, "text/event-stream; charset=utf-8",
                                 version == 10 ? until_close : chunked, keep_alive, version, extra);
        const auto frame = [version](std::string_view data) {
            return version == 10 ? std::string(data) : chunk(data);
        };
        if (const std::string prologue = render_stream_prologue(ctx); !prologue.empty()) {
            first += frame(prologue);
        }
        if (!co_await write(first)) {
            co_return outcome::aborted;
        }
        const int events = opts.mode == mock_mode::reset ? std::min(opts.events, 2) : opts.events;
        for (int i = 0; i < events; ++i) {
            if (!co_await sleep(i == 0 ? opts.first_delay_ms : opts.interval_ms)) {
                co_return outcome::aborted;
            }
            if (i > 0 && i == opts.pause_after && !co_await sleep(opts.pause_ms)) {
                co_return outcome::aborted;
            }
            if (!co_await write(frame(render_stream_event(ctx, i)))) {
                co_return outcome::aborted;
            }
        }
        if (opts.mode == mock_mode::reset) {
            co_await stop_watch();
            boost::system::error_code ignored;
            socket().set_option(asio::socket_base::linger(true, 0), ignored);
            socket().close(ignored);
            co_return outcome::closed;
        }
        const std::string epilogue = render_stream_epilogue(ctx);
        std::string last = epilogue.empty() ? std::string() : frame(epilogue);
        if (version != 10) {
            last += "0\r\n\r\n";
        }
        if (!co_await write(last)) {
            co_return outcome::aborted;
        }
        co_return version == 10 ? outcome::closed : outcome::done;
    }

    asio::awaitable<bool> serve_admin(route r, http::verb method, bool keep_alive, unsigned version) {
        std::string body;
        unsigned status = 200;
        if ((r == route::admin_reset) != (method == http::verb::post)) {
            status = 405;
            body = render_error(r, "invalid_request_error", "method not allowed", "method_not_allowed");
        } else if (r == route::admin_requests) {
            body = shared_.state.requests_json();
        } else if (r == route::admin_stats) {
            body = shared_.state.stats_json();
        } else {
            shared_.state.reset();
            body = "{\"ok\":true}";
        }
        if (!co_await write(head(status, "application/json", body.size(), keep_alive, version,
                                 "cache-control: no-store\r\n") + body)) {
            co_return false;
        }
        co_return keep_alive;
    }

    // --- Peer-close detection while the answer waits or streams slowly. ---
    // A read stays pending on the socket; it completes with an error when the
    // peer closes (or resets), which marks the peer gone and wakes the answer.
    // Bytes that arrive (a pipelined request) go to buffer_ for the next parser.

    void start_watch() {
        watching_ = true;
        stop_requested_ = false;
        peer_gone_ = false;
        auto self = this->shared_from_this();
        asio::co_spawn(stream_.get_executor(), [self] { return self->watch(); }, asio::detached);
    }

    asio::awaitable<void> watch() {
        while (buffer_.size() < watch_buffer_cap) {
            auto [ec, n] = co_await stream_.async_read_some(buffer_.prepare(4096), nothrow);
            if (ec) {
                if (!(stop_requested_ && ec == asio::error::operation_aborted)) {
                    peer_gone_ = true;
                }
                break;
            }
            buffer_.commit(n);
        }
        watching_ = false;
        wake_.cancel();
    }

    asio::awaitable<void> stop_watch() {
        if (!watching_) {
            co_return;
        }
        stop_requested_ = true;
        boost::system::error_code ignored;
        socket().cancel(ignored);
        while (watching_) {
            wake_.expires_at(clock_type::time_point::max());
            co_await wake_.async_wait(nothrow);
        }
    }

    // Waits ms; false if the peer went away meanwhile.
    asio::awaitable<bool> sleep(int ms) {
        if (ms <= 0) {
            co_return !peer_gone_;
        }
        const auto end = clock_type::now() + std::chrono::milliseconds(ms);
        while (!peer_gone_) {
            if (clock_type::now() >= end) {
                co_return true;
            }
            wake_.expires_at(end);
            co_await wake_.async_wait(nothrow);
        }
        co_return false;
    }

    Stream stream_;
    beast::flat_buffer buffer_;
    asio::steady_timer wake_;
    asio::steady_timer watchdog_;
    const server_shared& shared_;
    clock_type::time_point deadline_ = clock_type::time_point::max();
    bool done_ = false;
    bool watching_ = false;
    bool stop_requested_ = false;
    bool peer_gone_ = false;
};

void log_exception(std::exception_ptr e) {
    if (!e) {
        return;
    }
    try {
        std::rethrow_exception(e);
    } catch (const std::exception& ex) {
        std::fprintf(stderr, "mock: connection error: %s\n", ex.what());
    } catch (...) {
        std::fprintf(stderr, "mock: connection error\n");
    }
}

asio::awaitable<void> accept_loop(tcp::acceptor& acceptor,
                                  std::vector<std::unique_ptr<asio::io_context>>& contexts,
                                  const server_shared& shared) {
    std::size_t next = 0;
    asio::steady_timer backoff(acceptor.get_executor());
    for (;;) {
        asio::io_context& target = *contexts[next++ % contexts.size()];
        auto [ec, socket] = co_await acceptor.async_accept(target, nothrow);
        if (ec == asio::error::operation_aborted || !acceptor.is_open()) {
            co_return;
        }
        if (ec) {
            // Out of descriptors and the like: do not spin.
            backoff.expires_after(10ms);
            co_await backoff.async_wait(nothrow);
            continue;
        }
        boost::system::error_code ignored;
        socket.set_option(tcp::no_delay(true), ignored);
        shared.state.connection_opened();
        if (shared.tls != nullptr) {
            auto s = std::make_shared<session<ssl::stream<tcp::socket>>>(std::move(socket), shared);
            asio::co_spawn(target, [s] { return s->run(); }, log_exception);
        } else {
            auto s = std::make_shared<session<tcp::socket>>(std::move(socket), shared);
            asio::co_spawn(target, [s] { return s->run(); }, log_exception);
        }
    }
}

int select_http11(SSL*, const unsigned char** out, unsigned char* outlen, const unsigned char* in,
                  unsigned int inlen, void*) {
    static const unsigned char proto[] = {8, 'h', 't', 't', 'p', '/', '1', '.', '1'};
    unsigned char* selected = nullptr;
    if (SSL_select_next_proto(&selected, outlen, proto, sizeof proto, in, inlen) !=
        OPENSSL_NPN_NEGOTIATED) {
        return SSL_TLSEXT_ERR_NOACK;
    }
    *out = selected;
    return SSL_TLSEXT_ERR_OK;
}

std::unique_ptr<ssl::context> make_tls_context(const tls_material& m) {
    auto ctx = std::make_unique<ssl::context>(ssl::context::tls_server);
    ctx->set_options(ssl::context::default_workarounds | ssl::context::no_sslv2 |
                     ssl::context::no_sslv3 | ssl::context::no_tlsv1 | ssl::context::no_tlsv1_1);
    SSL_CTX* h = ctx->native_handle();
    SSL_CTX_set_min_proto_version(h, TLS1_2_VERSION);
    ctx->use_certificate_chain(asio::buffer(m.cert_pem));
    ctx->use_private_key(asio::buffer(m.key_pem), ssl::context::pem);
    // Resumption: stateless tickets (on by default; made explicit) plus the server-side cache.
    SSL_CTX_clear_options(h, SSL_OP_NO_TICKET);
    SSL_CTX_set_session_cache_mode(h, SSL_SESS_CACHE_SERVER);
    static const unsigned char sid_ctx[] = "byok-mock-provider";
    SSL_CTX_set_session_id_context(h, sid_ctx, sizeof sid_ctx - 1);
    SSL_CTX_set_alpn_select_cb(h, select_http11, nullptr);
    return ctx;
}

asio::ip::address parse_host(const std::string& host) {
    if (host == "localhost") {
        return asio::ip::address_v4::loopback();
    }
    std::string h = host;
    if (h.size() >= 2 && h.front() == '[' && h.back() == ']') {
        h = h.substr(1, h.size() - 2);
    }
    return asio::ip::make_address(h);
}

}  // namespace

int run_server(const server_config& cfg, mock_state& state,
               const std::function<void(unsigned short)>& on_ready) {
    const int threads = std::max(1, cfg.threads);
    std::unique_ptr<ssl::context> tls;
    if (cfg.tls != nullptr) {
        tls = make_tls_context(*cfg.tls);
    }
    const server_shared shared{state, cfg.delay_ms, tls.get()};

    std::vector<std::unique_ptr<asio::io_context>> contexts;
    for (int i = 0; i < threads; ++i) {
        contexts.push_back(std::make_unique<asio::io_context>(1));
    }
    asio::io_context& main_ctx = *contexts.front();

    const tcp::endpoint endpoint(parse_host(cfg.host), cfg.port);
    tcp::acceptor acceptor(main_ctx);
    acceptor.open(endpoint.protocol());
    acceptor.set_option(asio::socket_base::reuse_address(true));
    acceptor.bind(endpoint);
    acceptor.listen(asio::socket_base::max_listen_connections);

    // Keep every context running while idle; signals stop them all.
    std::vector<asio::executor_work_guard<asio::io_context::executor_type>> work;
    for (auto& c : contexts) {
        work.emplace_back(c->get_executor());
    }
    asio::signal_set signals(main_ctx, SIGINT, SIGTERM);
    signals.async_wait([&](const boost::system::error_code& ec, int) {
        if (ec) {
            return;
        }
        boost::system::error_code ignored;
        acceptor.close(ignored);
        for (auto& c : contexts) {
            c->stop();
        }
    });

    asio::co_spawn(main_ctx, accept_loop(acceptor, contexts, shared), asio::detached);
    on_ready(acceptor.local_endpoint().port());

    std::vector<std::thread> pool;
    for (int i = 1; i < threads; ++i) {
        pool.emplace_back([&c = *contexts[static_cast<std::size_t>(i)]] { c.run(); });
    }
    main_ctx.run();
    for (auto& t : pool) {
        t.join();
    }
    return 0;
}

}  // namespace byok::mock
