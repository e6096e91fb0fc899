#include "relay/access_log.hpp"

#include <doctest/doctest.h>

#include <cerrno>
#include <chrono>
#include <cstdlib>
#include <cstring>
#include <future>
#include <string>
#include <thread>
#include <vector>

#include <fcntl.h>
#include <spawn.h>
#include <sys/wait.h>
#include <unistd.h>

extern char** environ;

using namespace byok::relay;

namespace {

std::string read_to_eof(int fd) {
    std::string out;
    char buf[1 << 16];
    for (;;) {
        const ssize_t r = ::read(fd, buf, sizeof buf);
        if (r > 0) {
            out.append(buf, static_cast<std::size_t>(r));
        } else if (r < 0 && errno == EINTR) {
            continue;
        } else {
            return out;
        }
    }
}

// Points fd 2 at a pipe that nobody reads until start_reader(); restores it in finish().
class stderr_pipe {
public:
    stderr_pipe() {
        stop_access_log();  // whatever was queued goes to the real stderr first
        int fds[2];
        REQUIRE(::pipe2(fds, O_CLOEXEC) == 0);
        read_fd_ = fds[0];
        saved_ = ::dup(STDERR_FILENO);
        REQUIRE(saved_ >= 0);
        REQUIRE(::dup2(fds[1], STDERR_FILENO) == STDERR_FILENO);
        ::close(fds[1]);
        start_access_log();
    }
    stderr_pipe(const stderr_pipe&) = delete;
    stderr_pipe& operator=(const stderr_pipe&) = delete;
    ~stderr_pipe() {
        if (saved_ >= 0) {
            finish();
        }
    }

    void start_reader() {
        if (reader_.joinable()) {
            return;
        }
        reader_ = std::thread([this] { out_ = read_to_eof(read_fd_); });
    }

    // Flushes the log into the pipe, puts stderr back and returns all that was written.
    std::string finish() {
        start_reader();
        stop_access_log();
        ::dup2(saved_, STDERR_FILENO);  // closes the pipe's last write end: the reader sees EOF
        ::close(saved_);
        saved_ = -1;
        reader_.join();
        ::close(read_fd_);
        return out_;
    }

private:
    int read_fd_ = -1;
    int saved_ = -1;
    std::thread reader_;
    std::string out_;
};

std::vector<std::string> lines_of(const std::string& text) {
    std::vector<std::string> out;
    std::size_t start = 0;
    while (start < text.size()) {
        const auto nl = text.find('\n', start);
        if (nl == std::string::npos) {
            out.push_back(text.substr(start));  // a cut line: the checks below see it has no end
            break;
        }
        out.push_back(text.substr(start, nl - start + 1));
        start = nl + 1;
    }
    return out;
}

// "2026-11-27T09:11:06.123Z " and the rest of the line.
std::string after_timestamp(const std::string& line) {
    REQUIRE(line.size() > 25);
    CHECK(line[4] == '-');
    CHECK(line[10] == 'T');
    CHECK(line[23] == 'Z');
    CHECK(line[24] == ' ');
    return line.substr(25);
}

constexpr int per_thread = 20000;  // 2 x 20,000 lines of ~130 bytes: 5 MB, far over queue and pipe

std::string burst_path(int thread, int i) { return "/burst/" + std::to_string(thread) + "/" + std::to_string(i); }

void log_burst(int thread, int count) {
    for (int i = 0; i < count; ++i) {
        const std::string path = burst_path(thread, i);
        write_access_log({"203.0.113.9", "POST", "openai", path, 200, 201, 1.5, 10, 20, ""});
    }
}

}  // namespace

TEST_CASE("access_log: the line's format, the query cut off and unprintable bytes replaced") {
    stderr_pipe p;
    write_access_log({"198.51.100.7", "POST", "openai", "/v1/chat/completions?key=sk-secret", 502, 0, 12.34, 1234,
                      56, "upstream_unreachable"});
    write_access_log({"", "G\"ET", "", "/a b\nforged=1", 400, 0, 0, 0, 0, ""});
    log_line("listening on http://127.0.0.1:1");
    const auto lines = lines_of(p.finish());
    REQUIRE(lines.size() == 3);
    CHECK(after_timestamp(lines[0]) ==
          "ip=198.51.100.7 method=POST provider=openai path=/v1/chat/completions status=502 upstream=0 ms=12.3 "
          "in=1234 out=56 error=upstream_unreachable\n");
    CHECK(after_timestamp(lines[1]) ==
          "ip=- method=G_ET provider=- path=/a_b_forged=1 status=400 upstream=0 ms=0.0 in=0 out=0 error=-\n");
    CHECK(after_timestamp(lines[2]) == "byok-relay: listening on http://127.0.0.1:1\n");
}

TEST_CASE("access_log: with stderr stalled, a burst returns, drops and counts; what was written is whole") {
    stderr_pipe p;
    const std::uint64_t dropped_before = access_log_dropped();
    // Nobody reads the pipe: the writer thread blocks once it holds 64 KiB.
    // The burst must still come back (a watchdog, not a timing assertion:
    // if it does not, the reader is started so the test ends and fails).
    auto burst = std::async(std::launch::async, [] {
        std::thread other(log_burst, 1, per_thread);
        log_burst(0, per_thread);
        other.join();
    });
    const bool returned_while_stalled = burst.wait_for(std::chrono::seconds(60)) == std::future_status::ready;
    CHECK(returned_while_stalled);
    const std::uint64_t dropped = access_log_dropped() - dropped_before;
    CHECK(dropped > 0);
    log_line("after the burst");  // an operational line has room kept for it

    p.start_reader();  // the reader wakes up: everything queued is written out
    burst.get();
    const std::string text = p.finish();
    const auto lines = lines_of(text);
    REQUIRE(!lines.empty());
    CHECK(lines.size() + dropped == 2 * per_thread + 1);
    CHECK(after_timestamp(lines.back()) == "byok-relay: after the burst\n");
    int next[2] = {0, 0};
    std::size_t whole = 0;
    for (std::size_t k = 0; k + 1 < lines.size(); ++k) {
        const std::string rest = after_timestamp(lines[k]);
        // Whole: exactly one line's text, from its start to its own newline.
        const auto at = rest.find("path=/burst/");
        REQUIRE(at != std::string::npos);
        const int thread = rest[at + 12] - '0';
        REQUIRE((thread == 0 || thread == 1));
        const auto slash = rest.find('/', at + 13);
        const int i = std::atoi(rest.c_str() + slash + 1);
        CHECK(rest == "ip=203.0.113.9 method=POST provider=openai path=" + burst_path(thread, i) +
                          " status=200 upstream=201 ms=1.5 in=10 out=20 error=-\n");
        CHECK(i >= next[thread]);  // each thread's lines in its order, the dropped ones missing
        next[thread] = i + 1;
        ++whole;
    }
    CHECK(whole == lines.size() - 1);
}

TEST_CASE("access_log: (child) lines logged just before the process returns from main") {
    if (std::getenv("BYOK_ACCESS_LOG_EXIT_CHILD") == nullptr) {
        return;  // runs only as the child of the next test case
    }
    for (int i = 0; i < 3000; ++i) {
        const std::string path = "/exit/" + std::to_string(i);
        write_access_log({"192.0.2.1", "GET", "", path, 200, 0, 0, 0, 0, ""});
    }
    log_line("stopped");
    // Returning from main runs exit(): the queue must be written out, even
    // though the parent is not reading yet and the writer is blocked.
}

TEST_CASE("access_log: lines queued just before exit reach stderr") {
    int fds[2];
    REQUIRE(::pipe2(fds, O_CLOEXEC) == 0);
    posix_spawn_file_actions_t actions;
    posix_spawn_file_actions_init(&actions);
    posix_spawn_file_actions_adddup2(&actions, fds[1], STDERR_FILENO);
    posix_spawn_file_actions_addopen(&actions, STDOUT_FILENO, "/dev/null", O_WRONLY, 0);
    std::vector<std::string> env_text;
    for (char** e = environ; *e != nullptr; ++e) {
        env_text.emplace_back(*e);
    }
    env_text.emplace_back("BYOK_ACCESS_LOG_EXIT_CHILD=1");
    std::vector<char*> envp;
    for (auto& s : env_text) {
        envp.push_back(s.data());
    }
    envp.push_back(nullptr);
    std::string self = "/proc/self/exe";
    std::string filter = "--test-case=access_log: (child)*";
    std::vector<char*> argv = {self.data(), filter.data(), nullptr};
    pid_t pid = 0;
    REQUIRE(::posix_spawn(&pid, self.c_str(), &actions, nullptr, argv.data(), envp.data()) == 0);
    posix_spawn_file_actions_destroy(&actions);
    ::close(fds[1]);

    // Read only after the child has had time to queue everything and return.
    std::this_thread::sleep_for(std::chrono::milliseconds(300));
    const std::string text = read_to_eof(fds[0]);
    ::close(fds[0]);
    int status = 0;
    REQUIRE(::waitpid(pid, &status, 0) == pid);
    CHECK(WIFEXITED(status));
    CHECK(WEXITSTATUS(status) == 0);

    const auto lines = lines_of(text);
    REQUIRE(lines.size() == 3001);
    for (int i = 0; i < 3000; ++i) {
        CHECK(after_timestamp(lines[static_cast<std::size_t>(i)]) ==
              "ip=192.0.2.1 method=GET provider=- path=/exit/" + std::to_string(i) +
                  " status=200 upstream=0 ms=0.0 in=0 out=0 error=-\n");
    }
    CHECK(after_timestamp(lines.back()) == "byok-relay: stopped\n");
}
