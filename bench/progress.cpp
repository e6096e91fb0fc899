#include "bench/progress.hpp"

#include <algorithm>

namespace byok::bench {

progress_line::progress_line(std::FILE* out, bool in_place, double warmup_s, double total_s, const live_stats& stats)
    : out_(out), in_place_(in_place), warmup_s_(warmup_s), total_s_(total_s), stats_(stats),
      start_(std::chrono::steady_clock::now()), last_time_(start_), thread_([this] { loop(); }) {}

progress_line::~progress_line() {
    stop();
}

void progress_line::stop() {
    {
        const std::lock_guard lock(m_);
        if (stopping_) {
            return;
        }
        stopping_ = true;
    }
    cv_.notify_all();
    thread_.join();
    if (in_place_) {
        print(true);  // the final figures stay on screen, and the report starts on a fresh line
    }
}

void progress_line::loop() {
    std::unique_lock lock(m_);
    for (int tick = 1;; ++tick) {
        if (cv_.wait_until(lock, start_ + std::chrono::seconds(tick), [this] { return stopping_; })) {
            return;
        }
        lock.unlock();
        print(false);
        lock.lock();
    }
}

void progress_line::print(bool last) {
    const auto now = std::chrono::steady_clock::now();
    const auto s = stats_.take();
    const double elapsed = std::chrono::duration<double>(now - start_).count();
    const double since = std::chrono::duration<double>(now - last_time_).count();
    const double rate = since > 0 ? static_cast<double>(s.answers - last_answers_) / since : 0.0;
    last_time_ = now;
    last_answers_ = s.answers;
    std::fprintf(out_, "%s[%6.1f/%.1f s] %10llu requests %9.0f req/s %8llu errors  p99 %9.3f ms%s%s",
                 in_place_ ? "\r\x1b[2K" : "", std::min(elapsed, total_s_), total_s_,
                 static_cast<unsigned long long>(s.answers), rate, static_cast<unsigned long long>(s.errors),
                 static_cast<double>(s.p99_ns) / 1e6, elapsed < warmup_s_ ? "  (warm-up)" : "",
                 in_place_ && !last ? "" : "\n");
    std::fflush(out_);
}

}  // namespace byok::bench
