#include "mock_state.hpp"

#include <nlohmann/json.hpp>

namespace byok::mock {

void mock_state::record(recorded_request r) {
    if (max_records_ == 0) {
        return;
    }
    std::string pair;
    for (const auto& [name, value] : r.headers) {
        if (name == "authorization" || name == "x-api-key" || name == "api-key") {
            pair += value + "\n";
        }
    }
    pair += r.body_sha256;
    const std::lock_guard lock(mutex_);
    if (!pairs_.insert(std::move(pair)).second) {
        ++pairs_repeated_;
    }
    if (records_.size() >= max_records_) {
        records_.pop_front();
    }
    records_.push_back(std::move(r));
}

std::string mock_state::requests_json() const {
    nlohmann::json out = nlohmann::json::array();
    const std::lock_guard lock(mutex_);
    for (const auto& r : records_) {
        nlohmann::json headers = nlohmann::json::object();
        for (const auto& [name, value] : r.headers) {
            auto it = headers.find(name);
            if (it == headers.end()) {
                headers[name] = value;
            } else {
                *it = it->get<std::string>() + ", " + value;
            }
        }
        out.push_back({{"method", r.method},
                       {"target", r.target},
                       {"headers", std::move(headers)},
                       {"body_sha256", r.body_sha256},
                       {"body_bytes", r.body_bytes}});
    }
    // Headers are whatever a client sent: replace invalid UTF-8 instead of throwing.
    return out.dump(-1, ' ', false, nlohmann::json::error_handler_t::replace);
}

std::string mock_state::stats_json() const {
    const std::lock_guard lock(mutex_);
    const nlohmann::json out = {
        {"pairs_distinct", pairs_.size()},
        {"pairs_repeated", pairs_repeated_},
        {"connections_open", open_.load(std::memory_order_relaxed)},
        {"connections_closed", closed_.load(std::memory_order_relaxed)},
        {"streams_aborted", aborted_.load(std::memory_order_relaxed)},
        {"tls_full", tls_full_.load(std::memory_order_relaxed)},
        {"tls_resumed", tls_resumed_.load(std::memory_order_relaxed)},
        {"requests", requests_.load(std::memory_order_relaxed)},
    };
    return out.dump();
}

void mock_state::reset() {
    {
        const std::lock_guard lock(mutex_);
        records_.clear();
        pairs_.clear();
        pairs_repeated_ = 0;
    }
    closed_.store(0, std::memory_order_relaxed);
    aborted_.store(0, std::memory_order_relaxed);
    tls_full_.store(0, std::memory_order_relaxed);
    tls_resumed_.store(0, std::memory_order_relaxed);
    requests_.store(0, std::memory_order_relaxed);
}

}  // namespace byok::mock
