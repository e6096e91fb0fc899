#pragma once
// The live progress line on stderr, once a second while a run goes on (as oha
// and k6 show one): elapsed/total seconds, requests answered, requests per
// second over the last second, errors, p99 so far. On a terminal the line is
// rewritten in place; elsewhere (--progress into a pipe or file) one line is
// written per second.

#include <chrono>
#include <condition_variable>
#include <cstdio>
#include <mutex>
#include <thread>

#include "bench/live_stats.hpp"

namespace byok::bench {

class progress_line {
public:
    // Starts printing at once; stats must outlive this object.
    progress_line(std::FILE* out, bool in_place, double warmup_s, double total_s, const live_stats& stats);
    ~progress_line();
    progress_line(const progress_line&) = delete;
    progress_line& operator=(const progress_line&) = delete;

    // Stops the thread and ends the line (idempotent).
    void stop();

private:
    void loop();
    void print(bool last);

    std::FILE* out_;
    bool in_place_;
    double warmup_s_;
    double total_s_;
    const live_stats& stats_;
    std::chrono::steady_clock::time_point start_;
    std::chrono::steady_clock::time_point last_time_;
    std::uint64_t last_answers_ = 0;
    std::mutex m_;
    std::condition_variable cv_;
    bool stopping_ = false;
    std::thread thread_;
};

}  // namespace byok::bench
