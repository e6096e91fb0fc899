#include "relay/access_log.hpp"

#include <algorithm>
#include <atomic>
#include <cerrno>
#include <chrono>
#include <climits>
#include <condition_variable>
#include <cstdio>
#include <cstdlib>
#include <ctime>
#include <mutex>
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
    const auto now = std::chrono::system_clock::now();
    const auto t = std::chrono::system_clock::to_time_t(now);
    const auto ms = std::chrono::duration_cast<std::chrono::milliseconds>(now.time_since_epoch()).count() % 1000;
    std::tm tm{};
    gmtime_r(&t, &tm);
    const int n = std::snprintf(buf, size, "%04d-%02d-%02dT%02d:%02d:%02d.%03dZ", tm.tm_year + 1900, tm.tm_mon + 1,
                                tm.tm_mday, tm.tm_hour, tm.tm_min, tm.tm_sec, static_cast<int>(ms));
    return n > 0 ? static_cast<std::size_t>(n) : 0;
}

// Printable ASCII only, bounded: a log line must not be a place where a
// client can write arbitrary bytes (or forge a second line).
int clean(std::string_view s, char* out, std::size_t max) noexcept {
    std::size_t n = 0;
    for (const char c : s) {
        if (n + 1 >= max) {
            break;
        }
        out[n++] = (c > 0x20 && c < 0x7f && c != '"') ? c : '_';
    }
    out[n] = '\0';
    return static_cast<int>(n);
}

}  // namespace

void write_access_log(const access_entry& e) noexcept {
    char ts[40];
    timestamp(ts, sizeof ts);
    std::string_view path = e.path.substr(0, e.path.find('?'));
    char ip[64];
    char method[16];
    char provider[48];
    char p[256];
    char err[40];
    clean(e.client_ip.empty() ? "-" : e.client_ip, ip, sizeof ip);
    clean(e.method, method, sizeof method);
    clean(e.provider.empty() ? "-" : e.provider, provider, sizeof provider);
    clean(path, p, sizeof p);
    clean(e.error.empty() ? "-" : e.error, err, sizeof err);
    char line[512];
    const int n = std::snprintf(line, sizeof line,
                                "%s ip=%s method=%s provider=%s path=%s status=%u upstream=%u ms=%.1f in=%llu "
                                "out=%llu error=%s\n",
                                ts, ip, method, provider, p, e.status, e.upstream_status, e.duration_ms,
                                static_cast<unsigned long long>(e.bytes_in),
                                static_cast<unsigned long long>(e.bytes_out), err);
    if (n > 0) {
        submit(line, std::min(static_cast<std::size_t>(n), sizeof line - 1), false);
    }
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
