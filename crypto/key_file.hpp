#pragma once
// Reading and writing the small private files keys live in (relay key files,
// the key-list signing key): created with O_EXCL and mode 0600, read only if
// group and others have no access, their text only ever in secret memory.
// Free functions; thread-safe. Errors are crypto::key_error naming the file
// and the reason, never its content.

#include <cstddef>
#include <span>
#include <string>

#include "crypto/secret.hpp"

namespace byok::crypto {

// Creates `path` with mode 0600 (regardless of umask) and writes `text`,
// then fsyncs. Refuses to replace an existing file; removes the file again
// if it cannot be completed, so a half-written key is never left behind.
void write_new_secret_file(const std::string& path, std::span<const unsigned char> text);

// The whole content of `path`, at most `max_bytes`, in secret memory.
// Refuses a missing file, one that is not a regular file (without hanging on
// a FIFO), one that group or others can access, and an empty or larger one.
[[nodiscard]] secret_bytes read_secret_file(const std::string& path, std::size_t max_bytes);

}  // namespace byok::crypto
