#include "relay/server.hpp"

#include <csignal>
#include <cstdio>
#include <ctime>

#include <boost/asio/as_tuple.hpp>
#include <boost/asio/co_spawn.hpp>
#include <boost/asio/detached.hpp>
#include <boost/asio/signal_set.hpp>
#include <boost/asio/steady_timer.hpp>
#include <boost/asio/use_awaitable.hpp>
#include <boost/asio/write.hpp>
#include <boost/beast/core/tcp_stream.hpp>
#include <boost/beast/http/read.hpp>
#include <boost/beast/http/string_body.hpp>

#include "relay/access_log.hpp"
#include "relay/http_util.hpp"

namespace byok::relay {

namespace http = beast::http;
using asio::as_tuple;
using asio::use_awaitable;
using tcp = asio::ip::tcp;

// ---- shared_state / worker ---------------------------------------------------------

namespace {
std::vector<std::string> provider_names(const config& c) {
    std::vector<std::string> out;
    for (const auto& p : c.providers) {
        out.push_back(p.name);
    }
    return out;
}
}  // namespace

shared_state::shared_state(std::shared_ptr<const config> c, std::shared_ptr<const crypto::keyring> k)
    : cfg(std::move(c)),
      keys(std::move(k)),
      checker(crypto::seal_policy{cfg->seal_max_age_s, cfg->seal_max_future_s, 1024,
                                  static_cast<std::int64_t>(std::time(nullptr)) - 1},
              cfg->replay_cache_entries),
      grants(checker.policy(), checker.replay()),
      stats(provider_names(*cfg)),
      limiter(cfg->max_connections_per_ip, cfg->per_ip_rate),
      bodies(cfg->max_pending_body_bytes) {
    if (cfg->web_root) {
        web.store(web_files::load(*cfg->web_root));
    }
    for (const auto& p : cfg->providers) {
        tls.push_back(p.tls ? make_client_tls_context(p) : nullptr);
    }
    stats.replay_store_configured = cfg->replay_store.has_value();
}

void connection_closed(shared_state& s, const address_table::key& peer, bool counted) {
    s.sessions.fetch_sub(1);
    s.stats.open_connections.fetch_sub(1);
    if (counted) {
        s.limiter.connection_closed(peer);
    }
}

std::size_t shared_state::provider_index(const provider* p) const noexcept {
    return static_cast<std::size_t>(p - cfg->providers.data());
}

worker::worker(shared_state& s) {
    park = std::make_unique<idle_park>(
        ioc, std::chrono::seconds(s.cfg->idle_timeout_s),
        [&s, this](client_conn&& c) {
            if (s.draining.load()) {
                boost::system::error_code ignored;
                c.socket.close(ignored);
                connection_closed(s, c.peer, c.counted);
                return;
            }
            spawn_session(s, *this, std::move(c));
        },
        [&s](const client_conn& c) { connection_closed(s, c.peer, c.counted); });
    for (std::size_t i = 0; i < s.cfg->providers.size(); ++i) {
        pools.push_back(std::make_unique<upstream_pool>(ioc, s.cfg->providers[i], s.tls[i]));
    }
    if (s.cfg->replay_store) {
        replay = std::make_unique<replay_store>(ioc, *s.cfg->replay_store, s.stats);
    }
}

void spawn_session(shared_state& s, worker& w, client_conn&& conn) {
    asio::co_spawn(w.ioc, run_session(s, w, std::move(conn)), [](const std::exception_ptr& e) {
        if (e) {
            try {
                std::rethrow_exception(e);
            } catch (const std::exception& ex) {
                // Exceptions here carry no request data: our code never puts any in one.
                log_line(std::string("session ended by an exception: ") + ex.what());
            }
        }
    });
}

// ---- server -------------------------------------------------------------------------

namespace {

using reuse_port = asio::detail::socket_option::boolean<SOL_SOCKET, SO_REUSEPORT>;

std::unique_ptr<tcp::acceptor> make_acceptor(asio::io_context& ioc, const tcp::endpoint& ep) {
    auto a = std::make_unique<tcp::acceptor>(ioc);
    a->open(ep.protocol());
    a->set_option(asio::socket_base::reuse_address(true));
    a->set_option(reuse_port(true));
    a->bind(ep);
    a->listen(asio::socket_base::max_listen_connections);
    return a;
}

asio::awaitable<void> accept_loop(shared_state& s, worker& w) {
    asio::steady_timer backoff(w.ioc);
    for (;;) {
        auto [ec, sock] = co_await w.acceptor->async_accept(as_tuple(use_awaitable));
        if (ec == asio::error::operation_aborted || !w.acceptor->is_open()) {
            co_return;
        }
        if (ec) {
            // Out of file descriptors and the like: wait, do not spin.
            log_line("accept failed: " + ec.message());
            backoff.expires_after(std::chrono::milliseconds(50));
            co_await backoff.async_wait(as_tuple(use_awaitable));
            continue;
        }
        spawn_session(s, w, client_conn{std::move(sock)});
    }
}

asio::awaitable<void> metrics_session(shared_state& s, tcp::socket sock) {
    beast::tcp_stream stream(std::move(sock));
    beast::flat_buffer buf(16384);
    for (;;) {
        http::request_parser<http::string_body> p;
        p.header_limit(8192);
        p.body_limit(0);
        stream.expires_after(std::chrono::seconds(30));
        auto [ec, n] = co_await http::async_read(stream, buf, p, as_tuple(use_awaitable));
        if (ec) {
            co_return;
        }
        const auto& req = p.get();
        std::string body;
        unsigned status = 200;
        std::string_view type = "text/plain; version=0.0.4; charset=utf-8";
        if (req.method() == http::verb::get && req.target() == "/metrics") {
            body = s.stats.render();
            render_sample(body, "byok_pending_body_bytes", "gauge", "Bytes held in unfinished request bodies.",
                          static_cast<std::int64_t>(s.bodies.held()));
            render_sample(body, "byok_address_table_entries", "gauge",
                          "Client addresses with a connection open or a bucket refilling.",
                          static_cast<std::int64_t>(s.limiter.size()));
            render_sample(body, "byok_access_log_dropped_total", "counter",
                          "Access log lines dropped because stderr was not keeping up.",
                          static_cast<std::int64_t>(access_log_dropped()));
        } else {
            status = 404;
            type = "application/json";
            body = error_body(error_code::unknown_route);
        }
        std::string h = "HTTP/1.1 " + std::to_string(status) + " " + std::string(reason_phrase(status)) +
                        "\r\nContent-Type: " + std::string(type) + "\r\nContent-Length: " +
                        std::to_string(body.size()) + "\r\n\r\n";
        const std::array<asio::const_buffer, 2> bufs{asio::buffer(h), asio::buffer(body)};
        auto [wec, wn] = co_await asio::async_write(stream, bufs, as_tuple(use_awaitable));
        if (wec || !req.keep_alive()) {
            co_return;
        }
    }
}

asio::awaitable<void> metrics_loop(shared_state& s, tcp::acceptor& a) {
    for (;;) {
        auto [ec, sock] = co_await a.async_accept(as_tuple(use_awaitable));
        if (ec == asio::error::operation_aborted || !a.is_open()) {
            co_return;
        }
        if (!ec) {
            asio::co_spawn(a.get_executor(), metrics_session(s, std::move(sock)), asio::detached);
        }
    }
}

std::string endpoint_text(const tcp::endpoint& ep) {
    // Appended piece by piece: GCC 12 at -O2 reports a false -Wrestrict
    // overlap for a literal + std::string&&, which fails a Release build
    // with BYOK_WERROR.
    const auto a = ep.address();
    std::string text;
    if (a.is_v6()) {
        text.append("[").append(a.to_string()).append("]");
    } else {
        text = a.to_string();
    }
    text.append(":").append(std::to_string(ep.port()));
    return text;
}

}  // namespace

server::server(std::shared_ptr<const config> cfg, std::string config_path) : config_path_(std::move(config_path)) {
    auto keys = crypto::keyring::load(cfg->key_files);
    std::shared_ptr<const signed_key_list> list;
    if (cfg->key_list_file) {
        std::vector<std::string> warnings;
        list = signed_key_list::load(*cfg->key_list_file, *keys, std::time(nullptr), warnings);
        for (const auto& w : warnings) {
            log_line("warning: " + w);
        }
    }
    state_ = std::make_shared<shared_state>(cfg, std::move(keys));
    state_->key_list.store(std::move(list));
    for (unsigned i = 0; i < cfg->threads; ++i) {
        workers_.push_back(std::make_unique<worker>(*state_));
    }
}

server::~server() = default;

void server::start_draining() {
    if (state_->draining.exchange(true)) {
        return;
    }
    log_line("draining: no new connections; waiting for in-flight requests");
    for (auto& w : workers_) {
        asio::post(w->ioc, [wp = w.get()] {
            boost::system::error_code ec;
            if (wp->acceptor) {
                wp->acceptor->close(ec);
            }
            // Connections waiting for a request are closed now; busy ones
            // finish their request and close after it.
            wp->park->close_all();
            for (auto* slot : wp->sessions) {
                if (slot->idle) {
                    slot->socket->cancel(ec);
                }
            }
        });
    }
}

void server::reload_keys() {
    // Rotation edits key_files in the config (new key first), then SIGHUP:
    // the list is read again from the file. Only key_files takes effect
    // without a restart; a config that no longer parses changes nothing.
    std::vector<std::string> files = state_->cfg->key_files;
    std::optional<std::string> list_file = state_->cfg->key_list_file;
    if (!config_path_.empty()) {
        try {
            const auto fresh = load_config(config_path_);
            files = fresh->key_files;
            list_file = fresh->key_list_file;
        } catch (const std::exception& e) {
            log_line(std::string("key reload failed, keeping the current keys: ") + e.what());
            return;
        }
    }
    if (state_->cfg->web_root) {
        try {
            state_->web.store(web_files::load(*state_->cfg->web_root));
        } catch (const std::exception& e) {
            log_line(std::string("web_root reload failed, keeping the current files: ") + e.what());
        }
    }
    try {
        auto keys = crypto::keyring::load(files);
        // The signed list must match the new keys, or neither is taken.
        std::shared_ptr<const signed_key_list> list;
        if (list_file) {
            std::vector<std::string> warnings;
            list = signed_key_list::load(*list_file, *keys, std::time(nullptr), warnings);
            for (const auto& w : warnings) {
                log_line("warning: " + w);
            }
        }
        std::string kids;
        for (const auto& k : keys->keys()) {
            kids += (kids.empty() ? "" : ", ") + k.kid();
        }
        state_->key_list.store(std::move(list));
        state_->keys.store(std::move(keys));
        log_line("keys reloaded: " + kids + " (other settings change only on restart)");
    } catch (const std::exception& e) {
        log_line(std::string("key reload failed, keeping the current keys: ") + e.what());
    }
}

int server::run() {
    const auto& cfg = *state_->cfg;
    const tcp::endpoint listen_ep(asio::ip::make_address(cfg.listen.host), cfg.listen.port);
    workers_[0]->acceptor = make_acceptor(workers_[0]->ioc, listen_ep);
    const auto bound = workers_[0]->acceptor->local_endpoint();
    for (std::size_t i = 1; i < workers_.size(); ++i) {
        workers_[i]->acceptor = make_acceptor(workers_[i]->ioc, bound);
    }
    std::unique_ptr<tcp::acceptor> metrics_acceptor;
    if (cfg.metrics_listen) {
        const tcp::endpoint mep(asio::ip::make_address(cfg.metrics_listen->host), cfg.metrics_listen->port);
        metrics_acceptor = std::make_unique<tcp::acceptor>(control_, mep);
        asio::co_spawn(control_, metrics_loop(*state_, *metrics_acceptor), asio::detached);
    }
    for (auto& w : workers_) {
        asio::co_spawn(w->ioc, accept_loop(*state_, *w), asio::detached);
        if (w->replay) {
            w->replay->start();
        }
    }

    asio::signal_set stop_signals(control_, SIGTERM, SIGINT);
    asio::signal_set hup(control_, SIGHUP);
    std::signal(SIGPIPE, SIG_IGN);
    asio::steady_timer watch(control_);
    bool stopping = false;
    bool forced = false;
    std::chrono::steady_clock::time_point deadline{};

    std::function<void()> arm_hup = [&] {
        hup.async_wait([&](const boost::system::error_code& ec, int) {
            if (!ec) {
                reload_keys();
                arm_hup();
            }
        });
    };
    arm_hup();

    // A signed key list can expire while the relay runs: say so in the log, hourly.
    asio::steady_timer list_watch(control_);
    std::function<void()> arm_list_watch = [&] {
        list_watch.expires_after(std::chrono::hours(1));
        list_watch.async_wait([&](const boost::system::error_code& ec) {
            if (ec) {
                return;
            }
            if (const auto list = state_->key_list.load()) {
                if (const auto note = key_list_expiry_note(*list, std::time(nullptr)); !note.empty()) {
                    log_line(note);
                }
            }
            arm_list_watch();
        });
    };
    arm_list_watch();

    std::function<void()> check_drained = [&] {
        watch.expires_after(std::chrono::milliseconds(50));
        watch.async_wait([&](const boost::system::error_code& ec) {
            if (ec) {
                return;
            }
            const bool idle = state_->sessions.load() == 0;
            const auto now = std::chrono::steady_clock::now();
            if (!idle && now >= deadline && !forced) {
                forced = true;
                log_line("grace period over; closing " + std::to_string(state_->sessions.load()) +
                         " connection(s)");
                for (auto& w : workers_) {
                    asio::post(w->ioc, [wp = w.get()] {
                        boost::system::error_code ignored;
                        wp->park->close_all();
                        for (auto* slot : wp->sessions) {
                            slot->socket->close(ignored);
                        }
                    });
                }
            }
            if (idle || now >= deadline + std::chrono::seconds(2)) {
                for (auto& w : workers_) {
                    w->ioc.stop();
                }
                hup.cancel();
                list_watch.cancel();
                stop_signals.cancel();
                if (metrics_acceptor) {
                    boost::system::error_code ignored;
                    metrics_acceptor->close(ignored);
                }
                control_.stop();
                return;
            }
            check_drained();
        });
    };
    stop_signals.async_wait([&](const boost::system::error_code& ec, int sig) {
        if (ec || stopping) {
            return;
        }
        stopping = true;
        log_line(std::string("received ") + (sig == SIGTERM ? "SIGTERM" : "SIGINT"));
        deadline = std::chrono::steady_clock::now() + std::chrono::seconds(cfg.shutdown_grace_s);
        start_draining();
        check_drained();
    });

    std::string listening = "listening on http://" + endpoint_text(bound);
    log_line(listening + " (" + std::to_string(workers_.size()) + " threads, " +
             std::to_string(state_->keys.load()->keys().size()) + " key(s), current kid " +
             state_->keys.load()->keys()[0].kid() + ")");
    if (cfg.replay_store) {
        log_line("replay store: " + cfg.replay_store->url + " (on_error " +
                 (cfg.replay_store->on_error == replay_store_failure::refuse ? "refuse" : "local") + ", timeout " +
                 std::to_string(cfg.replay_store->timeout_ms) + " ms)");
    }
    if (metrics_acceptor) {
        log_line("metrics on http://" + endpoint_text(metrics_acceptor->local_endpoint()) + "/metrics");
    }

    std::vector<std::thread> threads;
    for (auto& w : workers_) {
        threads.emplace_back([wp = w.get()] {
            // Work keeps the context alive between connections.
            auto guard = asio::make_work_guard(wp->ioc);
            wp->ioc.run();
        });
    }
    control_.run();
    for (auto& t : threads) {
        t.join();
    }
    for (auto& w : workers_) {
        for (auto& p : w->pools) {
            p->close_all();
        }
    }
    log_line("stopped");
    return 0;
}

}  // namespace byok::relay
