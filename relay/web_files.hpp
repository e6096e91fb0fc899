#pragma once
// The files under `web_root` (the demo page and the browser library), read
// once when the relay starts, so no worker ever blocks on the disk for a
// request. Immutable once loaded; shared by every thread.
//
// Served: regular files whose type the relay knows (html, js, mjs, cjs, css,
// json, map, wasm, svg, png, ico, txt, md; other files are not loaded), not
// hidden (no path segment starting with '.'), at most 16 MiB each and 64 MiB
// in all; symbolic links are not followed.

#include <map>
#include <memory>
#include <string>
#include <string_view>

namespace byok::relay {

class web_files {
public:
    struct file {
        std::shared_ptr<const std::string> content;
        std::string_view content_type;
    };

    // Reads every servable file under `root`. Throws config_error naming
    // web_root if it is not a readable directory or holds too much.
    [[nodiscard]] static std::shared_ptr<const web_files> load(const std::string& root);

    // `rel`: the path below the root, "" or ending in '/' for its index.html.
    [[nodiscard]] const file* find(std::string_view rel) const;
    [[nodiscard]] std::size_t count() const noexcept { return files_.size(); }
    [[nodiscard]] std::size_t bytes() const noexcept { return bytes_; }

    // The Content-Type for a file name, or "" if the relay does not serve that type.
    [[nodiscard]] static std::string_view type_for(std::string_view name) noexcept;

private:
    web_files() = default;
    std::map<std::string, file, std::less<>> files_;
    std::size_t bytes_ = 0;
};

}  // namespace byok::relay
