#include "relay/file_text.hpp"

#include <algorithm>
#include <cerrno>
#include <cstring>

#include <fcntl.h>
#include <sys/stat.h>
#include <unistd.h>

namespace byok::relay {

namespace {

struct fd_closer {
    int fd;
    ~fd_closer() {
        if (fd >= 0) {
            ::close(fd);
        }
    }
};

// Opens and checks; -1 with `why` set when the path is not a readable regular file.
int open_regular(const std::string& path, struct stat& st, std::string& why) {
    const int fd = ::open(path.c_str(), O_RDONLY | O_CLOEXEC | O_NONBLOCK | O_NOCTTY);
    if (fd < 0) {
        why = std::strerror(errno);
        return -1;
    }
    if (::fstat(fd, &st) != 0 || !S_ISREG(st.st_mode)) {
        why = "not a regular file";
        ::close(fd);
        return -1;
    }
    return fd;
}

}  // namespace

file_text read_regular_file(const std::string& path, std::size_t max_bytes) {
    file_text out;
    struct stat st {};
    const fd_closer fd{open_regular(path, st, out.why)};
    if (fd.fd < 0) {
        return out;
    }
    if (static_cast<unsigned long long>(st.st_size) > max_bytes) {
        out.why = "larger than " + std::to_string(max_bytes) + " bytes";
        return out;
    }
    std::string text(static_cast<std::size_t>(st.st_size) + 1, '\0');  // one more: a file that grew is noticed
    std::size_t done = 0;
    for (;;) {
        const ssize_t r = ::read(fd.fd, text.data() + done, text.size() - done);
        if (r < 0 && errno == EINTR) {
            continue;
        }
        if (r < 0) {
            out.why = std::strerror(errno);
            return out;
        }
        if (r == 0) {
            break;
        }
        done += static_cast<std::size_t>(r);
        if (done > max_bytes) {
            out.why = "larger than " + std::to_string(max_bytes) + " bytes";
            return out;
        }
        if (done == text.size()) {
            text.resize(std::min(text.size() * 2, max_bytes + 1));
        }
    }
    text.resize(done);
    out.text = std::move(text);
    return out;
}

std::optional<std::string> regular_file_problem(const std::string& path) {
    struct stat st {};
    std::string why;
    const fd_closer fd{open_regular(path, st, why)};
    if (fd.fd < 0) {
        return why;
    }
    return std::nullopt;
}

}  // namespace byok::relay
