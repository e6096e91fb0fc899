// relay::parse_config on arbitrary text: either a config, or a config_error
// (whose message names a field); never a crash or another exception.
#include "relay/config.hpp"

#include "fuzz_support.hpp"

extern "C" int LLVMFuzzerTestOneInput(const std::uint8_t* data, std::size_t size) {
    try {
        const auto cfg = byok::relay::parse_config(byok::fuzz::as_view(data, size), byok::fuzz::temp_dir());
        BYOK_FUZZ_CHECK(cfg != nullptr);
        BYOK_FUZZ_CHECK(cfg->threads >= 1);
        for (const auto& p : cfg->providers) {
            BYOK_FUZZ_CHECK(!p.name.empty() && !p.host.empty() && !p.paths.empty());
            BYOK_FUZZ_CHECK(p.host_header.find_first_of("\r\n") == std::string::npos);
            for (const auto& path : p.paths) {
                BYOK_FUZZ_CHECK(!path.empty() && path.front() == '/');
            }
        }
    } catch (const byok::relay::config_error& e) {
        BYOK_FUZZ_CHECK(std::string_view(e.what()).substr(0, 7) == "config:");
    }
    return 0;
}
