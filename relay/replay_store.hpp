#pragma once
// The shared replay store (issue 15): several relay replicas claim every
// accepted seal in one Redis (or Valkey), so a seal accepted by one replica
// is refused by all of them, whatever the load balancer does and across
// restarts. The local replay cache (crypto/replay_cache.hpp) stays in front:
// a replay that reaches the replica that accepted it costs no round trip.
//
// A claim is `SET byok:r:<id in hex> 1 NX PX <ms>`: "OK" means this relay is
// the first to claim the id, a nil reply means another claimed it first.
// Anything else (no connection, no reply within timeout_ms, an error reply)
// is `unavailable`, and the caller decides by `on_error`.
//
// One replay_store per worker thread, on that worker's io_context: one
// connection, commands pipelined on it in order, replies matched to claims in
// order; no locks, no blocking call. The connection is made and remade by a
// coroutine with exponential backoff (50 ms to 2 s); while it is down, claims
// fail at once. hiredis (Debian's 0.14) formats the commands and parses the
// replies; the socket, TLS (rediss://, verified against the configured CA and
// host name) and timers are Asio's, because Debian 12's hiredis has no TLS.
//
// Thread: every member function is called on the owning worker's thread.

#include <chrono>
#include <cstdint>
#include <deque>
#include <memory>
#include <optional>
#include <span>
#include <string>

#include <boost/asio/awaitable.hpp>
#include <boost/asio/io_context.hpp>
#include <boost/asio/ip/tcp.hpp>
#include <boost/asio/ssl/context.hpp>
#include <boost/asio/ssl/stream.hpp>
#include <boost/asio/steady_timer.hpp>

#include "relay/config.hpp"
#include "relay/metrics.hpp"

struct redisReader;

namespace byok::relay {

enum class claim_outcome { claimed, replayed, unavailable };

class replay_store {
public:
    // Throws config_error if the CA file of a rediss:// store cannot be loaded.
    replay_store(boost::asio::io_context& ioc, const replay_store_config& cfg, metrics& stats);
    ~replay_store();
    replay_store(const replay_store&) = delete;
    replay_store& operator=(const replay_store&) = delete;

    // Starts the connection coroutine on the io_context (runs once it runs).
    void start();

    // Claims `id` for `ttl`. Returns within the configured timeout_ms.
    [[nodiscard]] boost::asio::awaitable<claim_outcome> claim(std::span<const unsigned char> id,
                                                              std::chrono::milliseconds ttl);

    [[nodiscard]] const replay_store_config& config() const noexcept { return cfg_; }

private:
    struct waiter;
    boost::asio::awaitable<void> run();
    boost::asio::awaitable<boost::system::error_code> connect();
    boost::asio::awaitable<boost::system::error_code> serve();
    boost::asio::awaitable<void> write_pending();
    boost::asio::awaitable<std::pair<boost::system::error_code, std::size_t>> read_some(std::span<char> buf);
    boost::asio::awaitable<boost::system::error_code> write_all(const std::string& bytes);
    void close() noexcept;
    void fail_pending() noexcept;

    boost::asio::io_context& ioc_;
    const replay_store_config& cfg_;
    metrics& stats_;
    std::shared_ptr<boost::asio::ssl::context> tls_ctx_;  // rediss:// only
    boost::asio::ip::tcp::socket sock_;
    std::unique_ptr<boost::asio::ssl::stream<boost::asio::ip::tcp::socket&>> tls_;
    redisReader* reader_ = nullptr;
    bool connected_ = false;
    bool writing_ = false;
    unsigned generation_ = 0;  // one per connection: a writer of an old one leaves the new one alone
    std::string out_;      // commands not yet handed to the socket
    std::string sending_;  // the batch being written
    std::deque<std::shared_ptr<waiter>> pending_;  // one per command sent or queued, in order
};

}  // namespace byok::relay
