#include "relay/web_files.hpp"

#include <array>
#include <filesystem>
#include <fstream>
#include <system_error>

#include "relay/config.hpp"

namespace byok::relay {
namespace {

constexpr std::size_t max_file = 16u << 20;
constexpr std::size_t max_total = 64u << 20;

[[noreturn]] void fail(const std::string& why) { throw config_error("config: \"web_root\" " + why); }

}  // namespace

std::string_view web_files::type_for(std::string_view name) noexcept {
    struct type {
        std::string_view ext;
        std::string_view content_type;
    };
    static constexpr std::array<type, 13> types{{
        {".html", "text/html; charset=utf-8"},       {".js", "text/javascript; charset=utf-8"},
        {".mjs", "text/javascript; charset=utf-8"},  {".cjs", "text/javascript; charset=utf-8"},
        {".css", "text/css; charset=utf-8"},         {".json", "application/json"},
        {".wasm", "application/wasm"},               {".svg", "image/svg+xml"},
        {".png", "image/png"},                       {".ico", "image/x-icon"},
        {".txt", "text/plain; charset=utf-8"},       {".md", "text/plain; charset=utf-8"},
        {".map", "application/json"},
    }};
    const auto dot = name.rfind('.');
    const std::string_view ext = dot == std::string_view::npos ? "" : name.substr(dot);
    for (const auto& t : types) {
        if (t.ext == ext) {
            return t.content_type;
        }
    }
    return "";
}

std::shared_ptr<const web_files> web_files::load(const std::string& root) {
    namespace fs = std::filesystem;
    std::error_code ec;
    if (!fs::is_directory(root, ec)) {
        fail("is not a readable directory: " + root);
    }
    std::shared_ptr<web_files> out(new web_files());
    fs::recursive_directory_iterator it(root, fs::directory_options::none, ec);
    if (ec) {
        fail("cannot be read: " + root);
    }
    for (const fs::recursive_directory_iterator end; it != end; it.increment(ec)) {
        if (ec) {
            fail("cannot be read: " + root);
        }
        const auto name = it->path().filename().string();
        if (!name.empty() && name.front() == '.') {
            if (it->is_directory(ec)) {
                it.disable_recursion_pending();
            }
            continue;
        }
        if (it->is_symlink(ec) || !it->is_regular_file(ec)) {
            continue;
        }
        const std::string_view type = type_for(name);
        if (type.empty()) {
            continue;
        }
        const auto size = it->file_size(ec);
        if (ec || size > max_file) {
            continue;
        }
        if (out->bytes_ + size > max_total) {
            fail("holds more than 64 MiB of servable files: " + root);
        }
        std::ifstream in(it->path(), std::ios::binary);
        auto content = std::make_shared<std::string>(static_cast<std::size_t>(size), '\0');
        if (!in.read(content->data(), static_cast<std::streamsize>(size))) {
            continue;  // changed or unreadable while loading: not served
        }
        out->bytes_ += size;
        out->files_.emplace(fs::relative(it->path(), root).generic_string(), file{std::move(content), type});
    }
    return out;
}

const web_files::file* web_files::find(std::string_view rel) const {
    std::string key(rel);
    if (key.empty() || key.back() == '/') {
        key += "index.html";
    }
    const auto it = files_.find(key);
    return it == files_.end() ? nullptr : &it->second;
}

}  // namespace byok::relay
