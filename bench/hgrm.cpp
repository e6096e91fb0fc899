#include "bench/hgrm.hpp"

#include <algorithm>
#include <cmath>

namespace byok::bench {
namespace {

constexpr double ns_per_unit = 1e6;  // milliseconds, as wrk2 writes them
constexpr int ticks_per_half_distance = 5;

double ms(std::uint64_t ns) {
    return static_cast<double>(ns) / ns_per_unit;
}

// HdrHistogram's PercentileIterator: a fixed number of steps in each half of
// the remaining distance to 100 %.
double next_level(double level) {
    const auto halvings = static_cast<long>(std::log2(100.0 / (100.0 - level)));
    const double ticks = ticks_per_half_distance * std::ldexp(1.0, static_cast<int>(halvings) + 1);
    return level + 100.0 / ticks;
}

}  // namespace

void write_percentile_distribution(std::FILE* out, const histogram& h) {
    std::fprintf(out, "%12s %14s %10s %14s\n\n", "Value", "Percentile", "TotalCount", "1/(1-Percentile)");
    const std::uint64_t total = h.count();
    if (total > 0) {
        // Each row: the value at which the cumulative count first reaches the
        // row's percentile level (the top of that value's bucket, within the
        // exact min and max), as HdrHistogram's iterator reports it.
        double level = 0;
        std::uint64_t seen = 0;
        auto value_of = [&](std::size_t i) { return std::clamp(histogram::highest_equivalent(i), h.min(), h.max()); };
        std::size_t last = 0;
        for (std::size_t i = 0; i < h.bucket_count() && seen < total; ++i) {
            const std::uint64_t c = h.count_at(i);
            if (c == 0) {
                continue;
            }
            seen += c;
            last = i;
            while (100.0 * static_cast<double>(seen) / static_cast<double>(total) >= level) {
                std::fprintf(out, "%12.3f %2.12f %10llu %14.2f\n", ms(value_of(i)), level / 100.0,
                             static_cast<unsigned long long>(seen), 1.0 / (1.0 - level / 100.0));
                if (seen == total) {
                    break;
                }
                level = next_level(level);
            }
        }
        std::fprintf(out, "%12.3f %2.12f %10llu\n", ms(value_of(last)), 1.0, static_cast<unsigned long long>(total));
    }
    std::fprintf(out, "#[Mean    = %12.3f, StdDeviation   = %12.3f]\n", h.mean() / ns_per_unit, h.stddev() / ns_per_unit);
    std::fprintf(out, "#[Max     = %12.3f, Total count    = %12llu]\n", ms(h.max()),
                 static_cast<unsigned long long>(total));
    std::fprintf(out, "#[Buckets = %12u, SubBuckets     = %12llu]\n", histogram::max_shift + 1,
                 static_cast<unsigned long long>(histogram::linear_limit));
}

std::string hist_file_name(const std::string& base, std::string_view tag) {
    if (tag.empty()) {
        return base;
    }
    const auto slash = base.find_last_of('/');
    const auto dot = base.find_last_of('.');
    if (dot == std::string::npos || dot == 0 || (slash != std::string::npos && dot < slash + 2)) {
        return base + "." + std::string(tag);
    }
    return base.substr(0, dot) + "." + std::string(tag) + base.substr(dot);
}

}  // namespace byok::bench
