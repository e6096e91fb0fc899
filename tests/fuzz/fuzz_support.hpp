#pragma once
// Helpers shared by the fuzz targets: splitting an input into fields, a
// private temporary directory, and a check that aborts (so libFuzzer records
// the input) when a property of the code under test does not hold.

#include <cstddef>
#include <cstdint>
#include <cstdio>
#include <cstdlib>
#include <string>
#include <string_view>
#include <vector>

#include <unistd.h>

namespace byok::fuzz {

// Aborts with a message: a property violated is a finding, like a crash.
#define BYOK_FUZZ_CHECK(cond)                                                                 \
    do {                                                                                      \
        if (!(cond)) {                                                                        \
            std::fprintf(stderr, "fuzz property violated: %s (%s:%d)\n", #cond, __FILE__, __LINE__); \
            std::abort();                                                                     \
        }                                                                                     \
    } while (0)

inline std::string_view as_view(const std::uint8_t* data, std::size_t size) {
    return {reinterpret_cast<const char*>(data), size};
}

// The first `n - 1` '\n'-terminated lines, then the rest (which may hold newlines).
inline std::vector<std::string_view> split_lines(std::string_view in, std::size_t n) {
    std::vector<std::string_view> out;
    while (out.size() + 1 < n) {
        const auto nl = in.find('\n');
        if (nl == std::string_view::npos) {
            break;
        }
        out.push_back(in.substr(0, nl));
        in.remove_prefix(nl + 1);
    }
    out.push_back(in);
    while (out.size() < n) {
        out.emplace_back();
    }
    return out;
}

// A directory of our own under $TMPDIR, made once per process.
inline const std::string& temp_dir() {
    static const std::string dir = [] {
        const char* base = std::getenv("TMPDIR");
        std::string t = std::string(base != nullptr ? base : "/tmp") + "/byok-fuzz-XXXXXX";
        if (::mkdtemp(t.data()) == nullptr) {
            std::perror("mkdtemp");
            std::abort();
        }
        return t;
    }();
    return dir;
}

}  // namespace byok::fuzz
