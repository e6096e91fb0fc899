// byok-mock-provider: argument parsing and wiring only.
//
// Behaviour (docs/CONTRACTS.md, plus the details tests may rely on):
//  - Provider routes: POST .../v1/chat/completions, .../v1/completions,
//    .../v1/responses, .../v1/embeddings, .../v1/messages (Anthropic), GET
//    .../v1/models; any prefix before /v1/ is accepted. Other paths: 404,
//    wrong method: 405, body not JSON: 400 (all JSON error bodies).
//  - Every provider answer carries x-request-id (request-id for /v1/messages),
//    openai-processing-ms, x-ratelimit-remaining-requests, and two headers a
//    relay must strip: set-cookie and x-internal-secret.
//  - Body "mock" object: mode json|fail|hang|reset, events (default 20),
//    interval_ms (between events), first_delay_ms (before the first event, or
//    before a non-streamed answer), status (for fail; default 500),
//    pause_after + pause_ms (after that many events, one pause of pause_ms:
//    {"events":5,"pause_after":1,"pause_ms":1000} sends its first event at
//    once and the other four a second later; the harness's TTFE test).
//    --delay-ms applies before the response headers of every provider answer.
//    "reset" always streams: headers, min(events, 2) events, then a TCP RST.
//  - /__mock/stats also reports "requests"; records also carry "body_bytes".
//    connections_open is a gauge (connections open now); /__mock/reset zeroes
//    the counters and the recording but not the gauge.
//  - streams_aborted counts answers (streamed, hanging or delayed) abandoned
//    because the peer closed or a write failed.
#include <csignal>
#include <cstdio>
#include <cstdlib>
#include <exception>
#include <string>

#include "mock_certs.hpp"
#include "mock_server.hpp"
#include "mock_state.hpp"

namespace {

int usage(std::FILE* to) {
    std::fputs(
        "usage: byok-mock-provider [--listen HOST:PORT] [--tls --cert-dir DIR] [--threads N]\n"
        "                          [--delay-ms N] [--no-record] [--max-records N]\n"
        "  --listen HOST:PORT  address to bind (default 127.0.0.1:0, port 0 = ephemeral)\n"
        "  --tls               serve HTTPS with a fresh in-process CA; writes DIR/ca.pem,\n"
        "                      DIR/cert.pem, DIR/key.pem (needs --cert-dir)\n"
        "  --threads N         I/O threads (default 1)\n"
        "  --delay-ms N        fixed delay before every provider answer (default 0)\n"
        "  --no-record         do not record requests (benchmarks)\n"
        "  --max-records N     keep the last N requests (default 10000)\n",
        to);
    return to == stdout ? 0 : 2;
}

bool parse_int(const char* s, long lo, long hi, long& out) {
    char* end = nullptr;
    const long v = std::strtol(s, &end, 10);
    if (end == s || *end != '\0' || v < lo || v > hi) {
        return false;
    }
    out = v;
    return true;
}

}  // namespace

int main(int argc, char** argv) {
    byok::mock::server_config cfg;
    bool tls = false;
    std::string cert_dir;
    long max_records = 10000;
    for (int i = 1; i < argc; ++i) {
        const std::string a = argv[i];
        const bool has_value = i + 1 < argc;
        long v = 0;
        if (a == "--listen" && has_value) {
            const std::string hp = argv[++i];
            const auto colon = hp.rfind(':');
            if (colon == std::string::npos || !parse_int(hp.c_str() + colon + 1, 0, 65535, v)) {
                std::fprintf(stderr, "byok-mock-provider: --listen wants HOST:PORT, got %s\n", hp.c_str());
                return 2;
            }
            cfg.host = hp.substr(0, colon);
            cfg.port = static_cast<unsigned short>(v);
        } else if (a == "--tls") {
            tls = true;
        } else if (a == "--cert-dir" && has_value) {
            cert_dir = argv[++i];
        } else if (a == "--threads" && has_value && parse_int(argv[i + 1], 1, 256, v)) {
            cfg.threads = static_cast<int>(v);
            ++i;
        } else if (a == "--delay-ms" && has_value && parse_int(argv[i + 1], 0, 3'600'000, v)) {
            cfg.delay_ms = static_cast<int>(v);
            ++i;
        } else if (a == "--no-record") {
            max_records = 0;
        } else if (a == "--max-records" && has_value && parse_int(argv[i + 1], 0, 10'000'000, v)) {
            max_records = v;
            ++i;
        } else if (a == "--help" || a == "-h") {
            return usage(stdout);
        } else {
            std::fprintf(stderr, "byok-mock-provider: bad argument %s\n", a.c_str());
            return usage(stderr);
        }
    }
    if (tls && cert_dir.empty()) {
        std::fputs("byok-mock-provider: --tls needs --cert-dir DIR\n", stderr);
        return 2;
    }
    std::signal(SIGPIPE, SIG_IGN);

    try {
        byok::mock::tls_material material;
        if (tls) {
            material = byok::mock::generate_tls_material();
            byok::mock::write_tls_material(cert_dir, material);
            cfg.tls = &material;
        }
        byok::mock::mock_state state(static_cast<std::size_t>(max_records));
        std::string shown_host = cfg.host == "localhost" ? "127.0.0.1" : cfg.host;
        if (shown_host.find(':') != std::string::npos && shown_host.front() != '[') {
            shown_host = "[" + shown_host + "]";
        }
        return byok::mock::run_server(cfg, state, [&](unsigned short port) {
            std::printf("mock: listening on %s://%s:%u\n", tls ? "https" : "http", shown_host.c_str(),
                        static_cast<unsigned>(port));
            std::fflush(stdout);
        });
    } catch (const std::exception& e) {
        std::fprintf(stderr, "byok-mock-provider: %s\n", e.what());
        return 1;
    }
}
