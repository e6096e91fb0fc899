#pragma once
// Helpers shared by the crypto tests. Seals are made here with libsodium
// directly (crypto_box_seal), never with crypto/seal.hpp's client half, so a
// bug in make_payload/seal_header cannot hide the same bug in the checker.

#include <cstdint>
#include <cstdlib>
#include <filesystem>
#include <memory>
#include <stdexcept>
#include <string>
#include <string_view>
#include <vector>

#include <sodium.h>

#include <doctest/doctest.h>

#include "crypto/encoding.hpp"
#include "crypto/hpke.hpp"
#include "crypto/keyring.hpp"
#include "crypto/seal.hpp"

namespace byok::test {

using bytes = std::vector<unsigned char>;

inline bytes as_bytes(std::string_view s) { return bytes(s.begin(), s.end()); }

inline std::string b64(const bytes& b) { return crypto::base64url_encode(b); }

inline bytes from_hex(std::string_view hex) {
    bytes out(hex.size() / 2);
    std::size_t n = 0;
    if (sodium_hex2bin(out.data(), out.size(), hex.data(), hex.size(), nullptr, &n, nullptr) != 0 ||
        n != out.size()) {
        throw std::runtime_error("bad hex in test data");
    }
    return out;
}

// crypto_box_seal(payload) to pk, straight from libsodium.
inline bytes raw_seal(const crypto::public_key& pk, std::string_view payload) {
    crypto::ensure_sodium();
    bytes box(payload.size() + crypto_box_SEALBYTES);
    crypto_box_seal(box.data(), reinterpret_cast<const unsigned char*>(payload.data()), payload.size(), pk.data());
    return box;
}

inline std::string header(std::string_view kid, const bytes& box) {
    return "Sealed " + std::string(kid) + "." + b64(box);
}

inline std::string body_hash_b64(std::string_view body) {
    const auto d = crypto::sha256(body);
    return crypto::base64url_encode(d);
}

// The error of a refused seal; fails the test (instead of throwing
// bad_variant_access) if the seal was accepted.
inline crypto::seal_error error_of(const crypto::check_result& r) {
    REQUIRE_MESSAGE(!r.ok(), "the seal was accepted");
    return r.error();
}

// A fixed clock: 2027-01-15T08:00:00Z.
inline constexpr std::int64_t t0 = 1'800'000'000;
inline constexpr std::string_view api_key = "sk-test-0123456789abcdefABCDEF_-.";
inline constexpr std::string_view method = "POST";
inline constexpr std::string_view path = "/openai/v1/chat/completions";
inline constexpr std::string_view body = R"({"model":"gpt-4o-mini","messages":[{"role":"user","content":"Hi"}]})";

// The payload a well-behaved client sends, as JSON text built by hand.
inline std::string payload(std::string_view key = api_key, std::int64_t iat = t0, std::string_view m = method,
                           std::string_view p = path, std::string_view b = body) {
    return R"({"key":")" + std::string(key) + R"(","iat":)" + std::to_string(iat) + R"(,"method":")" +
           std::string(m) + R"(","path":")" + std::string(p) + R"(","body_sha256":")" + body_hash_b64(b) +
           R"("})";
}

// One relay key, one checker, a fixed clock: each test gets its own, so
// replay state never leaks between tests.
struct relay_fixture {
    std::int64_t now = t0;
    std::shared_ptr<const crypto::keyring> ring;
    crypto::seal_checker checker;

    explicit relay_fixture(crypto::seal_policy policy = {}, std::size_t replay_capacity = 1024)
        : checker(policy, replay_capacity) {
        std::vector<crypto::relay_key> keys;
        keys.push_back(crypto::relay_key::generate(t0 - 3600));
        ring = crypto::keyring::from_keys(std::move(keys));
    }

    [[nodiscard]] const crypto::relay_key& key() const { return ring->keys()[0]; }
    [[nodiscard]] bytes seal(std::string_view p) const { return raw_seal(key().pk(), p); }
    [[nodiscard]] std::string seal_header_for(std::string_view p) const { return header(key().kid(), seal(p)); }

    [[nodiscard]] crypto::check_result check(std::string_view authorization, std::string_view m = method,
                                             std::string_view p = path, std::string_view b = body) {
        const auto digest = crypto::sha256(b);
        const crypto::request_facts req{m, p, &digest, authorization};
        return checker.check(*ring, req, now);
    }
};

// enc || ct: HPKE base mode to `key`'s HPKE half, info for `info_kid`.
inline bytes hpke_seal(const crypto::relay_key& key, std::string_view p, std::string_view info_kid) {
    auto s = crypto::hpke::sender::setup(key.hpke_pk(),
                                         crypto::hpke::schedule_context::base("byok-relay v1 " + std::string(info_kid)));
    REQUIRE(s.has_value());
    bytes out(s->enc().begin(), s->enc().end());
    const auto ct = std::move(*s).seal({}, as_bytes(p));
    out.insert(out.end(), ct.begin(), ct.end());
    return out;
}
// The same to the fixture's key.
inline bytes hpke_seal(const relay_fixture& f, std::string_view p, std::string_view info_kid) {
    return hpke_seal(f.key(), p, info_kid);
}
inline bytes hpke_seal(const relay_fixture& f, std::string_view p) { return hpke_seal(f, p, f.key().hpke_kid()); }

// A fresh directory under $TMPDIR (or /tmp), removed when the object dies.
class temp_dir {
public:
    temp_dir() {
        const char* base = std::getenv("TMPDIR");
        std::string tmpl = std::string(base != nullptr && *base != '\0' ? base : "/tmp") + "/byok-crypto-XXXXXX";
        if (::mkdtemp(tmpl.data()) == nullptr) {
            throw std::runtime_error("mkdtemp failed");
        }
        path_ = tmpl;
    }
    temp_dir(const temp_dir&) = delete;
    temp_dir& operator=(const temp_dir&) = delete;
    ~temp_dir() {
        std::error_code ec;
        std::filesystem::remove_all(path_, ec);
    }
    [[nodiscard]] std::string file(std::string_view name) const { return (path_ / name).string(); }
    [[nodiscard]] const std::filesystem::path& path() const noexcept { return path_; }

private:
    std::filesystem::path path_;
};

}  // namespace byok::test
