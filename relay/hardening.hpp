#pragma once
#include <string>
#include <vector>

namespace byok::relay {

// Applies what the process can do to keep secrets out of dumps and swap:
// not dumpable (no core dumps, no ptrace by non-root peers), RLIMIT_CORE 0.
// Secret buffers are already locked and excluded from dumps one by one
// (sodium_malloc: mlock + MADV_DONTDUMP). Returns what could not be applied;
// the relay says so at start and keeps running.
[[nodiscard]] std::vector<std::string> harden_process();

}  // namespace byok::relay
