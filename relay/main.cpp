// byok-relay: argument parsing and wiring only.
#include <cstdio>
#include <cstring>
#include <ctime>
#include <string>

#include "crypto/keyring.hpp"

namespace {

int usage(std::FILE* to) {
    std::fputs("usage: byok-relay serve --config FILE\n"
               "       byok-relay keygen --out FILE [--days N]\n", to);
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
            days = std::strtol(argv[++i], nullptr, 10);
        } else if (a == "--help" || a == "-h") {
            return usage(stdout);
        } else {
            return usage(stderr);
        }
    }
    if (out.empty() || days <= 0) {
        return usage(stderr);
    }
    try {
        const auto key = byok::crypto::relay_key::generate(std::time(nullptr), days * 86400L);
        key.write_new_file(out);
        std::printf("wrote %s (kid %s, expires %lld)\n", out.c_str(), key.kid().c_str(),
                    static_cast<long long>(key.exp()));
        return 0;
    } catch (const std::exception& e) {
        std::fprintf(stderr, "byok-relay keygen: %s\n", e.what());
        return 1;
    }
}

}  // namespace

int main(int argc, char** argv) {
    if (argc < 2) {
        return usage(stderr);
    }
    if (std::strcmp(argv[1], "keygen") == 0) {
        return keygen(argc, argv);
    }
    if (std::strcmp(argv[1], "--help") == 0 || std::strcmp(argv[1], "-h") == 0) {
        return usage(stdout);
    }
    return usage(stderr);
}
