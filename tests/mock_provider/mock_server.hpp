#pragma once
// The HTTP(S)/1.1 server of byok-mock-provider: an acceptor that hands each
// connection to one of N single-threaded io_contexts, where one coroutine per
// connection serves keep-alive requests. See mock_responses.hpp for what it
// answers and docs/CONTRACTS.md for the contract.

#include <functional>
#include <string>

#include "mock_certs.hpp"
#include "mock_state.hpp"

namespace byok::mock {

struct server_config {
    std::string host = "127.0.0.1";  // an IP address or "localhost"
    unsigned short port = 0;          // 0: an ephemeral port
    int threads = 1;
    int delay_ms = 0;                 // before every provider answer
    const tls_material* tls = nullptr;  // null: plain HTTP; else must outlive run_server
};

// Binds, calls on_ready(bound port) once accepting, and serves until SIGINT
// or SIGTERM. Returns the process exit code. Throws on bind/TLS setup errors.
// Call once, from main; state must outlive the call.
int run_server(const server_config& cfg, mock_state& state,
               const std::function<void(unsigned short)>& on_ready);

}  // namespace byok::mock
