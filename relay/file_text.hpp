#pragma once
// Reading the operator's small files (the config, CA bundles, password and
// key-list files) without letting a wrong path hang start-up or a SIGHUP
// reload: a FIFO, a device or a directory is refused before anything is
// read, and so is a file larger than the caller's limit.

#include <cstddef>
#include <optional>
#include <string>

namespace byok::relay {

struct file_text {
    std::optional<std::string> text;  // the whole file, when it could be read
    std::string why;                  // otherwise, what was wrong (for the operator's error message)
};

// Opens `path` without blocking (O_NONBLOCK: opening a FIFO with no writer
// would otherwise wait for one), requires a regular file of at most
// `max_bytes`, and reads all of it.
[[nodiscard]] file_text read_regular_file(const std::string& path, std::size_t max_bytes);

// Whether `path` names a regular file this process can open for reading
// (for files that a library reads later, such as a CA bundle).
[[nodiscard]] std::optional<std::string> regular_file_problem(const std::string& path);

}  // namespace byok::relay
