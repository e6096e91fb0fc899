#pragma once
// Connections from the relay to providers.
//
// Every thread of the relay runs its own io_context and owns its own pools,
// so an upstream connection is only ever touched by the thread that serves
// the client it is used for: no strands, no locks on the I/O path.
// HTTPS is verified against the system CA store (or the provider's ca_file),
// with host-name checking and SNI; the key is written to a connection only
// after its handshake verified.

#include <chrono>
#include <memory>
#include <optional>
#include <variant>
#include <vector>

#include <boost/asio/awaitable.hpp>
#include <boost/asio/io_context.hpp>
#include <boost/asio/ip/tcp.hpp>
#include <boost/asio/ssl/context.hpp>
#include <boost/asio/ssl/stream.hpp>
#include <boost/beast/core/flat_buffer.hpp>
#include <boost/beast/core/tcp_stream.hpp>

#include "relay/config.hpp"

namespace byok::relay {

namespace asio = boost::asio;
namespace beast = boost::beast;

// One TLS context per provider, shared by all threads (an SSL_CTX is safe to
// share once configured). Throws config_error if ca_file cannot be loaded.
[[nodiscard]] std::shared_ptr<asio::ssl::context> make_client_tls_context(const provider& p);

class upstream_conn {
public:
    using tls_stream = asio::ssl::stream<beast::tcp_stream>;

    upstream_conn(asio::io_context& ioc, std::shared_ptr<asio::ssl::context> tls);

    [[nodiscard]] bool is_tls() const noexcept { return tls_.has_value(); }
    [[nodiscard]] tls_stream& tls() { return *tls_; }
    [[nodiscard]] beast::tcp_stream& tcp() { return tls_ ? tls_->next_layer() : *plain_; }
    // Closes the socket; pending operations complete with operation_aborted.
    void close() noexcept;

    // Bytes read from the provider, not yet parsed: a response head (at most
    // 16 KiB) plus one read. Capped, because Beast reads in 64 KiB gulps.
    beast::flat_buffer buffer{20 * 1024};
    std::chrono::steady_clock::time_point idle_since{};

private:
    std::optional<beast::tcp_stream> plain_;
    std::optional<tls_stream> tls_;
};

// Idle connections to one provider, for one thread.
class upstream_pool {
public:
    upstream_pool(asio::io_context& ioc, const provider& p, std::shared_ptr<asio::ssl::context> tls);
    ~upstream_pool();
    upstream_pool(const upstream_pool&) = delete;
    upstream_pool& operator=(const upstream_pool&) = delete;

    // An idle connection not older than the idle limit, or nullptr.
    [[nodiscard]] std::unique_ptr<upstream_conn> take();
    void give_back(std::unique_ptr<upstream_conn> c);

    // A new verified connection; on failure returns nullptr and sets `ec`.
    [[nodiscard]] asio::awaitable<std::unique_ptr<upstream_conn>> connect(std::chrono::seconds timeout,
                                                                          boost::system::error_code& ec);
    // Keeps the TLS session of a connection that completed an exchange, for resumption.
    void remember_session(upstream_conn& c);

    void close_all() noexcept;
    [[nodiscard]] const provider& prov() const noexcept { return prov_; }

private:
    asio::io_context& ioc_;
    const provider& prov_;
    std::shared_ptr<asio::ssl::context> tls_ctx_;
    asio::ip::tcp::resolver resolver_;
    std::vector<std::unique_ptr<upstream_conn>> idle_;
    void* session_ = nullptr;  // SSL_SESSION*, owned
};

}  // namespace byok::relay
