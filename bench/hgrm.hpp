#pragma once
// HdrHistogram's percentile-distribution text (the "hgrm" format that
// HdrHistogram's outputPercentileDistribution, wrk2 and the HdrHistogram
// plotter use): a "Value Percentile TotalCount 1/(1-Percentile)" table, five
// rows per halving of the distance to 100 %, then a "#[Mean ...]" footer.
// Values are written in milliseconds with three decimals.

#include <cstdio>
#include <string>
#include <string_view>

#include "bench/histogram.hpp"

namespace byok::bench {

// Writes h (values in ns) to out. Not thread-safe with writers of h.
void write_percentile_distribution(std::FILE* out, const histogram& h);

// The file for one histogram of a --hist-out FILE: FILE itself for the
// latency histogram (tag empty), else FILE with ".<tag>" put before its
// extension ("run.hgrm" + "first-event" -> "run.first-event.hgrm"; a name
// without an extension gets ".<tag>" appended).
[[nodiscard]] std::string hist_file_name(const std::string& base, std::string_view tag);

}  // namespace byok::bench
