#pragma once
// The load generator's report: one JSON document (--json) and a human table
// printed from it, so both always say the same thing.

#include <cstdio>
#include <string>

#include <nlohmann/json_fwd.hpp>

#include "bench/driver.hpp"
#include "bench/request_pool.hpp"

namespace byok::bench {

struct run_description {
    std::string label;
    std::string url;      // base URL
    std::string target;   // request target
    run_options options;
    unsigned keys = 1;
    std::string hist_out;  // --hist-out FILE, or empty
};

[[nodiscard]] nlohmann::json make_report(const run_description& d, const run_result& r, const request_pool& pool);
void print_table(std::FILE* out, const nlohmann::json& report);

}  // namespace byok::bench
