#include "relay/hardening.hpp"

#include <cerrno>
#include <cstring>

#include <sys/prctl.h>
#include <sys/resource.h>

#include <sodium.h>

#include "relay/sanitizer.hpp"

namespace byok::relay {

std::vector<std::string> harden_process() {
    std::vector<std::string> missing;
    if (address_sanitizer_build) {
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
