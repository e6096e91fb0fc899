#pragma once
// Relaying one provider answer to the client: the stage after the request
// (and the key) went upstream.
//
// The answer's framing toward the client is decided in one place
// (decide_framing): a length-framed answer is passed byte for byte with its
// Content-Length; an answer the provider frames by chunks or by closing is
// re-framed by the relay as chunked (HTTP/1.1 clients) or close-delimited
// (HTTP/1.0). Only into a body the relay frames itself, and only between two
// SSE events, does it write `: keep-alive` comments when the provider is
// silent for sse_keepalive_s.
//
// An answer that arrives whole with its head goes out in one write by one
// coroutine: one non-blocking send when the client's socket takes it all
// (no posted completion), an async_write for what it did not. Otherwise three activities share the connection's thread: the
// reader (provider -> two small buffers, held only while bytes pass), the
// writer (buffers -> client, and the keep-alive comments) and the watcher
// (notices the client leaving and closes the upstream at once). When the
// writer is idle, the reader writes a piece itself with one non-blocking
// send, and hands over only what the client's socket did not take: an event
// of a paced stream costs one wake-up (the provider's bytes), not three.
//
// One pump per answer, on the client connection's thread; the sockets it is
// given must outlive it.

#include <array>
#include <chrono>
#include <cstdint>
#include <memory>
#include <optional>
#include <string>
#include <string_view>

#include <boost/asio/awaitable.hpp>
#include <boost/asio/ip/tcp.hpp>
#include <boost/asio/steady_timer.hpp>

#include "relay/config.hpp"
#include "relay/deadline.hpp"
#include "relay/errors.hpp"
#include "relay/response.hpp"
#include "relay/upstream.hpp"

namespace byok::relay {

struct answer_framing {
    enum class kind { none, length, chunked, close } k = kind::none;
    bool keepalive_comments = false;  // SSE into a body the relay frames itself
};

// `client_version`: 10 or 11. `is_sse`: the answer's Content-Type is text/event-stream.
[[nodiscard]] answer_framing decide_framing(unsigned status, bool upstream_chunked,
                                            std::optional<std::uint64_t> upstream_length, bool is_sse,
                                            unsigned client_version) noexcept;

// Tracks whether the SSE bytes forwarded so far end between two events
// (after a blank line: two line ends in a row, CRLF counting as one), where
// a comment line can go without splitting an event.
class sse_boundary {
public:
    void feed(std::string_view bytes) noexcept;
    [[nodiscard]] bool at_boundary() const noexcept { return line_ends_ >= 2; }

private:
    unsigned line_ends_ = 2;  // nothing forwarded yet: a boundary
    char prev_ = '\n';
};

struct pump_result {
    bool head_written = false;  // false: the session answers `failure` itself
    bool complete = false;      // the whole answer reached the client, framed
    bool client_gone = false;
    bool reusable = false;      // the upstream connection may serve another request
    unsigned status = 0;        // the provider's final status
    error_code failure = error_code::internal_error;
    std::uint64_t bytes_out = 0;
    double ttfb_s = 0;          // request written -> final head read
    double total_s = 0;         // request written -> answer ended
};

class answer_pump {
public:
    answer_pump(boost::asio::ip::tcp::socket& client, socket_deadline& client_deadline, upstream_conn& conn,
                const config& cfg, cors_decision cors, bool keep_alive, unsigned client_version);
    answer_pump(const answer_pump&) = delete;
    answer_pump& operator=(const answer_pump&) = delete;
    ~answer_pump();

    // Runs until the answer ended, failed or the client left. Closes the
    // client socket when an answer broke off after its head was sent (the
    // client must see a cut, not a complete-looking answer).
    [[nodiscard]] boost::asio::awaitable<pump_result> run();

private:
    static constexpr std::size_t chunk = 4096;

    boost::asio::awaitable<void> exchange();
    boost::asio::awaitable<void> reader();
    boost::asio::awaitable<void> writer();
    // Starts the watcher: a peek at the client's socket whose handler calls
    // client_left() when the client goes away mid-answer.
    void watch_client();
    // The answer's head for the client, framed as framing_ says.
    [[nodiscard]] std::string client_head() const;
    // Writes all of `bufs` to the client, under its write deadline. `try_now`:
    // one non-blocking send first (the socket is likely to have room), so
    // that a write the socket takes whole completes without a posted handler.
    [[nodiscard]] boost::asio::awaitable<bool> write_client(std::span<const boost::asio::const_buffer> bufs,
                                                            bool try_now);
    // Sends `piece` (framed as framing_ says) without waiting, when nothing
    // else is being written. Keeps what the socket did not take as pending_
    // for the writer. False: the client is gone.
    [[nodiscard]] bool send_or_hand_over(std::string_view piece);
    // The pending piece as it still has to go on the wire.
    [[nodiscard]] std::array<boost::asio::const_buffer, 3> pending_wire() const noexcept;
    void client_left();
    static void wake(boost::asio::steady_timer& t) { t.cancel(); }

    boost::asio::ip::tcp::socket& client_;
    socket_deadline& client_deadline_;
    upstream_conn& conn_;
    const config& cfg_;
    cors_decision cors_;
    bool keep_alive_;
    unsigned client_version_;
    upstream_response resp_;
    answer_framing framing_;  // decided once, when the provider's head is read
    sse_boundary boundary_;
    pump_result result_;
    std::chrono::steady_clock::time_point sent_at_ = std::chrono::steady_clock::now();

    // Piece `idx` (0 or 1) of the two the reader fills in turn, allocated
    // when first needed.
    [[nodiscard]] boost::asio::mutable_buffer piece(std::size_t idx);
    // Gives both pieces back when nothing is pending for the client and the
    // reader waits for the provider: a slow stream holds no buffer between
    // two events.
    void release_if_idle() noexcept;

    // Reader -> writer hand-off: at most one chunk pending while the reader fills the other buffer.
    boost::asio::steady_timer writer_wake_;
    boost::asio::steady_timer reader_wake_;
    std::unique_ptr<char[]> bufs_;  // 2 * chunk, not zeroed: only bytes read into them are ever read
    bool reader_waits_ = false;     // the reader waits for the provider, holding no piece
    std::string_view pending_;
    bool has_pending_ = false;
    char pending_size_[24]{};       // the pending piece's chunk-size line (chunked framing)
    std::size_t pending_size_len_ = 0;
    std::size_t pending_sent_ = 0;  // bytes of the pending piece's wire form already sent
    bool writing_ = false;          // a write to the client is under way
    bool head_sent_ = false;        // the head is out: pieces may follow
    // When bytes last went to the client: the writer's keep-alive timer
    // compares against it when it wakes, rather than being re-armed per piece.
    std::chrono::steady_clock::time_point last_write_{};
    bool finished_ = false;  // the reader is done (complete or failed)
    bool done_ = false;      // the exchange is over; the watcher stops
    // Shared with the watcher's pending peek, whose handler may run after
    // this pump is gone (a cancelled operation completes later): it holds
    // the peeked byte and a pointer that the destructor clears.
    struct watch_state {
        answer_pump* pump;
        char byte = 0;
    };
    std::shared_ptr<watch_state> watch_;
};

}  // namespace byok::relay
