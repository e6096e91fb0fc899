#pragma once
// A log-linear latency histogram in the manner of HdrHistogram: values (in
// nanoseconds) below 2048 are counted exactly; above, each power-of-two range
// is cut into 1024 equal sub-buckets, so any recorded value is known to
// within 1/1024 (about 0.1 %) whatever its magnitude. Fixed memory (about
// 340 KiB), no allocation while recording, O(1) record, exact min and max.
//
// Not thread-safe: one histogram per load-generator thread, merged at the end.

#include <algorithm>
#include <bit>
#include <cmath>
#include <cstdint>
#include <limits>
#include <vector>

namespace byok::bench {

class histogram {
public:
    static constexpr unsigned sub_bits = 10;                      // 1024 sub-buckets per power of two
    static constexpr std::uint64_t linear_limit = 2u << sub_bits;  // 2048: below this, exact
    static constexpr unsigned max_shift = 40;                      // values up to ~2^51 ns (26 days)

    histogram() : counts_(index_of_shift(max_shift + 1), 0) {}

    void record(std::uint64_t v) noexcept {
        const std::size_t i = std::min(index(v), counts_.size() - 1);
        ++counts_[i];
        ++total_;
        min_ = std::min(min_, v);
        max_ = std::max(max_, v);
    }

    void merge(const histogram& o) noexcept {
        for (std::size_t i = 0; i < counts_.size(); ++i) {
            counts_[i] += o.counts_[i];
        }
        total_ += o.total_;
        min_ = std::min(min_, o.min_);
        max_ = std::max(max_, o.max_);
    }

    [[nodiscard]] std::uint64_t count() const noexcept { return total_; }
    [[nodiscard]] std::uint64_t min() const noexcept { return total_ == 0 ? 0 : min_; }
    [[nodiscard]] std::uint64_t max() const noexcept { return max_; }

    // The smallest recorded value v such that at least p % of the values are
    // <= v, reported as the top of its sub-bucket (HdrHistogram's "highest
    // equivalent value"), never above the exact maximum.
    [[nodiscard]] std::uint64_t percentile(double p) const noexcept {
        if (total_ == 0) {
            return 0;
        }
        const double want = std::clamp(p, 0.0, 100.0) / 100.0 * static_cast<double>(total_);
        auto rank = static_cast<std::uint64_t>(want);
        if (static_cast<double>(rank) < want || rank == 0) {
            ++rank;  // ceil, and at least the first value
        }
        std::uint64_t seen = 0;
        for (std::size_t i = 0; i < counts_.size(); ++i) {
            seen += counts_[i];
            if (seen >= rank) {
                return std::clamp(highest_equivalent(i), min(), max_);
            }
        }
        return max_;
    }

    // Mean and standard deviation, each value taken as the middle of its
    // sub-bucket (HdrHistogram's "median equivalent value").
    [[nodiscard]] double mean() const noexcept {
        if (total_ == 0) {
            return 0;
        }
        long double sum = 0;
        for (std::size_t i = 0; i < counts_.size(); ++i) {
            if (counts_[i] != 0) {
                sum += static_cast<long double>(counts_[i]) * middle(i);
            }
        }
        return static_cast<double>(sum / static_cast<long double>(total_));
    }
    [[nodiscard]] double stddev() const noexcept {
        if (total_ == 0) {
            return 0;
        }
        const long double m = mean();
        long double sum = 0;
        for (std::size_t i = 0; i < counts_.size(); ++i) {
            if (counts_[i] != 0) {
                const long double d = middle(i) - m;
                sum += static_cast<long double>(counts_[i]) * d * d;
            }
        }
        return static_cast<double>(std::sqrt(sum / static_cast<long double>(total_)));
    }

    // The buckets, in value order, for writers of other formats (bench/hgrm.hpp).
    [[nodiscard]] std::size_t bucket_count() const noexcept { return counts_.size(); }
    [[nodiscard]] std::uint64_t count_at(std::size_t i) const noexcept { return counts_[i]; }

    // Bucket index of a value, and the range of values a bucket stands for.
    [[nodiscard]] static std::size_t index(std::uint64_t v) noexcept {
        if (v < linear_limit) {
            return static_cast<std::size_t>(v);
        }
        const unsigned shift = static_cast<unsigned>(std::bit_width(v)) - 1 - sub_bits;  // >= 1
        const std::uint64_t sub = v >> shift;  // in [1024, 2047]
        return index_of_shift(shift) + static_cast<std::size_t>(sub - (1u << sub_bits));
    }
    [[nodiscard]] static std::uint64_t lowest(std::size_t i) noexcept {
        if (i < linear_limit) {
            return i;
        }
        const std::size_t k = (i - linear_limit) >> sub_bits;  // shift - 1
        const std::uint64_t sub = (i - linear_limit) & ((1u << sub_bits) - 1);
        return (sub + (1u << sub_bits)) << (k + 1);
    }
    [[nodiscard]] static std::uint64_t highest_equivalent(std::size_t i) noexcept {
        if (i < linear_limit) {
            return i;
        }
        const std::size_t k = (i - linear_limit) >> sub_bits;
        return lowest(i) + (std::uint64_t{1} << (k + 1)) - 1;
    }

private:
    [[nodiscard]] static long double middle(std::size_t i) noexcept {
        return (static_cast<long double>(lowest(i)) + static_cast<long double>(highest_equivalent(i))) / 2;
    }
    static constexpr std::size_t index_of_shift(unsigned shift) noexcept {
        return linear_limit + (static_cast<std::size_t>(shift) - 1) * (std::size_t{1} << sub_bits);
    }

    std::vector<std::uint64_t> counts_;
    std::uint64_t total_ = 0;
    std::uint64_t min_ = std::numeric_limits<std::uint64_t>::max();
    std::uint64_t max_ = 0;
};

}  // namespace byok::bench
