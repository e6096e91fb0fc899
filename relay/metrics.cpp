#include "relay/metrics.hpp"

#include <cstdio>

namespace byok::relay {

void histogram::observe(double seconds) noexcept {
    std::size_t i = 0;
    while (i < bounds.size() && seconds > bounds[i]) {
        ++i;
    }
    counts_[i].fetch_add(1, std::memory_order_relaxed);
    sum_us_.fetch_add(static_cast<std::uint64_t>(seconds * 1e6), std::memory_order_relaxed);
}

void histogram::render(std::string& out, const std::string& name, const std::string& labels) const {
    std::uint64_t cumulative = 0;
    char buf[64];
    for (std::size_t i = 0; i <= bounds.size(); ++i) {
        cumulative += counts_[i].load(std::memory_order_relaxed);
        if (i < bounds.size()) {
            std::snprintf(buf, sizeof buf, "%g", bounds[i]);
        } else {
            std::snprintf(buf, sizeof buf, "+Inf");
        }
        out += name + "_bucket{" + labels + (labels.empty() ? "" : ",") + "le=\"" + buf + "\"} " +
               std::to_string(cumulative) + "\n";
    }
    std::snprintf(buf, sizeof buf, "%.6f", static_cast<double>(sum_us_.load(std::memory_order_relaxed)) / 1e6);
    out += name + "_sum{" + labels + "} " + buf + "\n";
    out += name + "_count{" + labels + "} " + std::to_string(cumulative) + "\n";
}

namespace {
constexpr std::array<const char*, static_cast<std::size_t>(metric_route::count_)> route_names{
    "sealed", "keys", "healthz", "web", "preflight", "unknown", "invalid", "grant", "grant_mint"};
}  // namespace

metrics::metrics(std::vector<std::string> provider_names)
    : providers_(std::move(provider_names)),
      requests_(new std::atomic<std::uint64_t>[(providers_.size() + 1) * route_names.size() * status_slots]()) {
    for (std::size_t i = 0; i < providers_.size(); ++i) {
        ttfb_.push_back(std::make_unique<histogram>());
        total_.push_back(std::make_unique<histogram>());
        moderation_.push_back(std::make_unique<histogram>());
    }
}

std::size_t metrics::slot(std::size_t provider_row, metric_route route, unsigned status) const noexcept {
    return (provider_row * route_names.size() + static_cast<std::size_t>(route)) * status_slots +
           (status - min_status);
}

void metrics::request_done(std::size_t provider_index, metric_route route, unsigned status) noexcept {
    if (status < min_status || status >= min_status + status_slots) {
        status = 599;  // never happens for statuses we send; keeps the index in range
    }
    const std::size_t row = provider_index < providers_.size() ? provider_index + 1 : 0;
    requests_[slot(row, route, status)].fetch_add(1, std::memory_order_relaxed);
}

void metrics::seal_rejected(error_code code) noexcept {
    seal_rejections_[static_cast<std::size_t>(code)].fetch_add(1, std::memory_order_relaxed);
}

void metrics::grant_rejected(error_code code) noexcept {
    grant_rejections_[static_cast<std::size_t>(code)].fetch_add(1, std::memory_order_relaxed);
}

void metrics::replay_store_error(store_error e) noexcept {
    store_errors_[static_cast<std::size_t>(e)].fetch_add(1, std::memory_order_relaxed);
}

void metrics::upstream_ttfb(std::size_t provider_index, double seconds) noexcept {
    if (provider_index < ttfb_.size()) {
        ttfb_[provider_index]->observe(seconds);
    }
}

void metrics::moderation_check(std::size_t provider_index, double seconds) noexcept {
    if (provider_index < moderation_.size()) {
        moderation_[provider_index]->observe(seconds);
    }
}

void metrics::upstream_total(std::size_t provider_index, double seconds) noexcept {
    if (provider_index < total_.size()) {
        total_[provider_index]->observe(seconds);
    }
}

std::string metrics::render() const {
    std::string out;
    out += "# HELP byok_requests_total Requests answered, by provider, route kind and HTTP status.\n";
    out += "# TYPE byok_requests_total counter\n";
    for (std::size_t row = 0; row <= providers_.size(); ++row) {
        const std::string provider = row == 0 ? "" : providers_[row - 1];
        for (std::size_t r = 0; r < route_names.size(); ++r) {
            for (unsigned st = min_status; st < min_status + status_slots; ++st) {
                const auto n = requests_[slot(row, static_cast<metric_route>(r), st)].load(std::memory_order_relaxed);
                if (n != 0) {
                    out += "byok_requests_total{provider=\"" + provider + "\",route=\"" + route_names[r] +
                           "\",status=\"" + std::to_string(st) + "\"} " + std::to_string(n) + "\n";
                }
            }
        }
    }
    out += "# HELP byok_seal_rejections_total Sealed requests refused before any upstream work, by error code.\n";
    out += "# TYPE byok_seal_rejections_total counter\n";
    for (const auto code : {error_code::missing_seal, error_code::unknown_kid, error_code::bad_seal,
                            error_code::seal_expired, error_code::seal_mismatch, error_code::seal_replayed}) {
        out += "byok_seal_rejections_total{code=\"" + std::string(describe(code).code) + "\"} " +
               std::to_string(seal_rejections_[static_cast<std::size_t>(code)].load(std::memory_order_relaxed)) +
               "\n";
    }
    out += "# HELP byok_grant_requests_total Requests that carried a grant, by outcome: accepted (every check "
           "passed) or the error that refused them. Never by grant.\n";
    out += "# TYPE byok_grant_requests_total counter\n";
    out += "byok_grant_requests_total{outcome=\"accepted\"} " +
           std::to_string(grant_accepted_.load(std::memory_order_relaxed)) + "\n";
    for (const auto code : {error_code::bad_grant, error_code::grant_expired, error_code::missing_proof,
                            error_code::bad_proof, error_code::proof_replayed, error_code::origin_mismatch,
                            error_code::path_not_allowed, error_code::model_not_allowed, error_code::overloaded}) {
        out += "byok_grant_requests_total{outcome=\"" + std::string(describe(code).code) + "\"} " +
               std::to_string(grant_rejections_[static_cast<std::size_t>(code)].load(std::memory_order_relaxed)) +
               "\n";
    }
    render_sample(out, "byok_grants_minted_total", "counter", "Grants minted by POST /v1/grants.",
                  static_cast<std::int64_t>(grants_minted_.load(std::memory_order_relaxed)));
    out += "# HELP byok_upstream_ttfb_seconds Time from sending the request upstream to its response head.\n";
    out += "# TYPE byok_upstream_ttfb_seconds histogram\n";
    for (std::size_t i = 0; i < providers_.size(); ++i) {
        ttfb_[i]->render(out, "byok_upstream_ttfb_seconds", "provider=\"" + providers_[i] + "\"");
    }
    out += "# HELP byok_upstream_duration_seconds Time from sending the request upstream to the end of its body.\n";
    out += "# TYPE byok_upstream_duration_seconds histogram\n";
    for (std::size_t i = 0; i < providers_.size(); ++i) {
        total_[i]->render(out, "byok_upstream_duration_seconds", "provider=\"" + providers_[i] + "\"");
    }
    if (replay_store_configured) {
        out += "# HELP byok_replay_store_errors_total Claims the shared replay store did not confirm, by reason.\n";
        out += "# TYPE byok_replay_store_errors_total counter\n";
        constexpr std::array<const char*, static_cast<std::size_t>(store_error::count_)> reasons{
            "down", "timeout", "error_reply"};
        for (std::size_t i = 0; i < reasons.size(); ++i) {
            out += std::string("byok_replay_store_errors_total{reason=\"") + reasons[i] + "\"} " +
                   std::to_string(store_errors_[i].load(std::memory_order_relaxed)) + "\n";
        }
        render_sample(out, "byok_replay_store_unconfirmed_served_total", "counter",
                      "Seals served on the local replay cache alone because the store could not confirm (on_error local).",
                      static_cast<std::int64_t>(replay_store_served_local.load(std::memory_order_relaxed)));
        render_sample(out, "byok_replay_store_unconfirmed_refused_total", "counter",
                      "Seals answered 503 because the store could not confirm (on_error refuse).",
                      static_cast<std::int64_t>(replay_store_refused.load(std::memory_order_relaxed)));
        render_sample(out, "byok_replay_store_connected", "gauge",
                      "Worker connections to the shared replay store that are up.",
                      replay_store_connected.load(std::memory_order_relaxed));
        out += "# HELP byok_replay_store_seconds Time from sending a claim to the store's answer.\n";
        out += "# TYPE byok_replay_store_seconds histogram\n";
        replay_store_seconds.render(out, "byok_replay_store_seconds", "");
    }
    out += "# HELP byok_moderation_check_seconds Time a moderation pre-check added before forwarding.\n";
    out += "# TYPE byok_moderation_check_seconds histogram\n";
    for (std::size_t i = 0; i < providers_.size(); ++i) {
        moderation_[i]->render(out, "byok_moderation_check_seconds", "provider=\"" + providers_[i] + "\"");
    }
    render_sample(out, "byok_in_flight_requests", "gauge", "Sealed requests being relayed now.", in_flight.load());
    render_sample(out, "byok_open_connections", "gauge", "Client connections open now.", open_connections.load());
    return out;
}

void render_sample(std::string& out, std::string_view name, std::string_view type, std::string_view help,
                   std::int64_t value) {
    out.append("# HELP ").append(name).append(" ").append(help).append("\n");
    out.append("# TYPE ").append(name).append(" ").append(type).append("\n");
    out.append(name).append(" ").append(std::to_string(value)).append("\n");
}

}  // namespace byok::relay
