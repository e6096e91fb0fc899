// One client connection: the coordinator of the request path. It reads a
// request head, applies admission (relay/admission.hpp), routes it, and
// either answers it locally (relay/local_routes.hpp) or, for a sealed
// request, reads its body, hands the key's whole life to
// relay/key_path.cpp, and relays the answer (relay/pump.hpp). Sockets and
// timers live here; every decision lives in the stage that owns it.
// docs/architecture.md draws the stages.

#include <array>
#include <chrono>
#include <ctime>
#include <string>

#include <boost/asio/as_tuple.hpp>
#include <boost/asio/use_awaitable.hpp>
#include <boost/asio/write.hpp>
#include <boost/beast/http/parser.hpp>
#include <boost/beast/http/read.hpp>
#include <boost/beast/http/string_body.hpp>

#include "crypto/encoding.hpp"
#include "relay/access_log.hpp"
#include "relay/admission.hpp"
#include "relay/deadline.hpp"
#include "relay/errors.hpp"
#include "relay/grants.hpp"
#include "relay/http_util.hpp"
#include "relay/key_path.hpp"
#include "relay/local_routes.hpp"
#include "relay/moderation.hpp"
#include "relay/pump.hpp"
#include "relay/response.hpp"
#include "relay/router.hpp"
#include "relay/server.hpp"

// GCC 12 reports -Wmismatched-new-delete on Asio's awaitable frames
// (awaitable_frame_base has its own operator new and delete, which do
// match) once enough of a coroutine is inlined; a known false positive of
// GCC's coroutine lowering. Kept narrow: this file only.
#if defined(__GNUC__) && !defined(__clang__)
#pragma GCC diagnostic ignored "-Wmismatched-new-delete"
#endif

namespace byok::relay {

namespace {

namespace http = beast::http;
using asio::as_tuple;
using asio::use_awaitable;
using clock_type = std::chrono::steady_clock;
using request_parser = http::request_parser<http::string_body>;

std::int64_t unix_now() { return static_cast<std::int64_t>(std::time(nullptr)); }

// The parse step of Beast's read (http::detail::read_some_op) on bytes
// already buffered. True when that settled the head: parsed whole, or
// refused (`ec`). False when more bytes are needed: Beast's read goes on
// from the parser's state.
bool parse_buffered_head(fold_watch_buffer& b, request_parser& p, boost::system::error_code& ec) {
    if (b.size() == 0) {
        return false;
    }
    b.consume(p.put(b.data(), ec));
    if (ec == http::error::need_more) {
        ec = {};
        return false;
    }
    return ec || p.is_header_done();
}

// What the access log and the metrics need to know about one request.
struct request_ctx {
    clock_type::time_point start = clock_type::now();
    std::string client_ip;
    std::string_view method;    // views the parsed head, which outlives the context's use
    std::string_view target;
    std::string_view provider_name;
    metric_route route = metric_route::unknown;
    std::size_t provider_index = metrics::no_provider;
    unsigned status = 0;
    unsigned upstream_status = 0;
    std::uint64_t bytes_in = 0;
    std::uint64_t bytes_out = 0;
    std::string_view error;
    cors_decision cors;
    bool keep_alive = true;
    unsigned version = 11;
};

class session {
public:
    session(shared_state& s, worker& w, client_conn&& conn)
        : s_(s), w_(w), cfg_(*s.cfg), sock_(std::move(conn.socket)), peer_key_(conn.peer), counted_(conn.counted),
          resumed_(conn.resumed), first_(!conn.resumed) {
        boost::system::error_code ec;
        if (resumed_) {
            // Back from the park (relay/idle_park.hpp): set up and counted when it was accepted.
            const asio::ip::address_v6 a(peer_key_);
            peer_ip_ = a.is_v4_mapped() ? asio::ip::make_address_v4(asio::ip::v4_mapped, a).to_string() : a.to_string();
        } else {
            const auto ep = sock_.remote_endpoint(ec);
            if (!ec) {
                // A dual-stack listener reports IPv4 clients as ::ffff:a.b.c.d; log and limit them as IPv4.
                const auto a = ep.address();
                peer_key_ = address_table::key_of(a);
                peer_ip_ = a.is_v6() && a.to_v6().is_v4_mapped()
                               ? asio::ip::make_address_v4(asio::ip::v4_mapped, a.to_v6()).to_string()
                               : a.to_string();
            }
            sock_.set_option(asio::ip::tcp::no_delay(true), ec);
            s_.sessions.fetch_add(1);
            s_.stats.open_connections.fetch_add(1);
        }
        // Room for the largest header plus a read's worth of body or pipelined bytes.
        buffer_.max_size(cfg_.max_header_bytes + 16 * 1024);
        slot_.socket = &sock_;
        w_.sessions.insert(&slot_);
    }
    ~session() {
        w_.sessions.erase(&slot_);
        if (!parked_) {
            connection_closed(s_, peer_key_, counted_);
        }
    }
    session(const session&) = delete;
    session& operator=(const session&) = delete;

    asio::awaitable<void> run();

private:
    asio::awaitable<bool> serve_one();
    enum class next_request { arrived, quiet, gone };
    asio::awaitable<next_request> wait_next_request();
    asio::awaitable<void> handle_sealed(request_parser& parser, const route& r, request_ctx& rq);
    asio::awaitable<void> handle_mint(request_parser& parser, request_ctx& rq);
    asio::awaitable<void> relay_answer(request_parser& parser, request_ctx& rq, body_budget::lease& lease,
                                       sent_request& sent);
    asio::awaitable<bool> admit(request_parser& parser, request_ctx& rq, std::size_t body_limit,
                                const crypto::keyring& keys,
                                body_budget::lease& lease);
    void count_refusal(const request_ctx& rq, error_code e);
    // The target as the client sent it to the relay's public URL, prefix
    // included (relay/router.hpp sealed_path): what a seal or a proof names.
    [[nodiscard]] std::string public_target(const request_ctx& rq) const { return sealed_path(cfg_, rq.target); }
    asio::awaitable<void> respond(request_ctx& rq, const local_response& r);
    asio::awaitable<void> respond_error(request_ctx& rq, error_code e, std::string extra_headers = {}) {
        co_await respond(rq, error_response(e, std::move(extra_headers)));
    }
    void log_request(const request_ctx& rq);
    // The rate limit's key: the peer, or the client a trusted proxy named.
    [[nodiscard]] address_table::key limit_key(const std::string& ip) const {
        if (ip == peer_ip_) {
            return peer_key_;
        }
        boost::system::error_code ec;
        const auto a = asio::ip::make_address(ip, ec);
        return ec ? peer_key_ : address_table::key_of(a);
    }

    shared_state& s_;
    worker& w_;
    const config& cfg_;
    asio::ip::tcp::socket sock_;
    socket_deadline deadline_{sock_};
    read_buffer buffer_;  // also holds pipelined bytes; capped in the constructor; wiped when freed
    std::string peer_ip_;
    address_table::key peer_key_{};
    session_slot slot_;
    bool counted_ = false;
    bool resumed_ = false;  // started by the park for a connection that served a request before
    bool parked_ = false;   // handed to the park: the connection outlives this session
    bool linger_ = false;   // drain the client's input before closing
    bool first_ = true;     // the connection's first request is awaited
};

asio::awaitable<void> session::run() {
    if (resumed_) {
        // Counted (or exempt) when it was accepted.
    } else if (cfg_.trusted_proxies.contains(peer_ip_)) {
        // A trusted proxy multiplexes many clients; it is not capped per address.
    } else if (!s_.limiter.connection_opened(peer_key_)) {
        request_ctx rq;
        rq.client_ip = peer_ip_;
        rq.keep_alive = false;
        co_await respond_error(rq, error_code::rate_limited, "Retry-After: 1\r\n");
        rq.error = "too_many_connections";
        log_request(rq);
        co_return;
    } else {
        counted_ = true;
    }
    while (co_await serve_one()) {
        if (buffer_.size() != 0) {
            continue;  // pipelined bytes: the next request is already here
        }
        if (s_.draining.load()) {
            break;  // a quiet close
        }
        const next_request next = co_await wait_next_request();
        if (next == next_request::arrived) {
            continue;
        }
        if (next == next_request::gone || s_.draining.load()) {
            break;
        }
        // A quiet keep-alive connection waits for its next request without
        // a session: no coroutine frame, buffer or timer. The park starts a
        // new session when the next request's bytes (or the client's close)
        // arrive, and closes it after idle_timeout_s.
        w_.park->park(client_conn{std::move(sock_), peer_key_, counted_, true});
        parked_ = true;  // (not if park() threw: then the socket is closed and this session counts it closed)
        co_return;
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

// The first moments of a keep-alive connection's silence are spent in the
// session: a client that sends its next request at once (an API client in a
// loop, a page's burst of calls) is served without a new session, which
// costs a co_spawn and its frames (docs/benchmarks.md). Only a connection
// that stays quiet for `park_after` is parked.
asio::awaitable<session::next_request> session::wait_next_request() {
    static constexpr auto park_after = std::chrono::milliseconds(20);
    slot_.idle = true;  // closed at once by a shutdown
    deadline_.expires_after(park_after, socket_deadline::on_expiry::cancel);
    // The bytes themselves, not a peek: the read that would follow a peek
    // is one more system call a request. A wait that times out has read
    // nothing, so a parked connection carries no buffered bytes.
    auto [ec, n] = co_await sock_.async_read_some(buffer_.prepare(4096), as_tuple(use_awaitable));
    ec = deadline_.settle(ec);
    slot_.idle = false;
    if (!ec && n > 0) {
        buffer_.commit(n);
        co_return next_request::arrived;
    }
    co_return ec == beast::error::timeout && sock_.is_open() ? next_request::quiet : next_request::gone;
}

// Reads and answers one request. False when the connection is done.
asio::awaitable<bool> session::serve_one() {
    if (s_.draining.load() && buffer_.size() == 0) {
        co_return false;
    }
    request_parser parser;
    // Destroyed before the parser: a key sent unsealed must not stay in its freed fields.
    struct head_wiper {
        request_parser& p;
        ~head_wiper() { wipe_request_head(p.get()); }
    } const head_wiper_guard{parser};
    parser.header_limit(static_cast<std::uint32_t>(cfg_.max_header_bytes));
    parser.body_limit(cfg_.largest_body_bytes);  // the route's own limit is set in admit()
    // The head's first byte is here (or this is the connection's first
    // request): all of it must follow within header_timeout_s.
    deadline_.expires_after(std::chrono::seconds(cfg_.header_timeout_s));
    slot_.idle = first_ && buffer_.size() == 0;
    // A whole request head (about 1 KiB with its seal) in one read, not 512 bytes at a time.
    buffer_.reserve(4096);
    fold_watch_buffer head_buffer(buffer_, cfg_.max_header_bytes);
    boost::system::error_code ec;
    std::size_t n = 0;
    // A head already read whole (the usual keep-alive case) is parsed here;
    // Beast's read would post its completion for one more scheduler round.
    if (!parse_buffered_head(head_buffer, parser, ec)) {
        std::tie(ec, n) = co_await http::async_read_header(sock_, head_buffer, parser, as_tuple(use_awaitable));
    }
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
        rq.keep_alive = false;
        if (ec == beast::error::timeout) {
            // Silence between requests is an idle close, not an error; a
            // request that started and stalled gets an answer.
            if (n > 0 || buffer_.size() > 0) {
                co_await respond_error(rq, error_code::request_timeout);
                log_request(rq);
            }
            co_return false;
        }
        linger_ = true;
        const error_code e = ec == http::error::header_limit || ec == http::error::buffer_overflow
                                 ? error_code::headers_too_large
                             : ec == http::error::body_limit ? error_code::body_too_large
                                                             : error_code::bad_request;
        co_await respond_error(rq, e);
        rq.route = metric_route::invalid;
        log_request(rq);
        co_return false;
    }

    auto& req = parser.get();
    rq.method = req.method_string();
    rq.target = req.target();
    rq.version = req.version();
    rq.client_ip = client_ip(req.base(), peer_ip_, cfg_.trusted_proxies);
    rq.cors = decide_cors(cfg_, req.base());
    rq.keep_alive = req.keep_alive() && !s_.draining.load();
    const bool has_body = parser.chunked() || parser.content_length().value_or(0) > 0;

    if (!framing_ok(req.base(), req.version()) || head_buffer.folded()) {
        rq.keep_alive = false;  // the next request's boundary is unknowable
        co_await respond_error(rq, error_code::bad_request);
    } else if (const unsigned wait = s_.limiter.request(limit_key(rq.client_ip)); wait > 0) {
        rq.keep_alive = rq.keep_alive && !has_body;
        co_await respond_error(rq, error_code::rate_limited, "Retry-After: " + std::to_string(wait) + "\r\n");
    } else {
        const route r = classify(cfg_, rq.target);
        const auto verb = req.method();
        if (r.kind == route_kind::sealed) {
            rq.route = crypto::is_grant_authorization(req[http::field::authorization]) ? metric_route::grant
                                                                                       : metric_route::sealed;
            rq.provider_name = r.prov->name;
            rq.provider_index = s_.provider_index(r.prov);
        } else if (r.kind == route_kind::grants) {
            rq.route = metric_route::grant_mint;
        } else if (r.kind == route_kind::keys) {
            rq.route = metric_route::keys;
        } else if (r.kind == route_kind::healthz) {
            rq.route = metric_route::healthz;
        } else if (r.kind == route_kind::web || r.kind == route_kind::root ||
                   r.kind == route_kind::grant_page) {
            rq.route = metric_route::web;
        }
        if (r.kind == route_kind::sealed && verb != http::verb::options) {
            co_await handle_sealed(parser, r, rq);
        } else if (r.kind == route_kind::grants && verb == http::verb::post) {
            co_await handle_mint(parser, rq);
        } else {
            if (verb == http::verb::options) {
                rq.route = metric_route::preflight;
            }
            // Answered without reading a body: a connection whose body was not read cannot be reused.
            if (has_body) {
                rq.keep_alive = false;
            }
            const auto keys = s_.keys.load();
            const auto files = s_.web.load();
            const auto list = s_.key_list.load();
            local_request lr{verb, &r, &req.base(), rq.cors, s_.draining.load()};
            lr.signed_key_list = list ? &list->text() : nullptr;
            co_await respond(rq, answer_locally(lr, *keys, files.get(), unix_now()));
        }
    }

    if (rq.status != 0) {
        log_request(rq);
    }
    // Closing after an answer to a request whose bytes may not all have been
    // read: linger (see run()). Not after a timeout (a slow client gets no
    // more time) or when the client already left.
    if (!rq.keep_alive && rq.status != 0 && rq.status != 408 && rq.status != 499) {
        linger_ = true;
    }
    co_return rq.keep_alive && sock_.is_open();
}

asio::awaitable<void> session::handle_sealed(request_parser& parser, const route& r, request_ctx& rq) {
    auto& req = parser.get();
    const auto verb = req.method();
    const bool body_unread = !parser.is_done();
    if (verb != http::verb::post && verb != http::verb::get && verb != http::verb::delete_) {
        rq.keep_alive = rq.keep_alive && !body_unread;
        co_await respond_error(rq, error_code::method_not_allowed, "Allow: GET, POST, DELETE\r\n");
        co_return;
    }

    // One keyring for the whole request (a reload swaps in a new one).
    const auto keys = s_.keys.load();
    body_budget::lease lease = s_.bodies.open();
    if (!co_await admit(parser, rq, r.body_limit, *keys, lease)) {
        co_return;
    }

    const auto digest = crypto::sha256(req.body());
    const std::string sealed_path = public_target(rq);
    const std::string target = upstream_target(*r.prov, r.rest);
    const std::size_t pidx = rq.provider_index;
    upstream_pool& pool = *w_.pools[pidx];
    key_path_env env{s_.checker, s_.grants, *keys, s_.stats.in_flight, cfg_.max_in_flight, pool, *r.prov, cfg_,
                     w_.replay.get(), &s_.stats};
    if (r.prov->moderation && r.prov->moderation->via != r.prov->name) {
        env.moderation_prov = cfg_.find_provider(r.prov->moderation->via);  // checked at start: it exists
        env.moderation_pool = w_.pools[s_.provider_index(env.moderation_prov)].get();
    }
    const sealed_request sr{req.method_string(), sealed_path, target, r.rest_path, &req.base(), req.body(), &digest};
    sent_request sent = co_await open_and_send(env, sr, unix_now());
    if (sent.moderation_s >= 0) {
        s_.stats.moderation_check(pidx, sent.moderation_s);
    }
    if (sent.grant && sent.key_opened) {
        s_.stats.grant_accepted();
    }
    if (!sent.ok) {
        if (sent.seal_refused || (sent.grant && !sent.key_opened)) {
            count_refusal(rq, sent.error);
        }
        if (sent.error == error_code::content_flagged) {
            local_response flagged = error_response(sent.error);
            flagged.body = flagged_error_body(sent.flagged_categories);  // the category names, nothing else
            co_await respond(rq, flagged);
            co_return;
        }
        co_await respond_error(rq, sent.error);
        co_return;
    }
    co_await relay_answer(parser, rq, lease, sent);
}

void session::count_refusal(const request_ctx& rq, error_code e) {
    if (rq.route == metric_route::grant) {
        s_.stats.grant_rejected(e);
    } else if (e != error_code::overloaded) {
        s_.stats.seal_rejected(e);
    }
}

// Draining: overloaded. The header's checks (a seal's, or a grant's and its proof's), before a
// byte of body is read or held: a request that cannot be accepted costs no
// body budget and no X25519 or ECDSA. Then the body: the seal or the proof
// binds its hash, so all of it is needed before anything goes upstream. It
// holds a share of the global budget while it arrives and until it has been
// forwarded. False: answered (or the client left).
asio::awaitable<bool> session::admit(request_parser& parser, request_ctx& rq, std::size_t body_limit,
                                     const crypto::keyring& keys,
                                     body_budget::lease& lease) {
    auto& req = parser.get();
    if (s_.draining.load()) {
        rq.keep_alive = false;
        co_await respond_error(rq, error_code::overloaded);
        co_return false;
    }
    const bool body_unread = !parser.is_done();
    const std::string_view authorization = req[http::field::authorization];
    std::optional<error_code> refused;
    if (rq.route == metric_route::grant) {
        const auto [proof, proofs] = proof_header(req.base());
        const crypto::grant_request_facts facts{authorization, proof, proofs, {}, {}, nullptr};
        if (const auto e = s_.grants.precheck(keys, facts, unix_now())) {
            refused = from_grant_error(*e);
        }
    } else if (const auto e = s_.checker.precheck(keys, authorization, unix_now())) {
        refused = from_seal_error(*e);
    }
    if (refused) {
        count_refusal(rq, *refused);
        rq.keep_alive = rq.keep_alive && !body_unread;
        co_await respond_error(rq, *refused);
        co_return false;
    }
    // The route's body limit (an upload path may take more than max_body_bytes).
    if (parser.content_length().value_or(0) > body_limit) {
        rq.keep_alive = false;
        co_await respond_error(rq, error_code::body_too_large);
        co_return false;
    }
    parser.body_limit(body_limit);

    if (body_unread) {
        if (!reserve_announced_body(lease, parser)) {
            rq.keep_alive = false;
            co_await respond_error(rq, error_code::overloaded);
            co_return false;
        }
        if (iequals(req[http::field::expect], "100-continue")) {
            const std::array<asio::const_buffer, 1> cont{asio::buffer(std::string_view("HTTP/1.1 100 Continue\r\n\r\n"))};
            deadline_.expires_after(std::chrono::seconds(cfg_.write_timeout_s));
            auto [wec, wn] = co_await asio::async_write(sock_, cont, as_tuple(use_awaitable));
            (void)deadline_.settle(wec);
            rq.bytes_out += wn;
        }
        const body_pace pace{cfg_.min_body_bytes_per_s, std::chrono::seconds(cfg_.body_rate_window_s),
                             std::chrono::seconds(cfg_.body_timeout_s)};
        const body_outcome got = co_await read_request_body(sock_, deadline_, buffer_, parser, lease, pace);
        if (got != body_outcome::complete) {
            rq.keep_alive = false;
            switch (got) {
            case body_outcome::too_large: co_await respond_error(rq, error_code::body_too_large); break;
            case body_outcome::over_budget:
                co_await respond_error(rq, error_code::overloaded);
                break;
            case body_outcome::too_slow: co_await respond_error(rq, error_code::request_timeout); break;
            case body_outcome::has_trailers:
            case body_outcome::malformed: co_await respond_error(rq, error_code::bad_request); break;
            case body_outcome::client_gone:
            case body_outcome::complete:
                rq.status = 499;  // the client went away (nginx's convention, for the log)
                rq.error = "client_closed";
                break;
            }
            co_return false;
        }
    }
    rq.bytes_in = req.body().size();
    co_return true;
}

// POST /v1/grants: a sealed request whose answer is a grant, not a provider's.
asio::awaitable<void> session::handle_mint(request_parser& parser, request_ctx& rq) {
    auto& req = parser.get();
    const auto keys = s_.keys.load();
    body_budget::lease lease = s_.bodies.open();
    if (!co_await admit(parser, rq, cfg_.max_body_bytes, *keys, lease)) {
        co_return;
    }
    const auto digest = crypto::sha256(req.body());
    const std::string sealed_path = public_target(rq);
    const sealed_request sr{req.method_string(), sealed_path, {}, {}, &req.base(), req.body(), &digest};
    const std::int64_t now = unix_now();
    minted_grant minted = mint_grant(s_.checker, *keys, cfg_, sr, now);
    if (minted.ok) {
        // The mint's seal is claimed once across replicas like any other.
        if (const auto refused =
                co_await claim_once(w_.replay.get(), &s_.stats, minted.accepted.id, minted.accepted.forget_at, now)) {
            minted.ok = false;
            minted.body.clear();  // the grant never leaves
            minted.error = *refused;
            minted.seal_refused = *refused == error_code::seal_replayed;
        }
    }
    if (!minted.ok) {
        if (minted.seal_refused) {
            s_.stats.seal_rejected(minted.error);
        }
        co_await respond_error(rq, minted.error);
        co_return;
    }
    s_.stats.grant_minted();
    local_response answer;
    answer.status = 201;
    answer.content_type = "application/json";
    answer.body = minted.body;
    answer.extra_headers = "Cache-Control: no-store\r\n";
    co_await respond(rq, answer);
}

asio::awaitable<void> session::relay_answer(request_parser& parser, request_ctx& rq, body_budget::lease& lease,
                                            sent_request& sent) {
    auto& req = parser.get();
    const std::size_t pidx = rq.provider_index;
    upstream_pool& pool = *w_.pools[pidx];

    // The request is upstream: its body is no longer needed, nor the room it held.
    req.body().clear();
    req.body().shrink_to_fit();
    lease.release();
    if (buffer_.size() == 0) {
        buffer_.shrink_to_fit();  // a stream may be long: hold no client read buffer meanwhile
    }

    // On the heap, not in this frame: only a relayed answer needs it (its
    // two 4 KiB pieces it allocates itself, only while bytes pass).
    const auto pump = std::make_unique<answer_pump>(sock_, deadline_, *sent.conn, cfg_, rq.cors, rq.keep_alive,
                                                    rq.version);
    const pump_result res = co_await pump->run();
    rq.bytes_out += res.bytes_out;
    rq.upstream_status = res.status;
    if (res.head_written) {
        rq.status = res.status;
        s_.stats.upstream_ttfb(pidx, res.ttfb_s);
        s_.stats.upstream_total(pidx, res.total_s);
        if (!res.complete && !res.client_gone) {
            rq.keep_alive = false;
            rq.error = describe(error_code::upstream_bad_response).code;
        }
    } else if (!res.client_gone) {
        co_await respond_error(rq, res.failure);
    }
    if (res.client_gone) {
        rq.keep_alive = false;
        if (rq.status == 0) {
            rq.status = 499;
        }
        rq.error = "client_closed";
    }
    if (res.head_written && !res.complete) {
        rq.keep_alive = false;  // the client saw a cut answer; the pump closed the socket
    }
    if (res.reusable) {
        pool.remember_session(*sent.conn);
        pool.give_back(std::move(sent.conn));
    } else {
        sent.conn->close();
    }
}

asio::awaitable<void> session::respond(request_ctx& rq, const local_response& r) {
    rq.status = r.status;
    if (!r.error.empty()) {
        rq.error = r.error;
    }
    if (r.close) {
        rq.keep_alive = false;
    }
    const std::string head = render_head(r, rq.cors, rq.keep_alive, unix_now());
    const std::array<asio::const_buffer, 2> bufs{asio::buffer(head),
                                                 asio::buffer(r.head_only ? std::string_view() : r.body_view())};
    deadline_.expires_after(std::chrono::seconds(cfg_.write_timeout_s));
    auto [ec, n] = co_await asio::async_write(sock_, bufs, as_tuple(use_awaitable));
    (void)deadline_.settle(ec);
    rq.bytes_out += n;
    if (ec) {
        rq.keep_alive = false;
    }
}

void session::log_request(const request_ctx& rq) {
    const double ms = std::chrono::duration<double, std::milli>(clock_type::now() - rq.start).count();
    write_access_log({rq.client_ip, rq.method.empty() ? std::string_view("-") : rq.method, rq.provider_name,
                      rq.target.empty() ? std::string_view("-") : rq.target, rq.status, rq.upstream_status, ms,
                      rq.bytes_in, rq.bytes_out, rq.error});
    if (rq.status != 0) {
        s_.stats.request_done(rq.provider_index, rq.route, rq.status);
    }
}

}  // namespace

asio::awaitable<void> run_session(shared_state& s, worker& w, client_conn conn) {
    session sess(s, w, std::move(conn));
    co_await sess.run();
}

}  // namespace byok::relay
