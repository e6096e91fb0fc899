#include "relay/hardening.hpp"

#include <cerrno>
#include <cstring>

#include <sys/prctl.h>
#include <sys/resource.h>

#include <sodium.h>

namespace byok::relay {

namespace {
#if defined(__SANITIZE_ADDRESS__)
constexpr bool sanitizer_build = true;
#elif defined(__has_feature)
#if __has_feature(address_sanitizer)
constexpr bool sanitizer_build = true;
#else
constexpr bool sanitizer_build = false;
#endif
#else
constexpr bool sanitizer_build = false;
#endif
}  // namespace

std::vector<std::string> harden_process() {
    std::vector<std::string> missing;
    if (sanitizer_build) {
        // LeakSanitizer stops the world with ptrace, which a non-dumpable process refuses.
        missing.push_back("PR_SET_DUMPABLE=0: skipped in a sanitizer build");
    } else if (::prctl(PR_SET_DUMPABLE, 0, 0, 0, 0) != 0) {
        missing.push_back(std::string("PR_SET_DUMPABLE=0: ") + std::strerror(errno));
    }
    const rlimit none{0, 0};
    if (::setrlimit(RLIMIT_CORE, &none) != 0) {
        missing.push_back(std::string("RLIMIT_CORE=0: ") + std::strerror(errno));
    }
    // Probe whether locking works at all (RLIMIT_MEMLOCK): sodium_malloc
    // falls back to unlocked memory silently when it cannot lock.
    unsigned char probe[64];
    if (sodium_mlock(probe, sizeof probe) != 0) {
        missing.push_back(std::string("mlock of secret pages (raise LimitMEMLOCK / RLIMIT_MEMLOCK): ") +
                          std::strerror(errno));
    } else {
        sodium_munlock(probe, sizeof probe);
    }
    return missing;
}

}  // namespace byok::relay
