#include "relay/grant_page.hpp"

#include <map>

#include "relay/web_files.hpp"

namespace byok::relay {

const grant_page_file* find_grant_page_file(std::string_view rel) {
    // Built once, on first use; the bodies are shared by every answer.
    static const std::map<std::string, grant_page_file, std::less<>> files = [] {
        std::map<std::string, grant_page_file, std::less<>> m;
        for (const auto& f : grant_page_files()) {
            // (Appended, not "/" + std::string: GCC 12 at -O2 reports a false
            // -Wrestrict overlap for a literal + std::string&&, which fails a
            // Release build with BYOK_WERROR.)
            std::string key;
            if (f.name != "grant.html") {
                key.append("/").append(f.name);
            }
            m.emplace(key, grant_page_file{std::make_shared<const std::string>(f.content),
                                           web_files::type_for(f.name)});
        }
        return m;
    }();
    const auto it = files.find(rel);
    return it == files.end() ? nullptr : &it->second;
}

}  // namespace byok::relay
