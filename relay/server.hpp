#pragma once
// The relay server: N worker threads, each with its own io_context, its own
// SO_REUSEPORT acceptor and its own upstream pools; one control context on
// the main thread for signals, key reloads and /metrics.
//
// Lifetime: a server is built from a config, run() blocks until SIGTERM or
// SIGINT has drained the in-flight requests (or the grace period ran out).

#include <atomic>
#include <cstdint>
#include <memory>
#include <mutex>
#include <string>
#include <thread>
#include <unordered_map>
#include <unordered_set>
#include <vector>

#include <boost/asio/io_context.hpp>
#include <boost/asio/ip/tcp.hpp>
#include <boost/asio/ssl/context.hpp>

#include "crypto/grant.hpp"
#include "crypto/keyring.hpp"
#include "crypto/seal.hpp"
#include "relay/address_table.hpp"
#include "relay/admission.hpp"
#include "relay/config.hpp"
#include "relay/idle_park.hpp"
#include "relay/key_list.hpp"
#include "relay/metrics.hpp"
#include "relay/replay_store.hpp"
#include "relay/upstream.hpp"
#include "relay/web_files.hpp"

namespace byok::relay {

// A client connection, as its worker sees it (for draining).
struct session_slot {
    boost::asio::ip::tcp::socket* socket = nullptr;
    bool idle = false;  // waiting for a request; may be closed when draining
};

struct shared_state {
    explicit shared_state(std::shared_ptr<const config> c, std::shared_ptr<const crypto::keyring> k);

    std::shared_ptr<const config> cfg;
    std::atomic<std::shared_ptr<const crypto::keyring>> keys;
    std::atomic<std::shared_ptr<const signed_key_list>> key_list;  // null without key_list_file
    crypto::seal_checker checker;
    crypto::grant_checker grants;  // shares checker's replay cache
    metrics stats;
    address_table limiter;  // per client address: connection cap and request bucket
    body_budget bodies;  // bytes held in unfinished request bodies
    std::atomic<std::shared_ptr<const web_files>> web;  // null without web_root
    std::vector<std::shared_ptr<boost::asio::ssl::context>> tls;  // by provider index
    std::atomic<bool> draining{false};
    std::atomic<std::int64_t> sessions{0};

    [[nodiscard]] std::size_t provider_index(const provider* p) const noexcept;
};

struct worker {
    explicit worker(shared_state& s);
    // Declared first so it is destroyed last: destroying `ioc` destroys the
    // coroutine frames still pending in it, and their sessions unregister here.
    std::unordered_set<session_slot*> sessions;  // touched only on this worker's thread
    boost::asio::io_context ioc{1};
    std::vector<std::unique_ptr<upstream_pool>> pools;  // by provider index
    std::unique_ptr<replay_store> replay;  // this worker's connection to the shared store; null without one
    std::unique_ptr<boost::asio::ip::tcp::acceptor> acceptor;
    // Keep-alive connections between requests (relay/idle_park.hpp). After
    // `ioc`: it owns sockets, and is destroyed before the context.
    std::unique_ptr<idle_park> park;
};

class server {
public:
    // Loads the keys and builds every TLS context; throws config_error or
    // crypto::key_error with a message naming the field or file.
    // `config_path`, when given, is read again on SIGHUP for its key_files.
    explicit server(std::shared_ptr<const config> cfg, std::string config_path = {});
    ~server();
    // Binds, prints the listening line, serves until drained. Returns the exit code.
    int run();

private:
    void start_draining();
    void reload_keys();

    std::string config_path_;
    std::shared_ptr<shared_state> state_;
    std::vector<std::unique_ptr<worker>> workers_;
    boost::asio::io_context control_{1};
};

// Serves one client connection until it closes or is parked between
// requests (worker::park). Defined in session.cpp.
boost::asio::awaitable<void> run_session(shared_state& s, worker& w, client_conn conn);
// A client connection is closed (by its session, or by the park): what
// counted it open is released. `counted`: it holds one connection of `peer`
// in the per-address table.
void connection_closed(shared_state& s, const address_table::key& peer, bool counted);
// Starts run_session on the worker's thread, logging an exception that ends it.
void spawn_session(shared_state& s, worker& w, client_conn&& conn);

}  // namespace byok::relay
