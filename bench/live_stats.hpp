#pragma once
// What a run has done so far, for the progress line: each load-generator
// thread records into its own slot (a mutex it almost never contends for);
// take() may be called from any thread at any time.

#include <cstdint>
#include <memory>
#include <mutex>
#include <vector>

#include "bench/histogram.hpp"

namespace byok::bench {

class live_stats {
public:
    struct snapshot {
        std::uint64_t answers = 0;   // every answer so far, warm-up included
        std::uint64_t errors = 0;    // as run_result::errors
        std::uint64_t p99_ns = 0;    // latency p99 of those answers
    };

    explicit live_stats(unsigned slots) {
        for (unsigned i = 0; i < slots; ++i) {
            slots_.push_back(std::make_unique<slot>());
        }
    }

    // Called by the thread that owns the slot.
    void answer(unsigned s, std::uint64_t latency_ns) {
        auto& x = *slots_.at(s);
        const std::lock_guard lock(x.m);
        x.h.record(latency_ns);
    }
    void error(unsigned s) {
        auto& x = *slots_.at(s);
        const std::lock_guard lock(x.m);
        ++x.errors;
    }

    [[nodiscard]] snapshot take() const {
        histogram all;
        snapshot out;
        for (const auto& x : slots_) {
            const std::lock_guard lock(x->m);
            all.merge(x->h);
            out.errors += x->errors;
        }
        out.answers = all.count();
        out.p99_ns = all.percentile(99);
        return out;
    }

    [[nodiscard]] unsigned slots() const { return static_cast<unsigned>(slots_.size()); }

private:
    struct slot {
        mutable std::mutex m;
        histogram h;
        std::uint64_t errors = 0;
    };
    std::vector<std::unique_ptr<slot>> slots_;
};

}  // namespace byok::bench
