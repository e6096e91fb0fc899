#pragma once
// Counters for operators, rendered in the Prometheus text format on a
// separate listener. No label ever carries a key, a seal, a path beyond the
// route kind, or a client address. Thread-safe.

#include <array>
#include <atomic>
#include <cstdint>
#include <memory>
#include <string>
#include <string_view>
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

// Appends one unlabelled sample with its HELP and TYPE lines ("gauge" or "counter").
void render_sample(std::string& out, std::string_view name, std::string_view type, std::string_view help,
                   std::int64_t value);

// The route kinds requests are counted by (a label, never a path).
enum class metric_route : std::uint8_t { sealed, keys, healthz, web, preflight, unknown, invalid, grant, grant_mint, count_ };

class metrics {
public:
    explicit metrics(std::vector<std::string> provider_names);

    // provider_index: an index into the configured providers, or no_provider.
    static constexpr std::size_t no_provider = static_cast<std::size_t>(-1);
    void request_done(std::size_t provider_index, metric_route route, unsigned status) noexcept;
    void seal_rejected(error_code code) noexcept;
    // A request that carried a grant: accepted (its key opened), or the
    // error that refused it before any upstream work.
    void grant_accepted() noexcept { grant_accepted_.fetch_add(1, std::memory_order_relaxed); }
    void grant_rejected(error_code code) noexcept;
    void grant_minted() noexcept { grants_minted_.fetch_add(1, std::memory_order_relaxed); }
    void upstream_ttfb(std::size_t provider_index, double seconds) noexcept;
    void upstream_total(std::size_t provider_index, double seconds) noexcept;
    // The time a moderation pre-check added before a request went upstream.
    void moderation_check(std::size_t provider_index, double seconds) noexcept;

    std::atomic<std::int64_t> in_flight{0};
    std::atomic<std::int64_t> open_connections{0};

    // The shared replay store (relay/replay_store.hpp). A claim it did not
    // confirm: no connection (or too many waiting), no reply in timeout_ms,
    // or an error reply.
    enum class store_error : std::uint8_t { down, timeout, error_reply, count_ };
    void replay_store_error(store_error e) noexcept;
    std::atomic<std::int64_t> replay_store_connected{0};      // worker connections up now
    std::atomic<std::uint64_t> replay_store_served_local{0};  // unconfirmed, served (on_error "local")
    std::atomic<std::uint64_t> replay_store_refused{0};       // unconfirmed, answered 503 (on_error "refuse")
    histogram replay_store_seconds;                           // claims answered by the store
    bool replay_store_configured = false;                     // set once at start; renders the above

    [[nodiscard]] std::string render() const;

private:
    static constexpr unsigned min_status = 100;
    static constexpr unsigned status_slots = 500;  // 100..599
    [[nodiscard]] std::size_t slot(std::size_t provider_row, metric_route route, unsigned status) const noexcept;

    std::vector<std::string> providers_;
    // Counted without locks: one slot per (provider or none, route, status).
    std::unique_ptr<std::atomic<std::uint64_t>[]> requests_;
    std::array<std::atomic<std::uint64_t>, 32> seal_rejections_{};
    std::array<std::atomic<std::uint64_t>, 32> grant_rejections_{};
    std::atomic<std::uint64_t> grant_accepted_{0};
    std::atomic<std::uint64_t> grants_minted_{0};
    std::vector<std::unique_ptr<histogram>> ttfb_;
    std::vector<std::unique_ptr<histogram>> total_;
    std::array<std::atomic<std::uint64_t>, static_cast<std::size_t>(store_error::count_)> store_errors_{};
    std::vector<std::unique_ptr<histogram>> moderation_;
};

}  // namespace byok::relay
