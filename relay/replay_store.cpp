#include "relay/replay_store.hpp"

#include <array>
#include <cstdlib>

#include <boost/asio/as_tuple.hpp>
#include <boost/asio/co_spawn.hpp>
#include <boost/asio/connect.hpp>
#include <boost/asio/detached.hpp>
#include <boost/asio/ssl/host_name_verification.hpp>
#include <boost/asio/this_coro.hpp>
#include <boost/asio/use_awaitable.hpp>
#include <boost/asio/write.hpp>
#include <hiredis/hiredis.h>
#include <openssl/ssl.h>

#include "relay/access_log.hpp"
#include "relay/deadline.hpp"

// GCC 12's false -Wmismatched-new-delete on Asio's awaitable frames (see relay/session.cpp).
#if defined(__GNUC__) && !defined(__clang__)
#pragma GCC diagnostic ignored "-Wmismatched-new-delete"
#endif

namespace byok::relay {

namespace asio = boost::asio;
using asio::as_tuple;
using asio::use_awaitable;
using tcp = asio::ip::tcp;

namespace {

// Connecting, the TLS handshake, AUTH and SELECT together.
constexpr auto connect_timeout = std::chrono::seconds(2);
constexpr auto backoff_first = std::chrono::milliseconds(50);
constexpr auto backoff_max = std::chrono::seconds(2);
// Claims waiting for a reply on one connection; past this, a claim fails at
// once rather than queue behind a Redis that stopped answering.
constexpr std::size_t max_pending = 4096;

// One command in RESP, formatted by hiredis.
std::string format_command(std::initializer_list<std::string_view> args) {
    std::array<const char*, 8> argv{};
    std::array<std::size_t, 8> lens{};
    int argc = 0;
    for (const auto a : args) {
        argv[static_cast<std::size_t>(argc)] = a.data();
        lens[static_cast<std::size_t>(argc)] = a.size();
        ++argc;
    }
    char* cmd = nullptr;
    const int n = redisFormatCommandArgv(&cmd, argc, argv.data(), lens.data());
    if (n < 0 || cmd == nullptr) {
        throw std::bad_alloc();
    }
    std::string out(cmd, static_cast<std::size_t>(n));
    std::free(cmd);
    return out;
}

struct reply_deleter {
    void operator()(redisReply* r) const noexcept { freeReplyObject(r); }
};
using reply_ptr = std::unique_ptr<redisReply, reply_deleter>;

bool is_ok(const redisReply& r) noexcept {
    return r.type == REDIS_REPLY_STATUS && std::string_view(r.str, r.len) == "OK";
}

}  // namespace

// A claim waiting for its reply. Shared between the claim (which may stop
// waiting at its timeout) and the pending queue (which keeps the slot so
// later replies still line up with their commands).
struct replay_store::waiter {
    asio::steady_timer* timer = nullptr;  // null once the claim stopped waiting
    std::optional<claim_outcome> outcome;

    void complete(claim_outcome o) noexcept {
        if (timer != nullptr && !outcome) {
            outcome = o;
            timer->cancel();
        }
    }
};

replay_store::replay_store(asio::io_context& ioc, const replay_store_config& cfg, metrics& stats)
    : ioc_(ioc), cfg_(cfg), stats_(stats), sock_(ioc) {
    if (cfg_.tls) {
        tls_ctx_ = std::make_shared<asio::ssl::context>(asio::ssl::context::tls_client);
        tls_ctx_->set_options(asio::ssl::context::default_workarounds | asio::ssl::context::no_sslv2 |
                              asio::ssl::context::no_sslv3 | asio::ssl::context::no_tlsv1 |
                              asio::ssl::context::no_tlsv1_1);
        tls_ctx_->set_verify_mode(asio::ssl::verify_peer | asio::ssl::verify_fail_if_no_peer_cert);
        boost::system::error_code ec;
        if (cfg_.ca_file) {
            tls_ctx_->load_verify_file(*cfg_.ca_file, ec);
        } else {
            tls_ctx_->set_default_verify_paths(ec);
        }
        if (ec) {
            throw config_error("config: \"replay_store.ca_file\" is not a readable PEM CA bundle");
        }
    }
}

replay_store::~replay_store() {
    if (reader_ != nullptr) {
        redisReaderFree(reader_);
    }
}

void replay_store::start() {
    asio::co_spawn(ioc_, run(), asio::detached);
}

void replay_store::close() noexcept {
    boost::system::error_code ec;
    sock_.close(ec);
    connected_ = false;
}

void replay_store::fail_pending() noexcept {
    for (auto& w : pending_) {
        if (w->timer != nullptr) {
            stats_.replay_store_error(metrics::store_error::down);
        }
        w->complete(claim_outcome::unavailable);
    }
    pending_.clear();
    out_.clear();
}

asio::awaitable<std::pair<boost::system::error_code, std::size_t>> replay_store::read_some(std::span<char> buf) {
    auto b = asio::buffer(buf.data(), buf.size());
    auto [ec, n] = tls_ ? co_await tls_->async_read_some(b, as_tuple(use_awaitable))
                        : co_await sock_.async_read_some(b, as_tuple(use_awaitable));
    co_return std::pair{ec, n};
}

asio::awaitable<boost::system::error_code> replay_store::write_all(const std::string& bytes) {
    auto b = asio::buffer(bytes);
    auto [ec, n] = tls_ ? co_await asio::async_write(*tls_, b, as_tuple(use_awaitable))
                        : co_await asio::async_write(sock_, b, as_tuple(use_awaitable));
    (void)n;
    co_return ec;
}

// TCP, TLS for rediss://, AUTH and SELECT, then one PING: the store answers.
asio::awaitable<boost::system::error_code> replay_store::connect() {
    ++generation_;
    tls_.reset();
    sock_ = tcp::socket(ioc_);
    if (reader_ != nullptr) {
        redisReaderFree(reader_);
    }
    reader_ = redisReaderCreate();
    if (reader_ == nullptr) {
        throw std::bad_alloc();
    }
    tcp::resolver resolver(ioc_);
    auto [rec, results] = co_await resolver.async_resolve(cfg_.host, std::to_string(cfg_.port), as_tuple(use_awaitable));
    if (rec) {
        co_return rec;
    }
    socket_deadline deadline(sock_);
    deadline.expires_after(connect_timeout);  // for the whole setup, not per step
    auto [cec, ep] = co_await asio::async_connect(sock_, results, as_tuple(use_awaitable));
    if (cec) {
        co_return deadline.settle(cec);
    }
    boost::system::error_code ec;
    sock_.set_option(tcp::no_delay(true), ec);
    if (tls_ctx_) {
        tls_ = std::make_unique<asio::ssl::stream<tcp::socket&>>(sock_, *tls_ctx_);
        boost::system::error_code not_ip;
        (void)asio::ip::make_address(cfg_.host, not_ip);
        // SNI carries host names only (RFC 6066); an address is still verified against the certificate.
        if (not_ip && SSL_set_tlsext_host_name(tls_->native_handle(), cfg_.host.c_str()) != 1) {
            co_return deadline.settle(asio::error::invalid_argument);
        }
        tls_->set_verify_callback(asio::ssl::host_name_verification(cfg_.host));
        auto [hec] = co_await tls_->async_handshake(asio::ssl::stream_base::client, as_tuple(use_awaitable));
        if (hec) {
            co_return deadline.settle(hec);
        }
    }
    std::string hello;
    std::size_t expected = 1;
    if (cfg_.password) {
        hello += format_command({"AUTH", *cfg_.password});
        ++expected;
    }
    if (cfg_.db != 0) {
        hello += format_command({"SELECT", std::to_string(cfg_.db)});
        ++expected;
    }
    hello += format_command({"PING"});
    const auto wec = co_await write_all(hello);
    std::fill(hello.begin(), hello.end(), '\0');  // it held the password
    if (wec) {
        co_return deadline.settle(wec);
    }
    std::array<char, 512> buf;
    while (expected > 0) {
        auto [e, n] = co_await read_some(buf);
        if (e) {
            co_return deadline.settle(e);
        }
        if (redisReaderFeed(reader_, buf.data(), n) != REDIS_OK) {
            co_return deadline.settle(asio::error::fault);
        }
        for (;;) {
            void* raw = nullptr;
            if (redisReaderGetReply(reader_, &raw) != REDIS_OK) {
                co_return deadline.settle(asio::error::fault);
            }
            if (raw == nullptr) {
                break;
            }
            const reply_ptr r(static_cast<redisReply*>(raw));
            // AUTH and SELECT answer OK, PING answers PONG; an error reply
            // (wrong password, no such database) refuses the connection.
            if (r->type == REDIS_REPLY_ERROR || expected == 0) {
                co_return deadline.settle(asio::error::access_denied);
            }
            --expected;
        }
    }
    co_return deadline.settle({});
}

asio::awaitable<void> replay_store::run() {
    asio::steady_timer pause(ioc_);
    auto backoff = std::chrono::duration_cast<std::chrono::milliseconds>(backoff_first);
    bool reported = false;  // one log line per outage, not one per attempt
    for (;;) {
        const auto ec = co_await connect();
        if (!ec) {
            connected_ = true;
            stats_.replay_store_connected.fetch_add(1, std::memory_order_relaxed);
            log_line("replay store: connected to " + cfg_.url);
            reported = false;
            backoff = std::chrono::duration_cast<std::chrono::milliseconds>(backoff_first);
            const auto lost = co_await serve();
            stats_.replay_store_connected.fetch_sub(1, std::memory_order_relaxed);
            close();
            fail_pending();
            log_line("replay store: connection to " + cfg_.url + " lost (" + lost.message() + "); reconnecting");
            reported = true;
        } else {
            close();
            if (!reported) {
                log_line("replay store: cannot reach " + cfg_.url + " (" + ec.message() + "); retrying");
                reported = true;
            }
        }
        // Jittered, so the workers of many replicas do not reconnect in step.
        const auto jitter = std::chrono::milliseconds(std::rand() % (backoff.count() / 2 + 1));
        pause.expires_after(backoff / 2 + jitter);
        co_await pause.async_wait(as_tuple(use_awaitable));
        backoff = std::min(backoff * 2, std::chrono::duration_cast<std::chrono::milliseconds>(backoff_max));
    }
}

// Reads replies and hands each to the oldest pending claim. Returns why the
// connection ended.
asio::awaitable<boost::system::error_code> replay_store::serve() {
    if (!out_.empty()) {
        asio::co_spawn(ioc_, write_pending(), asio::detached);
    }
    std::array<char, 16384> buf;
    for (;;) {
        auto [ec, n] = co_await read_some(buf);
        if (ec) {
            co_return ec;
        }
        if (redisReaderFeed(reader_, buf.data(), n) != REDIS_OK) {
            co_return asio::error::fault;
        }
        for (;;) {
            void* raw = nullptr;
            if (redisReaderGetReply(reader_, &raw) != REDIS_OK) {
                co_return asio::error::fault;
            }
            if (raw == nullptr) {
                break;
            }
            const reply_ptr r(static_cast<redisReply*>(raw));
            if (pending_.empty()) {
                co_return asio::error::fault;  // a reply to nothing: the stream is out of step
            }
            const auto w = std::move(pending_.front());
            pending_.pop_front();
            if (is_ok(*r)) {
                w->complete(claim_outcome::claimed);
            } else if (r->type == REDIS_REPLY_NIL) {
                w->complete(claim_outcome::replayed);
            } else {
                // An error reply (READONLY after a failover, OOM, NOAUTH): not confirmed.
                stats_.replay_store_error(metrics::store_error::error_reply);
                w->complete(claim_outcome::unavailable);
            }
        }
    }
}

// Writes what the claims queued, batch by batch: claims made while a batch
// is being written go out together in the next one (pipelining).
asio::awaitable<void> replay_store::write_pending() {
    writing_ = true;
    const unsigned generation = generation_;
    while (connected_ && generation == generation_ && !out_.empty()) {
        sending_.swap(out_);
        out_.clear();
        const auto ec = co_await write_all(sending_);
        sending_.clear();
        if (ec) {
            if (generation == generation_) {
                close();  // the reader sees it and reconnects
            }
            break;
        }
    }
    writing_ = false;
}

asio::awaitable<claim_outcome> replay_store::claim(std::span<const unsigned char> id, std::chrono::milliseconds ttl) {
    if (!connected_ || pending_.size() >= max_pending) {
        stats_.replay_store_error(metrics::store_error::down);
        co_return claim_outcome::unavailable;
    }
    static constexpr char hex[] = "0123456789abcdef";
    std::string key = "byok:r:";
    for (const unsigned char b : id) {
        key += hex[b >> 4];
        key += hex[b & 15];
    }
    out_ += format_command({"SET", key, "1", "NX", "PX", std::to_string(std::max<std::int64_t>(ttl.count(), 1))});
    auto w = std::make_shared<waiter>();
    asio::steady_timer timer(co_await asio::this_coro::executor);
    timer.expires_after(std::chrono::milliseconds(cfg_.timeout_ms));
    w->timer = &timer;
    pending_.push_back(w);
    if (!writing_) {
        asio::co_spawn(ioc_, write_pending(), asio::detached);
    }
    const auto start = std::chrono::steady_clock::now();
    co_await timer.async_wait(as_tuple(use_awaitable));
    w->timer = nullptr;  // a reply after this is matched and dropped
    if (!w->outcome) {
        stats_.replay_store_error(metrics::store_error::timeout);
        co_return claim_outcome::unavailable;
    }
    if (*w->outcome != claim_outcome::unavailable) {
        stats_.replay_store_seconds.observe(
            std::chrono::duration<double>(std::chrono::steady_clock::now() - start).count());
    }
    co_return *w->outcome;
}

}  // namespace byok::relay
