#pragma once
// Counters for operators, rendered in the Prometheus text format on a
// separate listener. No label ever carries a key, a seal, a path beyond the
// route kind, or a client address. Thread-safe.

#include <array>
#include <atomic>
#include <cstdint>
#include <map>
#include <memory>
#include <mutex>
#include <string>
#include <tuple>
#include <vector>

#include "relay/errors.hpp"

namespace byok::relay {

class histogram {
public:
    static constexpr std::array<double, 14> bounds{0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1,
                                                   0.25,  0.5,    1,     2.5,  5,     10,  30};
    void observe(double seconds) noexcept;
    void render(std::string& out, const std::string& name, const std::string& labels) const;

private:
    std::array<std::atomic<std::uint64_t>, bounds.size() + 1> counts_{};
    std::atomic<std::uint64_t> sum_us_{0};
};

class metrics {
public:
    explicit metrics(std::vector<std::string> provider_names);

    void request_done(std::string_view provider, std::string_view route, unsigned status);
    void seal_rejected(error_code code) noexcept;
    void upstream_ttfb(std::size_t provider_index, double seconds) noexcept;
    void upstream_total(std::size_t provider_index, double seconds) noexcept;

    std::atomic<std::int64_t> in_flight{0};
    std::atomic<std::int64_t> open_connections{0};

    [[nodiscard]] std::string render() const;

private:
    std::vector<std::string> providers_;
    mutable std::mutex mu_;
    std::map<std::tuple<std::string, std::string, unsigned>, std::uint64_t> requests_;
    std::array<std::atomic<std::uint64_t>, 32> seal_rejections_{};
    std::vector<std::unique_ptr<histogram>> ttfb_;
    std::vector<std::unique_ptr<histogram>> total_;
};

}  // namespace byok::relay
