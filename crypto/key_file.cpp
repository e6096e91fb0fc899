#include "crypto/key_file.hpp"

#include <cerrno>
#include <cstdio>
#include <cstring>

#include <fcntl.h>
#include <sys/stat.h>
#include <unistd.h>

#include "crypto/keyring.hpp"

namespace byok::crypto {
namespace {

std::string errno_text(int err) { return std::strerror(err); }

class fd_guard {
public:
    explicit fd_guard(int fd) noexcept : fd_(fd) {}
    fd_guard(const fd_guard&) = delete;
    fd_guard& operator=(const fd_guard&) = delete;
    ~fd_guard() {
        if (fd_ >= 0) {
            ::close(fd_);
        }
    }
    [[nodiscard]] int get() const noexcept { return fd_; }

private:
    int fd_;
};

std::string mode_text(mode_t mode) {
    char buf[8];
    std::snprintf(buf, sizeof buf, "%04o", static_cast<unsigned>(mode & 07777));
    return buf;
}

}  // namespace

void write_new_secret_file(const std::string& path, std::span<const unsigned char> text) {
    // O_EXCL: never replace a key that may still be in use; 0600 regardless of umask.
    const int raw = ::open(path.c_str(), O_WRONLY | O_CREAT | O_EXCL | O_CLOEXEC | O_NOFOLLOW, 0600);
    if (raw < 0) {
        if (errno == EEXIST) {
            throw key_error("key file '" + path + "' already exists; refusing to overwrite it");
        }
        throw key_error("cannot create key file '" + path + "': " + errno_text(errno));
    }
    fd_guard fd(raw);
    // O_EXCL means this process created the file: if it cannot be completed,
    // remove it, so that a half-written key never blocks the next keygen or
    // gets loaded.
    try {
        if (::fchmod(fd.get(), 0600) != 0) {
            throw key_error("cannot set mode 0600 on '" + path + "': " + errno_text(errno));
        }
        std::size_t done = 0;
        while (done < text.size()) {
            const ssize_t w = ::write(fd.get(), text.data() + done, text.size() - done);
            if (w < 0) {
                if (errno == EINTR) {
                    continue;
                }
                throw key_error("cannot write key file '" + path + "': " + errno_text(errno));
            }
            done += static_cast<std::size_t>(w);
        }
        if (::fsync(fd.get()) != 0) {
            throw key_error("cannot sync key file '" + path + "': " + errno_text(errno));
        }
    } catch (...) {
        ::unlink(path.c_str());
        throw;
    }
}

secret_bytes read_secret_file(const std::string& path, std::size_t max_bytes) {
    // O_NONBLOCK: opening a FIFO must not hang start-up; it is refused as not a regular file below.
    const int raw = ::open(path.c_str(), O_RDONLY | O_CLOEXEC | O_NONBLOCK | O_NOCTTY);
    if (raw < 0) {
        throw key_error("cannot open key file '" + path + "': " + errno_text(errno));
    }
    fd_guard fd(raw);
    struct stat st {};
    if (::fstat(fd.get(), &st) != 0) {
        throw key_error("cannot stat key file '" + path + "': " + errno_text(errno));
    }
    if (!S_ISREG(st.st_mode)) {
        throw key_error("key file '" + path + "' is not a regular file");
    }
    if ((st.st_mode & 077) != 0) {
        throw key_error("key file '" + path + "' has mode " + mode_text(st.st_mode) +
                        ": group or others can access it; run chmod 600 on it (the relay refuses a private key "
                        "others can read)");
    }
    if (st.st_size <= 0 || static_cast<std::size_t>(st.st_size) > max_bytes) {
        throw key_error("key file '" + path + "' has an unexpected size");
    }
    auto text = secret_bytes::allocate(static_cast<std::size_t>(st.st_size));
    std::size_t done = 0;
    while (done < text.size()) {
        const ssize_t r = ::read(fd.get(), text.data() + done, text.size() - done);
        if (r < 0 && errno == EINTR) {
            continue;
        }
        if (r <= 0) {
            throw key_error("cannot read key file '" + path + "'");
        }
        done += static_cast<std::size_t>(r);
    }
    return text;
}

}  // namespace byok::crypto
