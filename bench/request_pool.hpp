#pragma once
// Freshly sealed requests, made before the timed part of a run.
//
// Every request the load generator sends carries its own seal (its own
// ephemeral key, iat and body hash: the relay refuses a replayed seal), so
// sealing costs the client one X25519 key generation and one X25519
// operation per request. That cost must never count against the server under
// test, so the pool seals everything ahead of time on its own threads and
// reports what sealing cost (CPU time per sealed request). If a run outlives
// the pool, requests are sealed inline and counted, so the report can say the
// pool was too small.
//
// A seal is only accepted while its iat is fresh (60 s by default), so a run
// longer than that cannot be sealed entirely in advance: the pool seals the
// first `ahead` requests before the run and a background thread keeps at most
// `ahead` sealed requests in reserve for the rest. Its CPU time is counted in
// the sealing cost, and on a shared core it competes with the load generator
// (never with the server's CPU figures or the measured latency).
//
// Each entry is the complete HTTP/1.1 request (head and body), ready to be
// written in one call. Entries never move once built; take() is thread-safe.

#include <atomic>
#include <cstddef>
#include <cstdint>
#include <memory>
#include <string>
#include <thread>
#include <string_view>
#include <vector>

#include "crypto/keyring.hpp"

namespace byok::bench {

struct request_template {
    std::string method = "POST";
    std::string target;        // request target sent on the wire
    std::string seal_path;     // the path the seal binds (normally == target)
    std::string host_header;   // "127.0.0.1:8080"
    std::string body;          // JSON object; a per-request "nonce" member is added
    bool stream = false;       // adds "stream":true unless the body has a "stream" member
    std::string kid;
    crypto::public_key pk{};
    crypto::seal_alg alg = crypto::seal_alg::sealed_box;  // hpke: RFC 9180 seals, headers_sha256 bound
    std::vector<std::string> api_keys;  // rotated through, one per request
};

class request_pool {
public:
    // Seals min(count, ahead) requests on `threads` threads before returning;
    // one background thread seals the rest of `count`, staying at most
    // `ahead` requests ahead of take().
    request_pool(request_template t, std::size_t count, std::size_t ahead, unsigned threads);
    ~request_pool();
    request_pool(const request_pool&) = delete;
    request_pool& operator=(const request_pool&) = delete;

    // The next presealed request, or (once the pool is used up) one sealed
    // now into `scratch`. Thread-safe.
    [[nodiscard]] std::string_view take(std::string& scratch);

    [[nodiscard]] std::size_t presealed() const noexcept { return prefilled_; }
    [[nodiscard]] std::uint64_t background_seals() const noexcept { return background_.load(); }
    [[nodiscard]] std::uint64_t inline_seals() const noexcept { return inline_.load(); }
    // CPU time per sealed request (payload, SHA-256 of the body, the seal, base64url).
    [[nodiscard]] double seal_us_per_request() const noexcept;
    [[nodiscard]] double fill_seconds() const noexcept { return fill_s_; }
    [[nodiscard]] std::size_t body_bytes() const noexcept { return body_bytes_; }
    [[nodiscard]] crypto::seal_alg alg() const noexcept { return t_.alg; }

private:
    [[nodiscard]] std::string build(std::uint64_t n) const;

    request_template t_;
    std::string body_head_;  // body text up to and including the opening '{' plus the stream member
    std::string body_tail_;  // the rest of the body
    std::uint64_t nonce_base_ = 0;
    void refill();

    std::vector<std::string> wire_;
    std::unique_ptr<std::atomic<bool>[]> ready_;
    std::size_t ahead_ = 0;
    std::size_t prefilled_ = 0;
    std::atomic<std::size_t> next_{0};
    std::atomic<std::uint64_t> inline_{0};
    std::atomic<std::uint64_t> background_{0};
    std::atomic<bool> stop_{false};
    std::atomic<double> background_cpu_s_{0};
    std::thread sealer_;
    double prefill_cpu_s_ = 0;
    double seal_us_ = 0;
    double fill_s_ = 0;
    std::size_t body_bytes_ = 0;
};

// Adds the members the load generator needs to a JSON object body: a
// placeholder for the nonce, and "stream":true when `stream` and the body has
// no "stream" member. Returns {head, tail}: the final body is
// head + nonce + tail. Throws std::invalid_argument if body is not an object.
[[nodiscard]] std::pair<std::string, std::string> split_body(std::string_view body, bool stream);

}  // namespace byok::bench
