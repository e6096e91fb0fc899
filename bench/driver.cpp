#include "bench/driver.hpp"

#include <array>
#include <chrono>
#include <memory>
#include <optional>
#include <stdexcept>
#include <thread>
#include <tuple>
#include <vector>

#include <boost/asio/as_tuple.hpp>
#include <boost/asio/co_spawn.hpp>
#include <boost/asio/detached.hpp>
#include <boost/asio/io_context.hpp>
#include <boost/asio/ip/address.hpp>
#include <boost/asio/ssl/context.hpp>
#include <boost/asio/ssl/error.hpp>
#include <boost/asio/ssl/host_name_verification.hpp>
#include <boost/asio/ssl/stream.hpp>
#include <boost/asio/steady_timer.hpp>
#include <boost/asio/use_awaitable.hpp>
#include <boost/asio/write.hpp>
#include <boost/beast/core/flat_buffer.hpp>
#include <boost/beast/core/tcp_stream.hpp>
#include <boost/beast/http/buffer_body.hpp>
#include <boost/beast/http/parser.hpp>
#include <boost/beast/http/read.hpp>
#include <openssl/ssl.h>

#include "bench/sse_events.hpp"
// GCC 12 reports false maybe-uninitialized warnings inside nlohmann::json at -O2.
#pragma GCC diagnostic ignored "-Wmaybe-uninitialized"
#include <nlohmann/json.hpp>

namespace byok::bench {
namespace {

namespace asio = boost::asio;
namespace beast = boost::beast;
namespace http = beast::http;
namespace ssl = asio::ssl;
using asio::as_tuple;
using asio::use_awaitable;
using clock_type = std::chrono::steady_clock;
using tls_stream = ssl::stream<beast::tcp_stream>;

constexpr std::size_t read_chunk = 16 * 1024;
constexpr std::size_t error_body_cap = 4096;

std::uint64_t ns_between(clock_type::time_point a, clock_type::time_point b) {
    return b <= a ? 0 : static_cast<std::uint64_t>(std::chrono::duration_cast<std::chrono::nanoseconds>(b - a).count());
}

std::string transport_name(const boost::system::error_code& ec, std::string_view step) {
    if (ec == beast::error::timeout) {
        return std::string(step) + "_timeout";
    }
    if (ec == asio::error::connection_refused) {
        return "connect_refused";
    }
    if (ec == asio::error::connection_reset) {
        return std::string(step) + "_reset";
    }
    if (ec == http::error::end_of_stream || ec == asio::error::eof || ec == ssl::error::stream_truncated) {
        return std::string(step) + "_closed";
    }
    if (ec == http::error::partial_message) {
        return std::string(step) + "_truncated";
    }
    if (ec.category() == asio::error::get_ssl_category()) {
        return std::string(step) + "_tls";
    }
    if (ec.category() == http::make_error_code(http::error::bad_version).category()) {
        return std::string(step) + "_bad_http";
    }
    return std::string(step) + "_error";
}

// The error.code of a relay (or OpenAI-shaped) JSON error body.
std::string error_code_of(const std::string& body) {
    auto j = nlohmann::json::parse(body, nullptr, false);
    if (j.is_discarded() || !j.is_object()) {
        return "non_json_body";
    }
    const auto e = j.find("error");
    if (e == j.end() || !e->is_object()) {
        return "no_error_object";
    }
    const auto c = e->find("code");
    if (c != e->end() && c->is_string()) {
        return c->get<std::string>();
    }
    const auto t = e->find("type");
    if (t != e->end() && t->is_string()) {
        return "type:" + t->get<std::string>();
    }
    return "no_error_code";
}

struct connection {
    std::optional<beast::tcp_stream> plain;
    std::optional<tls_stream> tls;
    beast::flat_buffer buffer;
    std::string scratch;
    std::array<char, read_chunk> chunk{};  // body bytes land here and are counted, then dropped
    std::vector<std::uint64_t> gaps;       // ns between the events of the current answer
    bool in_flight = false;
    bool head_seen = false;
    bool idle = false;                     // --idle-after: done sending, held open to the end

    beast::tcp_stream& tcp() { return tls ? beast::get_lowest_layer(*tls) : *plain; }
    void close() {
        if (tls || plain) {
            boost::system::error_code ignored;
            tcp().socket().close(ignored);
        }
    }
    void reset() {
        close();
        plain.reset();
        tls.reset();
        buffer.clear();
    }
};

// What one exchange produced.
struct outcome {
    std::string transport;  // non-empty: the exchange failed below HTTP
    unsigned status = 0;
    bool keep_alive = false;
    std::uint64_t bytes_in = 0;
    std::uint64_t events = 0;
    std::optional<clock_type::time_point> first_event;
    std::optional<clock_type::time_point> last_event;
    std::string error_body;
};

class worker {
public:
    worker(const target& t, const run_options& o, request_pool& pool, ssl::context* tls_ctx,
           asio::ip::tcp::endpoint ep, unsigned index, unsigned threads, unsigned connections,
           clock_type::time_point t0, live_stats* live)
        : t_(t), o_(o), pool_(pool), tls_ctx_(tls_ctx), ep_(ep), connections_(connections), index_(index),
          live_(live),
          t0_(t0), warm_end_(t0 + to_duration(o.warmup_s)), end_(warm_end_ + to_duration(o.duration_s)),
          stop_timer_(ioc_) {
        if (o.rate > 0) {
            interval_ns_ = 1e9 * static_cast<double>(threads) / o.rate;
            offset_ns_ = 1e9 * static_cast<double>(index) / o.rate;  // threads interleave their slots
        }
    }

    void run() {
        for (unsigned i = 0; i < connections_; ++i) {
            conns_.push_back(std::make_unique<connection>());
            asio::co_spawn(ioc_, connection_loop(*conns_.back(), i), asio::detached);
        }
        stop_timer_.expires_at(end_);
        stop_timer_.async_wait([this](const boost::system::error_code&) {
            stopping_ = true;
            for (auto& c : conns_) {
                if (c->idle) {
                    ++result_.idle_at_end;
                }
                if (c->in_flight) {
                    ++result_.unfinished;
                    if (c->head_seen) {
                        ++result_.streaming_at_end;
                    }
                }
                c->close();
            }
        });
        ioc_.run();
    }

    run_result& result() { return result_; }

private:
    static clock_type::duration to_duration(double s) {
        return std::chrono::duration_cast<clock_type::duration>(std::chrono::duration<double>(s));
    }

    asio::awaitable<bool> connect(connection& c) {
        c.reset();
        if (tls_ctx_ != nullptr) {
            c.tls.emplace(beast::tcp_stream(ioc_), *tls_ctx_);
        } else {
            c.plain.emplace(ioc_);
        }
        auto& tcp = c.tcp();
        tcp.expires_after(to_duration(o_.timeout_s));
        ++result_.connects;
        const auto [cec] = co_await tcp.async_connect(ep_, as_tuple(use_awaitable));
        if (cec) {
            if (!stopping_) {
                note_transport(cec == beast::error::timeout ? "connect_timeout" : transport_name(cec, "connect"));
            }
            co_return false;
        }
        boost::system::error_code ignored;
        tcp.socket().set_option(asio::ip::tcp::no_delay(true), ignored);
        if (c.tls) {
            boost::system::error_code aec;
            (void)asio::ip::make_address(t_.host, aec);
            if (aec) {  // SNI for names only (RFC 6066)
                SSL_set_tlsext_host_name(c.tls->native_handle(), t_.host.c_str());
            }
            c.tls->set_verify_callback(ssl::host_name_verification(t_.host));
            const auto [hec] = co_await c.tls->async_handshake(ssl::stream_base::client, as_tuple(use_awaitable));
            if (hec) {
                if (!stopping_) {
                    note_transport(transport_name(hec, "handshake"));
                }
                co_return false;
            }
        }
        co_return true;
    }

    template <class Stream>
    asio::awaitable<outcome> exchange(Stream& s, connection& c, std::string_view wire) {
        outcome out;
        auto& tcp = c.tcp();
        const auto timeout = to_duration(o_.timeout_s);
        tcp.expires_after(timeout);
        const auto wres = co_await asio::async_write(s, asio::buffer(wire.data(), wire.size()),
                                                     as_tuple(use_awaitable));
        if (std::get<0>(wres)) {
            out.transport = transport_name(std::get<0>(wres), "write");
            co_return out;
        }
        http::response_parser<http::buffer_body> p;
        p.header_limit(64 * 1024);
        p.body_limit(boost::none);
        tcp.expires_after(timeout);
        const auto hres = co_await http::async_read_header(s, c.buffer, p, as_tuple(use_awaitable));
        if (std::get<0>(hres)) {
            out.transport = transport_name(std::get<0>(hres), "read");
            co_return out;
        }
        out.bytes_in += std::get<1>(hres);
        c.head_seen = true;
        out.status = p.get().result_int();
        const bool collect = out.status < 200 || out.status >= 300;
        // Read the body as it arrives: each http::async_read_some is at most
        // one socket read (after the bytes already buffered), so an event is
        // timed when the read that completed it returned, not when a buffer
        // filled or the answer ended.
        sse_events sse;
        auto& chunk = c.chunk;
        while (!p.is_done()) {
            p.get().body().data = chunk.data();
            p.get().body().size = chunk.size();
            tcp.expires_after(timeout);
            const auto rres = co_await http::async_read_some(s, c.buffer, p, as_tuple(use_awaitable));
            auto rec = std::get<0>(rres);
            if (rec == http::error::need_buffer) {
                rec = {};
            }
            out.bytes_in += std::get<1>(rres);
            const std::size_t got = chunk.size() - p.get().body().size;
            if (collect) {
                out.error_body.append(chunk.data(), std::min(got, error_body_cap - std::min(error_body_cap, out.error_body.size())));
            } else if (o_.stream && got > 0) {
                if (const std::size_t n = sse.feed(chunk.data(), got); n > 0) {
                    const auto now = clock_type::now();
                    if (out.last_event) {
                        c.gaps.push_back(ns_between(*out.last_event, now));
                    } else {
                        out.first_event = now;
                    }
                    c.gaps.insert(c.gaps.end(), n - 1, 0);  // events that came in the same read
                    out.last_event = now;
                    out.events += n;
                }
            }
            if (rec) {
                out.transport = transport_name(rec, "body");
                co_return out;
            }
        }
        out.keep_alive = p.keep_alive();
        co_return out;
    }

    asio::awaitable<void> connection_loop(connection& c, unsigned i) {
        bool connected = false;
        std::uint64_t sent_here = 0;  // answers on this connection (--idle-after)
        asio::steady_timer wait(ioc_);
        std::uint64_t slot = 0;
        if (o_.ramp_s > 0 && connections_ > 1) {
            // Spread this thread's connections over the ramp (thousands of TLS
            // handshakes at once would only measure the accept queue).
            wait.expires_at(t0_ + to_duration(o_.ramp_s * i / connections_));
            (void)co_await wait.async_wait(as_tuple(use_awaitable));
        }
        for (;;) {
            if (stopping_) {
                break;
            }
            clock_type::time_point start;
            if (interval_ns_ > 0) {
                slot = next_slot_++;
                const auto intended =
                    t0_ + std::chrono::nanoseconds(static_cast<std::int64_t>(offset_ns_ + interval_ns_ *
                                                                                             static_cast<double>(slot)));
                if (intended >= end_) {
                    break;
                }
                if (clock_type::now() < intended) {
                    wait.expires_at(intended);
                    (void)co_await wait.async_wait(as_tuple(use_awaitable));
                    if (stopping_) {
                        break;
                    }
                }
                start = intended;
            }
            if (!connected) {
                connected = co_await connect(c);
                if (!connected) {
                    if (stopping_) {
                        break;
                    }
                    note_error();
                    wait.expires_after(std::chrono::milliseconds(50));  // no hot loop against a dead port
                    (void)co_await wait.async_wait(as_tuple(use_awaitable));
                    continue;
                }
            }
            const std::string_view wire = pool_.take(c.scratch);
            const auto sent = clock_type::now();
            if (interval_ns_ > 0) {
                if (sent - start > std::chrono::milliseconds(1)) {
                    ++result_.late_sends;
                }
            } else {
                start = sent;
            }
            c.in_flight = true;
            c.head_seen = false;
            c.gaps.clear();
            // Not a conditional expression: GCC 12 destroys a co_await temporary
            // in one twice (a known coroutine miscompile).
            outcome out;
            if (c.tls) {
                out = co_await exchange(*c.tls, c, wire);
            } else {
                out = co_await exchange(*c.plain, c, wire);
            }
            c.in_flight = false;
            const auto done = clock_type::now();
            if (stopping_) {
                break;  // counted as unfinished by the stop handler
            }
            result_.bytes_sent += wire.size();
            result_.bytes_received += out.bytes_in;
            if (!out.transport.empty()) {
                note_transport(out.transport);
                note_error();
                connected = false;
                c.reset();
                continue;
            }
            ++result_.completed_total;
            ++sent_here;
            if (live_ != nullptr) {
                live_->answer(index_, ns_between(start, done));
            }
            const bool good = out.status >= 200 && out.status < 300 && (!o_.stream || out.events > 0);
            if (!good) {
                note_error();
                if (out.status >= 200 && out.status < 300) {
                    ++result_.by_code["stream_without_events"];
                } else {
                    ++result_.by_code[error_code_of(out.error_body)];
                }
            }
            ++result_.by_status[std::to_string(out.status)];
            if (start >= warm_end_ && done <= end_) {
                ++result_.requests;
                if (good) {
                    ++result_.ok;
                }
                result_.latency.record(ns_between(start, done));
                if (out.first_event) {
                    result_.first_event.record(ns_between(start, *out.first_event));
                    result_.last_event.record(ns_between(start, *out.last_event));
                }
                for (const auto g : c.gaps) {
                    result_.event_gap.record(g);
                }
                result_.events += out.events;
            }
            if (!out.keep_alive) {
                connected = false;
                c.reset();
            }
            if (o_.idle_after > 0 && sent_here >= o_.idle_after && connected) {
                co_await hold_idle(c);
                break;
            }
        }
        c.close();
    }

    // --idle-after: keeps the connection open, sending nothing, until the run
    // ends; a read stays pending so that a server closing it is seen.
    asio::awaitable<void> hold_idle(connection& c) {
        c.idle = true;
        c.tcp().expires_never();
        std::array<char, 1> byte{};
        // Not a conditional expression (see connection_loop).
        boost::system::error_code ec;
        if (c.tls) {
            std::tie(ec, std::ignore) = co_await c.tls->async_read_some(asio::buffer(byte), as_tuple(use_awaitable));
        } else {
            std::tie(ec, std::ignore) = co_await c.plain->async_read_some(asio::buffer(byte), as_tuple(use_awaitable));
        }
        if (!stopping_) {
            c.idle = false;  // closed by the server (or it sent something): no longer an idle connection
            ++result_.idle_closed;
        }
    }

    void note_transport(const std::string& what) { ++result_.by_transport[what]; }
    void note_error() {
        ++result_.errors;
        if (live_ != nullptr) {
            live_->error(index_);
        }
    }

    const target& t_;
    const run_options& o_;
    request_pool& pool_;
    ssl::context* tls_ctx_;
    asio::ip::tcp::endpoint ep_;
    unsigned connections_;
    unsigned index_;
    live_stats* live_;
    clock_type::time_point t0_;
    clock_type::time_point warm_end_;
    clock_type::time_point end_;
    double interval_ns_ = 0;
    double offset_ns_ = 0;
    std::uint64_t next_slot_ = 0;
    bool stopping_ = false;
    asio::io_context ioc_{1};
    asio::steady_timer stop_timer_;
    std::vector<std::unique_ptr<connection>> conns_;
    run_result result_;
};

}  // namespace

void run_result::merge(const run_result& o) {
    latency.merge(o.latency);
    first_event.merge(o.first_event);
    last_event.merge(o.last_event);
    event_gap.merge(o.event_gap);
    requests += o.requests;
    ok += o.ok;
    completed_total += o.completed_total;
    errors += o.errors;
    for (const auto& [k, v] : o.by_status) {
        by_status[k] += v;
    }
    for (const auto& [k, v] : o.by_code) {
        by_code[k] += v;
    }
    for (const auto& [k, v] : o.by_transport) {
        by_transport[k] += v;
    }
    bytes_sent += o.bytes_sent;
    bytes_received += o.bytes_received;
    events += o.events;
    connects += o.connects;
    late_sends += o.late_sends;
    unfinished += o.unfinished;
    streaming_at_end += o.streaming_at_end;
    idle_at_end += o.idle_at_end;
    idle_closed += o.idle_closed;
}

unsigned run_threads(const run_options& o) {
    return std::max(1u, std::min(o.threads, std::max(1u, o.connections)));
}

run_result run_load(const target& t, const run_options& o, request_pool& pool, live_stats* live) {
    std::unique_ptr<ssl::context> tls_ctx;
    if (t.tls) {
        tls_ctx = std::make_unique<ssl::context>(ssl::context::tls_client);
        tls_ctx->set_verify_mode(ssl::verify_peer);
        boost::system::error_code ec;
        if (t.ca_file.empty()) {
            tls_ctx->set_default_verify_paths(ec);
        } else {
            tls_ctx->load_verify_file(t.ca_file, ec);
        }
        if (ec) {
            throw std::runtime_error("cannot load the CA file " + t.ca_file + ": " + ec.message());
        }
    }
    const auto addr = asio::ip::make_address(t.address);
    const asio::ip::tcp::endpoint ep(addr, t.port);

    const unsigned threads = run_threads(o);
    if (live != nullptr && live->slots() < threads) {
        throw std::logic_error("live_stats has fewer slots than threads");
    }
    const auto t0 = clock_type::now();
    std::vector<std::unique_ptr<worker>> workers;
    for (unsigned k = 0; k < threads; ++k) {
        const unsigned n = o.connections / threads + (k < o.connections % threads ? 1 : 0);
        workers.push_back(std::make_unique<worker>(t, o, pool, tls_ctx.get(), ep, k, threads, n, t0, live));
    }
    std::vector<std::thread> running;
    for (auto& w : workers) {
        running.emplace_back([&w] { w->run(); });
    }
    for (auto& th : running) {
        th.join();
    }
    run_result total;
    for (auto& w : workers) {
        total.merge(w->result());
    }
    total.measured_s = o.duration_s;
    return total;
}

}  // namespace byok::bench
