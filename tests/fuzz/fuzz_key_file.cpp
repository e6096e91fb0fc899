// relay_key::load_file on arbitrary file contents (mode 0600): either a key
// whose kid matches its public key, or a key_error; never a crash.
#include "crypto/keyring.hpp"

#include <cerrno>
#include <string>

#include <fcntl.h>
#include <unistd.h>

#include "fuzz_support.hpp"

extern "C" int LLVMFuzzerTestOneInput(const std::uint8_t* data, std::size_t size) {
    static const std::string path = byok::fuzz::temp_dir() + "/key.json";
    const int fd = ::open(path.c_str(), O_WRONLY | O_CREAT | O_TRUNC | O_CLOEXEC, 0600);
    BYOK_FUZZ_CHECK(fd >= 0);
    std::size_t done = 0;
    while (done < size) {
        const ssize_t w = ::write(fd, data + done, size - done);
        BYOK_FUZZ_CHECK(w > 0 || errno == EINTR);
        done += w > 0 ? static_cast<std::size_t>(w) : 0;
    }
    ::close(fd);
    try {
        const auto key = byok::crypto::relay_key::load_file(path);
        BYOK_FUZZ_CHECK(key.kid() == byok::crypto::derive_kid(key.pk()));
        BYOK_FUZZ_CHECK(key.exp() > 0);
    } catch (const byok::crypto::key_error& e) {
        // The message names the file, never key material.
        BYOK_FUZZ_CHECK(std::string_view(e.what()).find(path) != std::string_view::npos ||
                        std::string_view(e.what()).find("key") != std::string_view::npos);
    }
    return 0;
}
