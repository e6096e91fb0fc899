#include "relay/access_log.hpp"

#include <algorithm>
#include <atomic>
#include <cerrno>
#include <chrono>
#include <climits>
#include <charconv>
#include <condition_variable>
#include <cstring>
#include <cstdio>
#include <cstdlib>
#include <ctime>
#include <mutex>
#include <string_view>
#include <type_traits>
#include <thread>
#include <vector>

#include <pthread.h>
#include <signal.h>
#include <unistd.h>

namespace byok::relay {
namespace {

constexpr std::size_t queue_bytes = std::size_t{1} << 20;
constexpr std::size_t operational_reserve = std::size_t{64} << 10;  // only log_line may use it
constexpr auto operational_wait = std::chrono::milliseconds(200);
constexpr auto stop_wait = std::chrono::seconds(5);
// While lines keep coming, the writer gathers them for this long between
// writes, and a worker wakes it only past `urgent_bytes` (or for an
// operational line): waking it for every request cost a futex wake and a
// context switch per request (a quarter of the relay's CPU in a profile).
constexpr auto gather_for = std::chrono::milliseconds(20);
constexpr std::size_t urgent_bytes = queue_bytes / 4;

// Returns false if stderr refused the bytes (closed, or an error other than EINTR).
bool write_all(const char* p, std::size_t n) noexcept {
    while (n > 0) {
        const ssize_t w = ::write(STDERR_FILENO, p, n);
        if (w < 0 && errno == EINTR) {
            continue;
        }
        if (w <= 0) {
            return false;
        }
        p += w;
        n -= static_cast<std::size_t>(w);
    }
    return true;
}

struct log_queue {
    enum class mode { fresh, running, direct, abandoned };

    std::mutex mu;
    std::condition_variable wake;  // the writer waits here for lines or a stop
    std::condition_variable room;  // operational lines wait here for room; stop waits for the writer
    std::vector<char> pending;     // whole lines, oldest first
    std::vector<char> batch;       // being written by the writer, outside the lock
    mode state = mode::fresh;
    bool stopping = false;
    bool writer_asleep = false;
    bool writer_done = false;
    int waiting_for_room = 0;
    bool exit_hook = false;
    std::thread writer;
    std::atomic<std::uint64_t> dropped{0};
};

// Never destroyed: lines logged from other static destructors still find it.
log_queue& queue() noexcept {
    static log_queue* const q = new log_queue;
    return *q;
}

// Writes a batch in pieces of at most PIPE_BUF bytes, each cut after a
// newline, so every write(2) is atomic on a pipe and holds whole lines.
void write_lines(log_queue& q, const std::vector<char>& b) noexcept {
    const char* p = b.data();
    const char* const end = p + b.size();
    while (p < end) {
        std::size_t n = std::min<std::size_t>(PIPE_BUF, static_cast<std::size_t>(end - p));
        if (p + n < end) {
            const char* cut = p + n;
            while (cut > p && cut[-1] != '\n') {
                --cut;
            }
            if (cut > p) {
                n = static_cast<std::size_t>(cut - p);
            }
        }
        if (!write_all(p, n)) {
            q.dropped.fetch_add(static_cast<std::uint64_t>(std::count(p, end, '\n')), std::memory_order_relaxed);
            return;
        }
        p += n;
    }
}

void writer_main(log_queue& q) noexcept {
    // Signals go to the other threads; a write to a closed pipe is EPIPE here.
    sigset_t all;
    sigfillset(&all);
    pthread_sigmask(SIG_BLOCK, &all, nullptr);
    std::unique_lock lock(q.mu);
    for (;;) {
        while (q.pending.empty() && !q.stopping) {
            q.writer_asleep = true;
            q.wake.wait(lock);
        }
        q.writer_asleep = false;
        if (q.pending.empty()) {
            break;  // stopping, and everything is written
        }
        q.batch.swap(q.pending);
        if (q.waiting_for_room > 0) {
            q.room.notify_all();
        }
        lock.unlock();
        write_lines(q, q.batch);
        q.batch.clear();
        lock.lock();
        // Busy: gather more lines before the next write (not asleep, so
        // workers do not signal); idle: the loop above sleeps until woken.
        if (!q.pending.empty() || q.stopping) {
            continue;
        }
        q.wake.wait_for(lock, gather_for, [&] { return q.stopping || q.pending.size() >= urgent_bytes; });
    }
    q.writer_done = true;
    q.room.notify_all();
}

void stop_at_exit() noexcept { stop_access_log(); }

// Called with q.mu held.
void start_locked(log_queue& q) noexcept {
    if (q.state == log_queue::mode::running || q.state == log_queue::mode::abandoned) {
        return;
    }
    try {
        q.pending.reserve(queue_bytes);
        q.batch.reserve(queue_bytes);
        q.stopping = false;
        q.writer_done = false;
        q.writer = std::thread(writer_main, std::ref(q));
        q.state = log_queue::mode::running;
    } catch (...) {
        q.state = log_queue::mode::direct;  // no thread, no memory: write directly, as a fallback
        return;
    }
    if (!q.exit_hook) {
        q.exit_hook = std::atexit(stop_at_exit) == 0;
    }
}

void submit(const char* line, std::size_t n, bool operational) noexcept {
    auto& q = queue();
    std::unique_lock lock(q.mu);
    if (q.state == log_queue::mode::fresh) {
        start_locked(q);
    }
    if (q.state != log_queue::mode::running) {
        lock.unlock();
        write_all(line, n);  // stopped (or at exit): one line, one write, as before the queue
        return;
    }
    const std::size_t limit = operational ? queue_bytes : queue_bytes - operational_reserve;
    if (q.pending.size() + n > limit) {
        bool fits = false;
        if (operational) {
            ++q.waiting_for_room;
            fits = q.room.wait_for(lock, operational_wait, [&] {
                return q.pending.size() + n <= limit || q.state != log_queue::mode::running;
            });
            --q.waiting_for_room;
            if (fits && q.state != log_queue::mode::running) {
                lock.unlock();
                write_all(line, n);
                return;
            }
        }
        if (!fits) {
            q.dropped.fetch_add(1, std::memory_order_relaxed);
            return;
        }
    }
    q.pending.insert(q.pending.end(), line, line + n);
    if (q.writer_asleep || operational || q.pending.size() >= urgent_bytes) {
        q.writer_asleep = false;
        q.wake.notify_one();
    }
}

std::size_t timestamp(char* buf, std::size_t size) noexcept {
    // "2026-11-27T09:11:06.123Z": the part up to the second is formatted
    // once a second per thread, the milliseconds every time.
    thread_local std::time_t cached_for = -1;
    thread_local char cached[24];
    thread_local std::size_t cached_len = 0;
    const auto now = std::chrono::system_clock::now();
    const auto t = std::chrono::system_clock::to_time_t(now);
    const auto ms = std::chrono::duration_cast<std::chrono::milliseconds>(now.time_since_epoch()).count() % 1000;
    if (t != cached_for) {
        std::tm tm{};
        gmtime_r(&t, &tm);
        const int n = std::snprintf(cached, sizeof cached, "%04d-%02d-%02dT%02d:%02d:%02d.", tm.tm_year + 1900,
                                    tm.tm_mon + 1, tm.tm_mday, tm.tm_hour, tm.tm_min, tm.tm_sec);
        cached_len = n > 0 ? std::min(static_cast<std::size_t>(n), sizeof cached - 1) : 0;
        cached_for = t;
    }
    if (size < cached_len + 5) {
        return 0;
    }
    std::memcpy(buf, cached, cached_len);
    buf[cached_len] = static_cast<char>('0' + ms / 100);
    buf[cached_len + 1] = static_cast<char>('0' + ms / 10 % 10);
    buf[cached_len + 2] = static_cast<char>('0' + ms % 10);
    buf[cached_len + 3] = 'Z';
    buf[cached_len + 4] = '\0';
    return cached_len + 4;
}

// A bounded line being built: what does not fit is cut, never overrun.
struct line_builder {
    char* p;
    char* end;  // one before the last byte: room for the newline
    void raw(std::string_view s) noexcept {
        const std::size_t n = std::min<std::size_t>(s.size(), static_cast<std::size_t>(end - p));
        std::memcpy(p, s.data(), n);
        p += n;
    }
    template <class T>
    void number(T v, int precision = -1) noexcept {
        std::to_chars_result r{};
        if constexpr (std::is_floating_point_v<T>) {
            r = std::to_chars(p, end, v, std::chars_format::fixed, precision);
        } else {
            r = std::to_chars(p, end, v);
        }
        if (r.ec == std::errc()) {
            p = r.ptr;
        }
    }
    // Printable ASCII only, at most `max` bytes: a log line must not be a
    // place where a client can write arbitrary bytes (or forge a second line).
    void clean(std::string_view s, std::size_t max) noexcept {
        for (const char c : s.substr(0, max)) {
            if (p == end) {
                return;
            }
            *p++ = (c > 0x20 && c < 0x7f && c != '"') ? c : '_';
        }
    }
};

}  // namespace

void write_access_log(const access_entry& e) noexcept {
    // Built by hand: two snprintf calls (one with a double) were a visible
    // part of a request's CPU (docs/benchmarks.md).
    char line[512];
    line_builder b{line, line + sizeof line - 1};
    b.p += timestamp(line, sizeof line);
    b.raw(" ip=");
    b.clean(e.client_ip.empty() ? "-" : e.client_ip, 63);
    b.raw(" method=");
    b.clean(e.method, 15);
    b.raw(" provider=");
    b.clean(e.provider.empty() ? "-" : e.provider, 47);
    b.raw(" path=");
    b.clean(e.path.substr(0, e.path.find('?')), 255);
    b.raw(" status=");
    b.number(e.status);
    b.raw(" upstream=");
    b.number(e.upstream_status);
    b.raw(" ms=");
    b.number(e.duration_ms, 1);
    b.raw(" in=");
    b.number(e.bytes_in);
    b.raw(" out=");
    b.number(e.bytes_out);
    b.raw(" error=");
    b.clean(e.error.empty() ? "-" : e.error, 39);
    *b.p++ = '\n';
    submit(line, static_cast<std::size_t>(b.p - line), false);
}

void log_line(std::string_view text) noexcept {
    char ts[40];
    const std::size_t t = timestamp(ts, sizeof ts);
    char line[1024];
    const int n = std::snprintf(line, sizeof line, "%.*s byok-relay: %.*s\n", static_cast<int>(t), ts,
                                static_cast<int>(std::min<std::size_t>(text.size(), 900)), text.data());
    if (n > 0) {
        submit(line, std::min(static_cast<std::size_t>(n), sizeof line - 1), true);
    }
}

std::uint64_t access_log_dropped() noexcept { return queue().dropped.load(std::memory_order_relaxed); }

void start_access_log() noexcept {
    auto& q = queue();
    std::lock_guard lock(q.mu);
    start_locked(q);
}

void stop_access_log() noexcept {
    auto& q = queue();
    std::unique_lock lock(q.mu);
    if (q.state != log_queue::mode::running) {
        return;
    }
    q.stopping = true;
    q.wake.notify_one();
    const bool done = q.room.wait_for(lock, stop_wait, [&] { return q.writer_done; });
    std::thread writer = std::move(q.writer);
    if (done) {
        q.state = log_queue::mode::direct;
        lock.unlock();
        writer.join();
        return;
    }
    // stderr is stalled: leave the writer blocked in write(2) (it owns the
    // batch) and count what it could not write; later lines go directly.
    q.state = log_queue::mode::abandoned;
    q.dropped.fetch_add(static_cast<std::uint64_t>(std::count(q.pending.begin(), q.pending.end(), '\n')),
                        std::memory_order_relaxed);
    q.pending.clear();
    q.room.notify_all();
    lock.unlock();
    writer.detach();
}

}  // namespace byok::relay
