// One client connection: read a request, route it, answer it; for a sealed
// request, check the seal, forward the one call to the provider and stream
// the answer back. Runs as one coroutine on its worker's thread; every
// upstream connection it uses belongs to the same thread.

#include <array>
#include <chrono>
#include <cstring>
#include <ctime>
#include <fstream>
#include <optional>
#include <string>

#include <sys/socket.h>

#include <boost/asio/as_tuple.hpp>
#include <boost/asio/experimental/awaitable_operators.hpp>
#include <boost/asio/post.hpp>
#include <boost/asio/steady_timer.hpp>
#include <boost/asio/use_awaitable.hpp>
#include <boost/asio/write.hpp>
#include <boost/beast/http/buffer_body.hpp>
#include <boost/beast/http/parser.hpp>
#include <boost/beast/http/read.hpp>
#include <boost/beast/http/string_body.hpp>

#include "crypto/encoding.hpp"
#include "crypto/secret.hpp"
#include "relay/access_log.hpp"
#include "relay/deadline.hpp"
#include "relay/errors.hpp"
#include "relay/http_util.hpp"
#include "relay/router.hpp"
#include "relay/server.hpp"

namespace byok::relay {

namespace {

namespace http = beast::http;
using asio::as_tuple;
using asio::use_awaitable;
using namespace asio::experimental::awaitable_operators;
using clock_type = std::chrono::steady_clock;

// Two of these per stream: small, because memory per concurrent stream is
// what bounds how many slow generations one relay can hold.
constexpr std::size_t pump_chunk = 4096;
// One read from a provider: a JSON answer or a burst of events at once.
constexpr std::size_t upstream_read_size = 4096;
constexpr std::size_t upstream_header_limit = 16 * 1024;
constexpr std::uint64_t upstream_body_limit = 1ull << 32;
constexpr std::size_t max_web_file = 16u << 20;

std::int64_t unix_now() { return static_cast<std::int64_t>(std::time(nullptr)); }

// One piece of response body as it goes on the wire: framed as an HTTP/1.1
// chunk when the response is chunked, raw otherwise (Content-Length or
// close-delimited). An empty piece is nothing at all, never the last-chunk.
class body_piece {
public:
    body_piece(std::string_view data, bool chunked) noexcept : data_(data) {
        if (chunked && !data.empty()) {
            size_len_ = static_cast<std::size_t>(std::snprintf(size_line_, sizeof size_line_, "%zx\r\n", data.size()));
            crlf_len_ = 2;
        }
    }
    [[nodiscard]] asio::const_buffer size_line() const noexcept { return asio::buffer(size_line_, size_len_); }
    [[nodiscard]] asio::const_buffer data() const noexcept { return asio::buffer(data_); }
    [[nodiscard]] asio::const_buffer crlf() const noexcept { return asio::buffer("\r\n", crlf_len_); }

private:
    char size_line_[24]{};
    std::size_t size_len_ = 0;
    std::size_t crlf_len_ = 0;
    std::string_view data_;
};

// Appends "name: value\r\n" for each field `allowed` accepts (by lower-case
// name), skipping values with control characters. `Out` is a std::string or
// the wiped secret_string of an upstream request head.
template <class Out, class Fields, class Allowed>
void append_allowed_fields(Out& out, const Fields& fields, Allowed allowed) {
    std::string name;
    for (const auto& f : fields) {
        name.assign(f.name_string());
        for (auto& c : name) {
            c = static_cast<char>(std::tolower(static_cast<unsigned char>(c)));
        }
        if (allowed(name) && field_value_ok(f.value())) {
            out.append(name).append(": ").append(f.value()).append("\r\n");
        }
    }
}

// Request state the handlers share.
struct request_ctx {
    clock_type::time_point start = clock_type::now();
    std::string client_ip;
    std::string method;
    std::string target;
    std::string provider_name;
    metric_route route = metric_route::unknown;
    std::size_t provider_index = metrics::no_provider;
    unsigned status = 0;
    unsigned upstream_status = 0;
    std::uint64_t bytes_in = 0;
    std::uint64_t bytes_out = 0;
    std::string_view error;
    std::string cors;  // CORS response header lines (just "Vary: Origin" when the origin is not allowed)
    bool cors_allowed = false;
    bool keep_alive = true;
    unsigned version = 11;
};

class session {
public:
    session(shared_state& s, worker& w, asio::ip::tcp::socket sock)
        : s_(s), w_(w), cfg_(*s.cfg), sock_(std::move(sock)) {
        boost::system::error_code ec;
        const auto ep = sock_.remote_endpoint(ec);
        if (!ec) {
            // A dual-stack listener reports IPv4 clients as ::ffff:a.b.c.d; log and limit them as IPv4.
            const auto a = ep.address();
            peer_ip_ = a.is_v6() && a.to_v6().is_v4_mapped()
                           ? asio::ip::make_address_v4(asio::ip::v4_mapped, a.to_v6()).to_string()
                           : a.to_string();
        }
        sock_.set_option(asio::ip::tcp::no_delay(true), ec);
        // Room for the largest header plus a read's worth of body or pipelined bytes.
        buffer_.max_size(cfg_.max_header_bytes + 16 * 1024);
        slot_.socket = &sock_;
        w_.sessions.insert(&slot_);
        s_.sessions.fetch_add(1);
        s_.stats.open_connections.fetch_add(1);
    }
    ~session() {
        w_.sessions.erase(&slot_);
        s_.sessions.fetch_sub(1);
        s_.stats.open_connections.fetch_sub(1);
        if (counted_) {
            s_.limiter.connection_closed(peer_ip_);
        }
    }
    session(const session&) = delete;
    session& operator=(const session&) = delete;

    asio::awaitable<void> run();

private:
    asio::awaitable<bool> serve_one();
    asio::awaitable<void> handle_sealed(http::request_parser<http::string_body>& parser, const route& r,
                                        request_ctx& rq);
    asio::awaitable<void> forward(http::request<http::string_body>& req, const route& r, request_ctx& rq,
                                  crypto::opened_key key);
    asio::awaitable<void> serve_web(const route& r, request_ctx& rq, bool head_only);

    asio::awaitable<bool> write_all(std::span<const asio::const_buffer> bufs, std::uint64_t& counter);
    asio::awaitable<bool> write_text(std::string_view text, request_ctx& rq);
    asio::awaitable<void> respond(request_ctx& rq, unsigned status, std::string_view content_type,
                                  std::string_view body, std::string_view extra_headers = {});
    asio::awaitable<void> respond_error(request_ctx& rq, error_code e, std::string_view extra_headers = {});

    std::string client_ip_for(const http::request<http::string_body>& req) const;
    std::string cors_for(const http::request<http::string_body>& req) const;
    bool origin_allowed(std::string_view origin) const;

    shared_state& s_;
    worker& w_;
    const config& cfg_;
    asio::ip::tcp::socket sock_;
    socket_deadline deadline_{sock_};
    read_buffer buffer_;  // also holds pipelined bytes; capped in the constructor; wiped when freed
    std::string peer_ip_;
    session_slot slot_;
    bool counted_ = false;
    bool linger_ = false;  // drain the client's input before closing
    bool first_ = true;
};

asio::awaitable<void> session::run() {
    if (cfg_.trusted_proxies.contains(peer_ip_)) {
        // A trusted proxy multiplexes many clients; it is not capped per IP.
    } else if (!s_.limiter.connection_opened(peer_ip_)) {
        request_ctx rq;
        rq.client_ip = peer_ip_;
        rq.keep_alive = false;
        co_await respond_error(rq, error_code::rate_limited, "Retry-After: 1\r\n");
        write_access_log({rq.client_ip, "-", "", "-", rq.status, 0, 0, 0, rq.bytes_out, "too_many_connections"});
        co_return;
    } else {
        counted_ = true;
    }
    while (co_await serve_one()) {
    }
    boost::system::error_code ec;
    sock_.shutdown(asio::ip::tcp::socket::shutdown_send, ec);
    if (linger_ && !ec) {
        // Lingering close (RFC 9112 §9.6): the client may still be sending the
        // request we refused. Closing now, with its bytes unread, makes the
        // kernel answer with a RST, and a RST can destroy our error response
        // before the client reads it. So read and discard for a while first,
        // bounded in time and bytes like nginx's lingering_close.
        std::size_t drained = 0;
        deadline_.expires_after(std::chrono::seconds(2));  // for the whole drain, not per read
        while (drained < (1u << 20)) {
            auto [rec, n] = co_await sock_.async_read_some(buffer_.prepare(4096), as_tuple(use_awaitable));
            if (rec) {
                break;
            }
            buffer_.commit(n);
            buffer_.consume(buffer_.size());
            drained += n;
        }
    }
    (void)deadline_.settle({});
    sock_.close(ec);
}

// Reads and answers one request. False when the connection is done.
asio::awaitable<bool> session::serve_one() {
    if (s_.draining.load() && buffer_.size() == 0) {
        co_return false;
    }
    http::request_parser<http::string_body> parser;
    // Destroyed before the parser: a key sent unsealed must not stay in its freed fields.
    struct head_wiper {
        http::request_parser<http::string_body>& p;
        ~head_wiper() { wipe_request_head(p.get()); }
    } const head_wiper_guard{parser};
    parser.header_limit(static_cast<std::uint32_t>(cfg_.max_header_bytes));
    parser.body_limit(cfg_.max_body_bytes);
    deadline_.expires_after(std::chrono::seconds(first_ ? cfg_.header_timeout_s : cfg_.idle_timeout_s));
    slot_.idle = buffer_.size() == 0;
    // A whole request head (about 1 KiB with its seal) in one read, not 512 bytes at a time.
    buffer_.reserve(4096);
    fold_watch_buffer head_buffer(buffer_, cfg_.max_header_bytes);
    auto [ec, n] = co_await http::async_read_header(sock_, head_buffer, parser, as_tuple(use_awaitable));
    ec = deadline_.settle(ec);
    slot_.idle = false;
    first_ = false;

    request_ctx rq;
    rq.client_ip = peer_ip_;
    if (ec) {
        if (ec == http::error::end_of_stream || ec == asio::error::operation_aborted ||
            ec == asio::error::connection_reset || ec == asio::error::eof) {
            co_return false;
        }
        if (ec == beast::error::timeout) {
            // Silence between requests is an idle close, not an error; a
            // request that started and stalled gets an answer.
            if (n > 0 || buffer_.size() > 0) {
                rq.keep_alive = false;
                co_await respond_error(rq, error_code::request_timeout);
                write_access_log({rq.client_ip, "-", "", "-", rq.status, 0, 0, 0, rq.bytes_out, "request_timeout"});
            }
            co_return false;
        }
        rq.keep_alive = false;
        linger_ = true;
        const error_code e = ec == http::error::header_limit || ec == http::error::buffer_overflow
                                 ? error_code::headers_too_large
                             : ec == http::error::body_limit ? error_code::body_too_large
                                                             : error_code::bad_request;
        co_await respond_error(rq, e);
        rq.error = describe(e).code;
        write_access_log({rq.client_ip, "-", "", "-", rq.status, 0, 0, 0, rq.bytes_out, rq.error});
        s_.stats.request_done(metrics::no_provider, metric_route::invalid, rq.status);
        co_return false;
    }

    auto& req = parser.get();
    rq.method = std::string(req.method_string());
    rq.target = std::string(req.target());
    rq.version = req.version();
    rq.client_ip = client_ip_for(req);
    rq.cors = cors_for(req);
    rq.cors_allowed = rq.cors.find("Access-Control-Allow-Origin") != std::string::npos;
    rq.keep_alive = req.keep_alive() && !s_.draining.load();

    if (!framing_ok(req.base(), req.version()) || head_buffer.folded()) {
        rq.keep_alive = false;  // the next request's boundary is unknowable
        co_await respond_error(rq, error_code::bad_request);
    } else if (const unsigned wait = s_.limiter.request(rq.client_ip); wait > 0) {
        rq.keep_alive = rq.keep_alive && parser.content_length().value_or(0) == 0 && !parser.chunked();
        co_await respond_error(rq, error_code::rate_limited, "Retry-After: " + std::to_string(wait) + "\r\n");
    } else {
        const route r = classify(cfg_, rq.target);
        const bool has_body = parser.chunked() || parser.content_length().value_or(0) > 0;
        const auto verb = req.method();
        switch (r.kind) {
        case route_kind::sealed:
            rq.route = metric_route::sealed;
            rq.provider_name = r.prov->name;
            rq.provider_index = s_.provider_index(r.prov);
            if (verb == http::verb::options) {
                break;  // preflight, below
            }
            co_await handle_sealed(parser, r, rq);
            break;
        case route_kind::keys:
            rq.route = metric_route::keys;
            break;
        case route_kind::healthz:
            rq.route = metric_route::healthz;
            break;
        case route_kind::web:
        case route_kind::root:
            rq.route = metric_route::web;
            break;
        case route_kind::unknown:
            break;
        }
        if (rq.status == 0) {
            // Everything but a sealed request is answered without reading a
            // body; a connection whose body was not read cannot be reused.
            if (has_body) {
                rq.keep_alive = false;
            }
            if (verb == http::verb::options) {
                rq.route = metric_route::preflight;
                std::string h = "Allow: GET, POST, DELETE, OPTIONS\r\n";
                if (rq.cors_allowed && req.count(http::field::access_control_request_method) > 0) {
                    std::string_view asked = req[http::field::access_control_request_headers];
                    h += "Access-Control-Allow-Methods: GET, POST, DELETE, OPTIONS\r\n"
                         "Access-Control-Max-Age: 600\r\n";
                    // Echo the requested header names if they are plain tokens
                    // (the openai client sends many x-stainless-* headers).
                    bool tokens = asked.size() < 2048;
                    for (const char c : asked) {
                        if (!(std::isalnum(static_cast<unsigned char>(c)) || c == '-' || c == '_' || c == ',' ||
                              c == ' ')) {
                            tokens = false;
                        }
                    }
                    if (tokens && !asked.empty()) {
                        h += "Access-Control-Allow-Headers: " + std::string(asked) + "\r\n";
                    } else {
                        h += "Access-Control-Allow-Headers: authorization, content-type\r\n";
                    }
                }
                co_await respond(rq, 204, "", "", h);
            } else if (r.kind == route_kind::unknown) {
                co_await respond_error(rq, error_code::unknown_route);
            } else if (verb != http::verb::get && verb != http::verb::head) {
                co_await respond_error(rq, error_code::method_not_allowed, "Allow: GET, HEAD\r\n");
            } else if (r.kind == route_kind::keys) {
                const auto keys = s_.keys.load();
                co_await respond(rq, 200, "application/json", keys->key_config_json(unix_now()),
                                 "Cache-Control: public, max-age=300\r\n");
            } else if (r.kind == route_kind::healthz) {
                if (s_.draining.load()) {
                    rq.keep_alive = false;
                    co_await respond(rq, 503, "application/json", R"({"status":"draining"})");
                } else {
                    co_await respond(rq, 200, "application/json", R"({"status":"ok"})");
                }
            } else if (r.kind == route_kind::root) {
                co_await respond(rq, 302, "text/plain", "see web/demo/\n", "Location: web/demo/\r\n");
            } else {
                co_await serve_web(r, rq, verb == http::verb::head);
            }
        }
    }

    if (rq.status != 0) {
        const double ms = std::chrono::duration<double, std::milli>(clock_type::now() - rq.start).count();
        write_access_log({rq.client_ip, rq.method, rq.provider_name, rq.target, rq.status, rq.upstream_status, ms,
                          rq.bytes_in, rq.bytes_out, rq.error});
        s_.stats.request_done(rq.provider_index, rq.route, rq.status);
    }
    if (buffer_.size() == 0 && buffer_.capacity() > 4096) {
        buffer_.shrink_to_fit();  // an idle keep-alive connection keeps at most the 4 KiB its next read reserves
    }
    // Closing after an answer to a request whose bytes may not all have been
    // read: linger (see run()). Not after a timeout (a slow client gets no
    // more time) or when the client already left.
    if (!rq.keep_alive && rq.status != 0 && rq.status != 408 && rq.status != 499) {
        linger_ = true;
    }
    co_return rq.keep_alive && sock_.is_open();
}

asio::awaitable<void> session::handle_sealed(http::request_parser<http::string_body>& parser, const route& r,
                                             request_ctx& rq) {
    auto& req = parser.get();
    const auto verb = req.method();
    if (verb != http::verb::post && verb != http::verb::get && verb != http::verb::delete_) {
        rq.keep_alive = rq.keep_alive && !parser.chunked() && parser.content_length().value_or(0) == 0;
        co_await respond_error(rq, error_code::method_not_allowed, "Allow: GET, POST, DELETE\r\n");
        co_return;
    }
    // Counted from here to the end of the upstream exchange.
    struct in_flight_guard {
        std::atomic<std::int64_t>& n;
        ~in_flight_guard() { n.fetch_sub(1); }
    };
    const auto now_in_flight = s_.stats.in_flight.fetch_add(1) + 1;
    in_flight_guard guard{s_.stats.in_flight};
    if (static_cast<std::size_t>(now_in_flight) > cfg_.max_in_flight || s_.draining.load()) {
        rq.keep_alive = false;
        co_await respond_error(rq, error_code::overloaded, "Retry-After: 1\r\n");
        co_return;
    }

    // The body: the seal binds its hash, so all of it is needed before anything goes upstream.
    if (!parser.is_done()) {
        if (req[http::field::expect] == "100-continue" || iequals(req[http::field::expect], "100-continue")) {
            co_await write_text("HTTP/1.1 100 Continue\r\n\r\n", rq);
        }
        deadline_.expires_after(std::chrono::seconds(cfg_.body_timeout_s));
        auto [ec, n] = co_await http::async_read(sock_, buffer_, parser, as_tuple(use_awaitable));
        ec = deadline_.settle(ec);
        if (ec) {
            rq.keep_alive = false;
            if (ec == http::error::body_limit) {
                co_await respond_error(rq, error_code::body_too_large);
            } else if (ec == beast::error::timeout) {
                co_await respond_error(rq, error_code::request_timeout);
            } else if (ec != http::error::end_of_stream && ec != asio::error::connection_reset &&
                       ec != asio::error::eof) {
                co_await respond_error(rq, error_code::bad_request);
            } else {
                rq.status = 499;  // the client went away (nginx's convention, for the log)
                rq.error = "client_closed";
            }
            co_return;
        }
    }
    rq.bytes_in = req.body().size();

    const auto digest = crypto::sha256(req.body());
    std::string sealed_path;
    sealed_path.reserve(cfg_.public_path_prefix.size() + rq.target.size());
    sealed_path.append(cfg_.public_path_prefix).append(rq.target);
    const crypto::request_facts facts{req.method_string(), sealed_path, &digest, req[http::field::authorization]};
    const auto keys = s_.keys.load();
    auto result = s_.checker.check(*keys, facts, unix_now());
    if (!result) {
        const error_code e = from_seal_error(result.error());
        if (e != error_code::overloaded) {
            s_.stats.seal_rejected(e);
        }
        co_await respond_error(rq, e, e == error_code::overloaded ? "Retry-After: 1\r\n" : "");
        co_return;
    }
    co_await forward(req, r, rq, std::move(result).take_key());
}

asio::awaitable<void> session::forward(http::request<http::string_body>& req, const route& r, request_ctx& rq,
                                       crypto::opened_key key) {
    const std::size_t pidx = s_.provider_index(r.prov);
    upstream_pool& pool = *w_.pools[pidx];
    const provider& prov = *r.prov;

    // 1. A verified connection, before the key is put anywhere.
    std::unique_ptr<upstream_conn> conn = pool.take();
    if (!conn) {
        boost::system::error_code ec;
        conn = co_await pool.connect(std::chrono::seconds(cfg_.upstream_connect_timeout_s), ec);
        if (!conn) {
            co_await respond_error(rq, ec == beast::error::timeout ? error_code::upstream_timeout
                                                                   : error_code::upstream_unreachable);
            co_return;
        }
    }

    // Code that handles the key may leave pieces of it in stack frames it
    // does not wipe. After OpenSSL began writing to the socket itself, the
    // residue test found 40 key bytes on the worker's stack after a first
    // request (in 4 of 12 fresh relays; -O2 -g build), 1 KiB below the event
    // loop's frame: shallower than the frame that called SSL_write, so
    // out of reach of a wipe from there. Once the head is written and wiped,
    // a handler posted to this thread runs from the top of its event loop and
    // zeroes the 16 KiB below it: every frame this request used.
    auto post_stack_wipe = [this] { asio::post(sock_.get_executor(), [] { crypto::wipe_stack_below(); }); };

    // 2. The request head, in wiped memory; the key is copied exactly once, into it.
    {
        crypto::secret_string head(crypto::wiping_allocator<char>{});
        head.reserve(512 + key.value().size() + (req.body().size() <= 16384 ? req.body().size() : 0));
        head.append(req.method_string()).append(" ").append(upstream_target(prov, r.rest)).append(" HTTP/1.1\r\n");
        head.append("Host: ").append(prov.host_header).append("\r\n");
        switch (prov.auth) {
        case auth_style::bearer: head.append("Authorization: Bearer "); break;
        case auth_style::x_api_key: head.append("x-api-key: "); break;
        case auth_style::api_key: head.append("api-key: "); break;
        }
        head.append(key.value()).append("\r\n");
        append_allowed_fields(head, req.base(), forward_request_header);
        if (!req.body().empty() || req.method() == http::verb::post) {
            head.append("Content-Length: ").append(std::to_string(req.body().size())).append("\r\n");
        }
        head.append("\r\n");
        const bool inline_body = req.body().size() <= 16384;
        if (inline_body) {
            head.append(req.body());
        }
        std::array<asio::const_buffer, 2> bufs{asio::buffer(head.data(), head.size()),
                                               asio::buffer(inline_body ? std::string_view() : req.body())};
        conn->deadline.expires_after(std::chrono::seconds(cfg_.upstream_timeout_s));
        const auto wec = co_await conn->write(bufs);
        post_stack_wipe();
        if (wec) {
            conn->close();
            co_await respond_error(rq, wec == beast::error::timeout ? error_code::upstream_timeout
                                                                    : error_code::upstream_unreachable);
            co_return;
        }
    }
    // The request has been written (and `head` wiped on leaving the block
    // above): nothing here needs the key any more.
    { [[maybe_unused]] const crypto::opened_key wiped = std::move(key); }
    req.body().clear();
    req.body().shrink_to_fit();
    if (buffer_.size() == 0) {
        buffer_.shrink_to_fit();  // a stream may be long: hold no client read buffer meanwhile
    }
    const auto sent_at = clock_type::now();

    // 3. From here on three activities share this connection's thread:
    //    the upstream reader, the client writer, and a watcher that notices
    //    the client going away (and then closes the upstream at once).
    struct pump_state {
        explicit pump_state(const asio::any_io_executor& ex) : writer_wake(ex), reader_wake(ex) {}
        asio::steady_timer writer_wake;
        asio::steady_timer reader_wake;
        std::array<std::array<char, pump_chunk>, 2> bufs{};
        const char* chunk = nullptr;
        std::size_t chunk_len = 0;
        bool pending = false;      // a chunk waits for the writer
        bool head_ready = false;   // the response head is parsed
        bool finished = false;     // the reader is done (complete or failed)
        bool complete = false;     // the upstream message arrived whole
        bool client_gone = false;
        bool done = false;         // the exchange is over; the watcher should stop
        error_code failure = error_code::internal_error;
        bool failed_before_head = false;
    };
    auto ps = std::make_unique<pump_state>(sock_.get_executor());
    http::response_parser<http::buffer_body> up;
    up.header_limit(upstream_header_limit);
    up.body_limit(upstream_body_limit);

    // Feeds the parser the bytes read from the provider and not yet parsed:
    // the head, then body bytes into the current pump buffer until it is full.
    // Never waits for the network, so events that arrived together leave in
    // one client write and none waits behind a read. Beast's header_limit
    // bounds one put(), but the parser consumes complete fields as it goes:
    // the head's total is counted here (fold_watch_buffer does the same for
    // client requests).
    std::size_t head_bytes = 0;
    auto parse = [&]() -> boost::system::error_code {
        auto& b = conn->buffer;
        while (b.size() > 0 && !up.is_done() && !(up.is_header_done() && up.get().body().size == 0)) {
            boost::system::error_code pec;
            const bool in_head = !up.is_header_done();
            const std::size_t used = up.put(b.data(), pec);
            b.consume(used);
            if (in_head) {
                head_bytes += used;
                if (!up.is_header_done() && head_bytes + b.size() > upstream_header_limit) {
                    return http::error::header_limit;
                }
            }
            if (pec == http::error::need_more || pec == http::error::need_buffer) {
                break;
            }
            if (pec) {
                return pec;
            }
            if (used == 0) {
                break;
            }
        }
        return {};
    };
    // One read from the provider: everything it has sent so far, up to 4 KiB.
    // The first read waits for readability before trying (the answer cannot
    // be there yet); a clean end of the connection goes to the parser, which
    // decides whether it ended the message (a close-delimited body) or cut it.
    bool first_read = true;
    auto fill = [&]() -> asio::awaitable<boost::system::error_code> {
        auto& b = conn->buffer;
        const std::size_t room = std::min<std::size_t>(upstream_read_size, b.max_size() - b.size());
        if (room == 0) {
            co_return http::error::header_limit;
        }
        conn->deadline.expires_after(std::chrono::seconds(cfg_.upstream_timeout_s));
        auto [ec, n] = co_await conn->read_some(b.prepare(room), first_read);
        first_read = false;
        b.commit(n);
        if (ec == asio::error::eof) {
            if (!up.is_header_done()) {
                co_return up.got_some() ? http::error::partial_message : http::error::end_of_stream;
            }
            boost::system::error_code eec;
            up.put_eof(eec);
            co_return eec ? eec : http::error::end_of_stream;
        }
        co_return ec;
    };
    auto read_head = [&]() -> asio::awaitable<boost::system::error_code> {
        for (;;) {
            if (const auto pec = parse()) {
                co_return pec;
            }
            if (up.is_header_done()) {
                co_return boost::system::error_code{};
            }
            if (const auto ec = co_await fill()) {
                co_return ec;
            }
        }
    };

    auto wake = [](asio::steady_timer& t) { t.cancel(); };

    auto reader = [&]() -> asio::awaitable<void> {
        // Body bytes that come with the head go straight into the first pump buffer.
        up.get().body().data = ps->bufs[0].data();
        up.get().body().size = pump_chunk;
        const auto ec = co_await read_head();
        if (ec) {
            ps->finished = true;
            ps->failed_before_head = true;
            ps->failure = ec == beast::error::timeout ? error_code::upstream_timeout
                          : ec.category() == http::make_error_code(http::error::bad_version).category()
                              ? error_code::upstream_bad_response
                              : error_code::upstream_unreachable;
            wake(ps->writer_wake);
            co_return;
        }
        std::size_t idx = 0;
        // Body bytes that came with the head go out in the same write as the head.
        if (pump_chunk - up.get().body().size > 0) {
            ps->chunk = ps->bufs[0].data();
            ps->chunk_len = pump_chunk - up.get().body().size;
            ps->pending = true;
            idx = 1;
        }
        ps->head_ready = true;
        wake(ps->writer_wake);
        while (!up.is_done() && !ps->client_gone) {
            up.get().body().data = ps->bufs[idx].data();
            up.get().body().size = pump_chunk;
            auto rec = parse();
            if (!rec && !up.is_done() && up.get().body().size == pump_chunk) {
                rec = co_await fill();  // nothing buffered: wait for the provider
                if (!rec) {
                    rec = parse();
                }
            }
            const std::size_t got = pump_chunk - up.get().body().size;
            if (got > 0) {
                while (ps->pending && !ps->client_gone) {
                    ps->reader_wake.expires_at(asio::steady_timer::time_point::max());
                    co_await ps->reader_wake.async_wait(as_tuple(use_awaitable));
                }
                if (ps->client_gone) {
                    break;
                }
                ps->chunk = ps->bufs[idx].data();
                ps->chunk_len = got;
                ps->pending = true;
                idx ^= 1;
                wake(ps->writer_wake);
            }
            if (rec && !(rec == http::error::end_of_stream && up.is_done())) {
                break;
            }
        }
        ps->complete = up.is_done();
        ps->finished = true;
        wake(ps->writer_wake);
    };

    bool chunked_out = false;
    auto writer = [&]() -> asio::awaitable<void> {
        // Wait for the head (or failure), watching for the client leaving.
        while (!ps->head_ready && !ps->finished && !ps->client_gone) {
            ps->writer_wake.expires_at(asio::steady_timer::time_point::max());
            co_await ps->writer_wake.async_wait(as_tuple(use_awaitable));
        }
        if (ps->client_gone) {
            co_return;
        }
        const double ttfb = std::chrono::duration<double>(clock_type::now() - sent_at).count();
        if (!ps->head_ready) {
            co_await respond_error(rq, ps->failure);
            co_return;
        }
        auto& res = up.get();
        rq.upstream_status = res.result_int();
        rq.status = rq.upstream_status;
        const bool is_sse = res[http::field::content_type].substr(0, 17) == "text/event-stream";
        std::string h;
        h.reserve(512);
        h.append("HTTP/1.1 ").append(std::to_string(rq.status)).append(" ").append(reason_phrase(rq.status));
        h.append("\r\nDate: ").append(http_date(unix_now())).append("\r\n");
        append_allowed_fields(h, res.base(), forward_response_header);
        h.append("Cache-Control: no-store\r\nX-Accel-Buffering: no\r\n").append(rq.cors);
        const bool no_body = rq.status == 204 || rq.status == 304 || (rq.status >= 100 && rq.status < 200);
        if (no_body) {
        } else if (up.content_length() && !up.chunked()) {
            h.append("Content-Length: ").append(std::to_string(*up.content_length())).append("\r\n");
        } else if (rq.version >= 11) {
            h.append("Transfer-Encoding: chunked\r\n");
            chunked_out = true;
        } else {
            rq.keep_alive = false;  // HTTP/1.0: the end of the body is the end of the connection
        }
        if (!rq.keep_alive) {
            h.append("Connection: close\r\n");
        }
        h.append("\r\n");
        // The head, and the first piece of body if it is already here, in one write.
        {
            const bool with_body = ps->pending;
            const body_piece first(with_body ? std::string_view(ps->chunk, ps->chunk_len) : std::string_view(),
                                   chunked_out);
            const std::array<asio::const_buffer, 4> bufs{asio::buffer(h), first.size_line(), first.data(),
                                                         first.crlf()};
            const bool ok = co_await write_all(bufs, rq.bytes_out);
            if (with_body) {
                ps->pending = false;
                wake(ps->reader_wake);
            }
            if (!ok) {
                ps->client_gone = true;
                conn->close();
                wake(ps->reader_wake);
                co_return;
            }
        }
        s_.stats.upstream_ttfb(pidx, ttfb);
        for (;;) {
            if (ps->client_gone) {
                co_return;
            }
            if (ps->pending) {
                const body_piece piece(std::string_view(ps->chunk, ps->chunk_len), chunked_out);
                const std::array<asio::const_buffer, 3> bufs{piece.size_line(), piece.data(), piece.crlf()};
                const bool ok = co_await write_all(bufs, rq.bytes_out);
                ps->pending = false;
                wake(ps->reader_wake);
                if (!ok) {
                    ps->client_gone = true;
                    conn->close();
                    co_return;
                }
                continue;
            }
            if (ps->finished) {
                break;
            }
            ps->writer_wake.expires_after(is_sse ? std::chrono::seconds(cfg_.sse_keepalive_s)
                                                 : std::chrono::seconds(24 * 3600));
            auto [wec] = co_await ps->writer_wake.async_wait(as_tuple(use_awaitable));
            if (!wec && is_sse && !ps->pending && !ps->finished && !ps->client_gone) {
                // A comment line: ignored by SSE parsers, keeps idle-timeout proxies from cutting the stream.
                static constexpr std::string_view ka = ": keep-alive\n\n";
                const body_piece piece(ka, chunked_out);
                const std::array<asio::const_buffer, 3> bufs{piece.size_line(), piece.data(), piece.crlf()};
                if (!co_await write_all(bufs, rq.bytes_out)) {
                    ps->client_gone = true;
                    conn->close();
                    co_return;
                }
            }
        }
        if (ps->complete) {
            if (chunked_out) {
                if (!co_await write_text("0\r\n\r\n", rq)) {
                    ps->client_gone = true;
                }
            }
        } else {
            // The provider broke off mid-answer: the client must see a broken
            // response, not a complete-looking one, so the connection is closed
            // without the final chunk.
            rq.keep_alive = false;
            rq.error = describe(error_code::upstream_bad_response).code;
            boost::system::error_code ec;
            sock_.close(ec);
        }
    };

    auto watcher = [&]() -> asio::awaitable<void> {
        // Peeks at one byte of the client's socket, with no buffer and no
        // time limit: a generation may last minutes and the client sends
        // nothing meanwhile. A reactor read, not async_wait: after the
        // request's read drained the socket Asio queues it without a system
        // call, where async_wait re-arms the descriptor (epoll_ctl) each time.
        char byte = 0;
        auto [ec, n] = co_await sock_.async_receive(asio::buffer(&byte, 1), asio::socket_base::message_peek,
                                                    as_tuple(use_awaitable));
        if (ps->done || ec == asio::error::operation_aborted || (!ec && n > 0)) {
            co_return;  // the exchange ended first, or a pipelined request (read after this answer)
        }
        // End of stream, reset, or an error: the client is gone.
        ps->client_gone = true;
        conn->close();
        wake(ps->reader_wake);
        wake(ps->writer_wake);
    };

    auto exchange = [&]() -> asio::awaitable<void> {
        co_await (reader() && writer());
        ps->done = true;
        boost::system::error_code ec;
        sock_.cancel(ec);  // stops the watcher
    };
    co_await (exchange() && watcher());

    const double total = std::chrono::duration<double>(clock_type::now() - sent_at).count();
    if (ps->head_ready) {
        s_.stats.upstream_total(pidx, total);
    }
    if (ps->client_gone) {
        rq.keep_alive = false;
        if (rq.status == 0) {
            rq.status = 499;
        }
        rq.error = "client_closed";
    }
    // Reused only after a whole answer with nothing left over.
    if (ps->complete && !ps->client_gone && up.keep_alive() && conn->is_open() && conn->buffer.size() == 0) {
        pool.remember_session(*conn);
        pool.give_back(std::move(conn));
    } else {
        conn->close();
    }
}

asio::awaitable<void> session::serve_web(const route& r, request_ctx& rq, bool head_only) {
    std::string rel(r.web_path);
    if (rel.empty() || rel.back() == '/') {
        rel += "index.html";
    }
    // is_plain_path already refused dot segments; also refuse hidden files and any escape.
    if (rel.find('%') != std::string::npos || rel.find("/.") != std::string::npos || rel.front() == '.') {
        co_await respond_error(rq, error_code::unknown_route);
        co_return;
    }
    const std::string path = *cfg_.web_root + "/" + rel;
    std::ifstream in(path, std::ios::binary);
    std::string body;
    if (in) {
        in.seekg(0, std::ios::end);
        const auto size = in.tellg();
        if (size >= 0 && static_cast<std::size_t>(size) <= max_web_file) {
            body.resize(static_cast<std::size_t>(size));
            in.seekg(0);
            in.read(body.data(), size);
            if (!in) {
                body.clear();
                in.setstate(std::ios::failbit);
            }
        } else {
            in.setstate(std::ios::failbit);
        }
    }
    if (!in) {
        co_await respond_error(rq, error_code::unknown_route);
        co_return;
    }
    const auto dot = rel.rfind('.');
    const std::string_view ext = dot == std::string::npos ? "" : std::string_view(rel).substr(dot);
    std::string_view type = "application/octet-stream";
    if (ext == ".html") {
        type = "text/html; charset=utf-8";
    } else if (ext == ".js" || ext == ".mjs" || ext == ".cjs") {
        type = "text/javascript; charset=utf-8";
    } else if (ext == ".css") {
        type = "text/css; charset=utf-8";
    } else if (ext == ".json" || ext == ".map") {
        type = "application/json";
    } else if (ext == ".wasm") {
        type = "application/wasm";
    } else if (ext == ".svg") {
        type = "image/svg+xml";
    } else if (ext == ".png") {
        type = "image/png";
    } else if (ext == ".ico") {
        type = "image/x-icon";
    } else if (ext == ".txt" || ext == ".md") {
        type = "text/plain; charset=utf-8";
    }
    const std::string_view extra = "Cache-Control: no-cache\r\nX-Content-Type-Options: nosniff\r\n"
                                   "Referrer-Policy: no-referrer\r\nX-Frame-Options: DENY\r\n";
    if (head_only) {
        std::string h = "Content-Length: " + std::to_string(body.size()) + "\r\n";
        co_await respond(rq, 200, type, "", std::string(extra) + h);
        co_return;
    }
    co_await respond(rq, 200, type, body, extra);
}

asio::awaitable<bool> session::write_all(std::span<const asio::const_buffer> bufs, std::uint64_t& counter) {
    deadline_.expires_after(std::chrono::seconds(cfg_.write_timeout_s));
    auto [ec, n] = co_await asio::async_write(sock_, bufs, as_tuple(use_awaitable));
    (void)deadline_.settle(ec);
    counter += n;
    co_return !ec;
}

asio::awaitable<bool> session::write_text(std::string_view text, request_ctx& rq) {
    const std::array<asio::const_buffer, 1> b{asio::buffer(text)};
    co_return co_await write_all(b, rq.bytes_out);
}

asio::awaitable<void> session::respond(request_ctx& rq, unsigned status, std::string_view content_type,
                                       std::string_view body, std::string_view extra_headers) {
    rq.status = status;
    std::string h;
    h.reserve(256 + extra_headers.size() + rq.cors.size());
    h.append("HTTP/1.1 ").append(std::to_string(status)).append(" ").append(reason_phrase(status));
    h.append("\r\nDate: ").append(http_date(unix_now())).append("\r\n");
    if (!content_type.empty()) {
        h.append("Content-Type: ").append(content_type).append("\r\n");
    }
    if (status != 204 && status != 304 && extra_headers.find("Content-Length:") == std::string_view::npos) {
        h.append("Content-Length: ").append(std::to_string(body.size())).append("\r\n");
    }
    h.append(extra_headers).append(rq.cors);
    if (!rq.keep_alive) {
        h.append("Connection: close\r\n");
    }
    h.append("\r\n");
    const std::array<asio::const_buffer, 2> bufs{asio::buffer(h), asio::buffer(body)};
    if (!co_await write_all(bufs, rq.bytes_out)) {
        rq.keep_alive = false;
    }
}

asio::awaitable<void> session::respond_error(request_ctx& rq, error_code e, std::string_view extra_headers) {
    rq.error = describe(e).code;
    co_await respond(rq, describe(e).status, "application/json", error_body(e), extra_headers);
}

std::string session::client_ip_for(const http::request<http::string_body>& req) const {
    return client_ip(req.base(), peer_ip_, cfg_.trusted_proxies);
}

bool session::origin_allowed(std::string_view origin) const {
    for (const auto& o : cfg_.allow_origins) {
        if (o == "*" || o == origin) {
            return true;
        }
    }
    return false;
}

std::string session::cors_for(const http::request<http::string_body>& req) const {
    const auto it = req.find(http::field::origin);
    if (it == req.end() || !origin_allowed(it->value()) || !field_value_ok(it->value())) {
        return "Vary: Origin\r\n";
    }
    std::string out = "Access-Control-Allow-Origin: ";
    out.append(it->value()).append("\r\nVary: Origin\r\n");
    // Date is exposed so a browser client can correct its clock after seal_expired.
    out.append("Access-Control-Expose-Headers: Date, X-Request-Id, Request-Id, Retry-After, Openai-Processing-Ms, "
               "Openai-Version, X-Ratelimit-Limit-Requests, X-Ratelimit-Remaining-Requests, "
               "X-Ratelimit-Reset-Requests, X-Ratelimit-Limit-Tokens, X-Ratelimit-Remaining-Tokens, "
               "X-Ratelimit-Reset-Tokens\r\n");
    return out;
}

}  // namespace

asio::awaitable<void> run_session(shared_state& s, worker& w, asio::ip::tcp::socket socket) {
    session sess(s, w, std::move(socket));
    co_await sess.run();
}

}  // namespace byok::relay
