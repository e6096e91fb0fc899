// byok-relay: argument parsing and wiring only.
#include <cerrno>
#include <cstdio>
#include <cstring>
#include <ctime>
#include <string>
#include <vector>

#include "crypto/encoding.hpp"
#include "crypto/keyring.hpp"
#include "crypto/signing_key.hpp"
#include "relay/access_log.hpp"
#include "relay/config.hpp"
#include "relay/hardening.hpp"
#include "relay/key_list.hpp"
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
    "       byok-relay keygen --signing FILE\n"
    "       byok-relay sign-keys --signing-key FILE --exp DURATION --out LIST KEYFILE...\n"
    "       byok-relay --version\n"
    "\n"
    "serve   runs the relay with the JSON configuration FILE (see docs/operations.md).\n"
    "        SIGTERM/SIGINT drain in-flight requests and exit; SIGHUP reloads the key files.\n"
    "keygen  writes a new relay key to FILE (X25519 for seals, a grant key; mode 0600;\n"
    "        never overwrites),\n"
    "        valid for N days (default 90), and prints its kid.\n"
    "keygen --signing  writes a new Ed25519 key-list signing key to FILE (mode 0600;\n"
    "        keep it offline) and prints the public key apps pin (sealedFetch signingKey).\n"
    "sign-keys  writes LIST: the key list of the KEYFILEs (in key_files order), signed,\n"
    "        valid for DURATION (30d, 12h, 90m, 3600s); name it in the config's key_list_file.\n"
    "--version  prints the version and the git commit the binary was built from\n"
    "        (check a binary against the source: scripts/repro-build.sh COMMIT).\n";

int usage(std::FILE* to) {
    std::fputs(usage_text, to);
    return to == stdout ? 0 : 2;
}

// ---- The key-list signing key (relay/key_list.hpp): both commands run offline.
int keygen_signing(const std::string& out) {
    try {
        const auto key = byok::crypto::signing_key::generate(std::time(nullptr));
        key.write_new_file(out);
        std::printf("wrote %s (key-list signing key; keep it offline)\npin this public key in the app: %s\n",
                    out.c_str(), byok::crypto::base64url_encode(key.pk()).c_str());
        return 0;
    } catch (const std::exception& e) {
        std::fprintf(stderr, "byok-relay keygen: %s\n", e.what());
        return 1;
    }
}

// "30d", "12h", "90m", "3600s" or "3600": seconds, or -1.
long long parse_duration(const std::string& text) {
    char* end = nullptr;
    const long long n = std::strtoll(text.c_str(), &end, 10);
    if (end == text.c_str() || n <= 0) {
        return -1;
    }
    const std::string unit = end;
    long long mul = 0;
    if (unit == "d") {
        mul = 86400;
    } else if (unit == "h") {
        mul = 3600;
    } else if (unit == "m") {
        mul = 60;
    } else if (unit == "s" || unit.empty()) {
        mul = 1;
    }
    return mul == 0 || n > 3650LL * 86400 / mul ? -1 : n * mul;
}

int sign_keys(int argc, char** argv) {
    std::string signing;
    std::string out;
    long long exp_s = -1;
    std::vector<std::string> key_files;
    for (int i = 2; i < argc; ++i) {
        const std::string a = argv[i];
        if (a == "--signing-key" && i + 1 < argc) {
            signing = argv[++i];
        } else if (a == "--out" && i + 1 < argc) {
            out = argv[++i];
        } else if (a == "--exp" && i + 1 < argc) {
            exp_s = parse_duration(argv[++i]);
            if (exp_s <= 0) {
                std::fputs("byok-relay sign-keys: --exp must be a duration such as 30d, 12h, 90m or 3600s\n", stderr);
                return 2;
            }
        } else if (a == "--help" || a == "-h") {
            return usage(stdout);
        } else if (!a.empty() && a[0] != '-') {
            key_files.push_back(a);
        } else {
            return usage(stderr);
        }
    }
    if (signing.empty() || out.empty() || exp_s <= 0 || key_files.empty()) {
        std::fputs("byok-relay sign-keys: --signing-key FILE, --exp DURATION, --out LIST and at least one key file "
                   "are required\n", stderr);
        return 2;
    }
    try {
        const auto signer = byok::crypto::signing_key::load_file(signing);
        const auto keys = byok::crypto::keyring::load(key_files);
        const std::int64_t now = std::time(nullptr);
        const std::string text = byok::relay::make_signed_key_list(*keys, signer, now, now + exp_s);
        std::FILE* f = std::fopen(out.c_str(), "wx");  // never replace a list in use
        if (f == nullptr) {
            std::fprintf(stderr, "byok-relay sign-keys: cannot create '%s' (it must not exist yet): %s\n", out.c_str(),
                         std::strerror(errno));
            return 1;
        }
        const bool ok = std::fwrite(text.data(), 1, text.size(), f) == text.size();
        if (std::fclose(f) != 0 || !ok) {
            std::fprintf(stderr, "byok-relay sign-keys: cannot write '%s'\n", out.c_str());
            return 1;
        }
        std::printf("wrote %s (signed by %s, expires %lld)\n", out.c_str(),
                    byok::crypto::base64url_encode(signer.pk()).c_str(), static_cast<long long>(now + exp_s));
        return 0;
    } catch (const std::exception& e) {
        std::fprintf(stderr, "byok-relay sign-keys: %s\n", e.what());
        return 1;
    }
}

int keygen(int argc, char** argv) {
    if (argc == 4 && std::strcmp(argv[2], "--signing") == 0) {
        return keygen_signing(argv[3]);
    }
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
    if (cmd == "sign-keys") {
        return sign_keys(argc, argv);
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
