// byok-relay: argument parsing and wiring only.
#include <cstdio>
#include <cstring>
#include <ctime>
#include <string>

#include "crypto/keyring.hpp"
#include "relay/access_log.hpp"
#include "relay/config.hpp"
#include "relay/hardening.hpp"
#include "relay/server.hpp"

#ifndef BYOK_VERSION
#define BYOK_VERSION "unknown"
#endif
#ifndef BYOK_GIT_COMMIT
#define BYOK_GIT_COMMIT "unknown"
#endif

namespace {

constexpr const char* usage_text =
    "usage: byok-relay serve --config FILE\n"
    "       byok-relay keygen --out FILE [--days N]\n"
    "       byok-relay --version\n"
    "\n"
    "serve   runs the relay with the JSON configuration FILE (see docs/operations.md).\n"
    "        SIGTERM/SIGINT drain in-flight requests and exit; SIGHUP reloads the key files.\n"
    "keygen  writes a new relay key to FILE (X25519 for seals, a grant key; mode 0600;\n"
    "        never overwrites),\n"
    "        valid for N days (default 90), and prints its kid.\n"
    "--version  prints the version and the git commit the binary was built from\n"
    "        (check a binary against the source: scripts/repro-build.sh COMMIT).\n";

int usage(std::FILE* to) {
    std::fputs(usage_text, to);
    return to == stdout ? 0 : 2;
}

int keygen(int argc, char** argv) {
    std::string out;
    long days = 90;
    for (int i = 2; i < argc; ++i) {
        const std::string a = argv[i];
        if (a == "--out" && i + 1 < argc) {
            out = argv[++i];
        } else if (a == "--days" && i + 1 < argc) {
            char* end = nullptr;
            days = std::strtol(argv[++i], &end, 10);
            if (end == nullptr || *end != '\0' || days <= 0 || days > 3650) {
                std::fputs("byok-relay keygen: --days must be a whole number from 1 to 3650\n", stderr);
                return 2;
            }
        } else if (a == "--help" || a == "-h") {
            return usage(stdout);
        } else {
            return usage(stderr);
        }
    }
    if (out.empty()) {
        std::fputs("byok-relay keygen: --out FILE is required\n", stderr);
        return 2;
    }
    try {
        const auto key = byok::crypto::relay_key::generate(std::time(nullptr), days * 86400L);
        key.write_new_file(out);
        std::printf("wrote %s (kid %s, hpke kid %s, grant kid %s, expires %lld)\n", out.c_str(), key.kid().c_str(),
                    key.has_hpke() ? key.hpke_kid().c_str() : "-", key.has_grant() ? key.grant_kid().c_str() : "-",
                    static_cast<long long>(key.exp()));
        return 0;
    } catch (const std::exception& e) {
        std::fprintf(stderr, "byok-relay keygen: %s\n", e.what());
        return 1;
    }
}

int serve(int argc, char** argv) {
    std::string config_path;
    for (int i = 2; i < argc; ++i) {
        const std::string a = argv[i];
        if (a == "--config" && i + 1 < argc) {
            config_path = argv[++i];
        } else if (a == "--help" || a == "-h") {
            return usage(stdout);
        } else {
            return usage(stderr);
        }
    }
    if (config_path.empty()) {
        std::fputs("byok-relay serve: --config FILE is required\n", stderr);
        return 2;
    }
    for (const auto& m : byok::relay::harden_process()) {
        byok::relay::log_line("hardening not applied: " + m);
    }
    try {
        byok::relay::server srv(byok::relay::load_config(config_path), config_path);
        return srv.run();
    } catch (const std::exception& e) {
        // Configuration and key-file errors: the message names the field or file.
        // The log queue is flushed first, so lines logged before the error
        // (hardening warnings) come before it.
        byok::relay::stop_access_log();
        std::fprintf(stderr, "byok-relay: %s\n", e.what());
        return 1;
    }
}

}  // namespace

int main(int argc, char** argv) {
    if (argc < 2) {
        return usage(stderr);
    }
    const std::string cmd = argv[1];
    if (cmd == "keygen") {
        return keygen(argc, argv);
    }
    if (cmd == "serve") {
        return serve(argc, argv);
    }
    if (cmd == "--help" || cmd == "-h" || cmd == "help") {
        return usage(stdout);
    }
    if (cmd == "--version" || cmd == "version") {
        std::printf("byok-relay %s commit %s\n", BYOK_VERSION, BYOK_GIT_COMMIT);
        return 0;
    }
    return usage(stderr);
}
