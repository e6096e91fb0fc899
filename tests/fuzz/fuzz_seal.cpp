// The seal header and payload parser and checker: seal_checker::check with a
// fixed keyring, on inputs of the form
//
//   <mode>\n<seal material>\n<method>\n<path>\n<body...>
//
// mode "S": <seal material> is a payload, sealed here to the current key
//           (so the fuzzer reaches the payload parser and every check after it);
// mode "E": the same, sealed to a key that has expired;
// anything else: <seal material> is the Authorization header value as sent.
//
// libsodium's randomness is replaced by a deterministic generator reset for
// every input, so one input always takes one path.
#include "crypto/seal.hpp"

#include <cstring>

#include <sodium.h>

#include "fuzz_support.hpp"

using namespace byok::crypto;

namespace {

constexpr std::int64_t now = 1'700'000'000;
std::uint64_t draw = 0;

void det_buf(void* buf, std::size_t n) {
    unsigned char seed[randombytes_SEEDBYTES] = {'b', 'y', 'o', 'k', '-', 'f', 'u', 'z', 'z'};
    std::memcpy(seed + 16, &draw, sizeof draw);
    ++draw;
    randombytes_buf_deterministic(buf, n, seed);
}
std::uint32_t det_random() {
    std::uint32_t v = 0;
    det_buf(&v, sizeof v);
    return v;
}
const char* det_name() { return "byok-fuzz-deterministic"; }
randombytes_implementation det_impl = {det_name, det_random, nullptr, nullptr, det_buf, nullptr};

struct fixture {
    std::shared_ptr<const keyring> keys;
    std::string current_kid;
    public_key current_pk{};
    std::string expired_kid;
    public_key expired_pk{};
};

fixture& fx() {
    static fixture f = [] {
        fixture out;
        std::vector<relay_key> k;
        k.push_back(relay_key::generate(now - 10, 86400));
        k.push_back(relay_key::generate(now - 1000, 100));  // expired at now - 900
        out.current_kid = k[0].kid();
        out.current_pk = k[0].pk();
        out.expired_kid = k[1].kid();
        out.expired_pk = k[1].pk();
        out.keys = keyring::from_keys(std::move(k));
        return out;
    }();
    return f;
}

}  // namespace

extern "C" int LLVMFuzzerInitialize(int*, char***) {
    randombytes_set_implementation(&det_impl);
    ensure_sodium();
    (void)fx();
    return 0;
}

extern "C" int LLVMFuzzerTestOneInput(const std::uint8_t* data, std::size_t size) {
    draw = 0;
    const auto f = byok::fuzz::split_lines(byok::fuzz::as_view(data, size), 5);
    const std::string_view mode = f[0];
    std::string authorization;
    if (mode == "S" || mode == "E") {
        const bool expired = mode == "E";
        authorization = seal_header(expired ? fx().expired_kid : fx().current_kid,
                                    expired ? fx().expired_pk : fx().current_pk,
                                    std::span(reinterpret_cast<const unsigned char*>(f[1].data()), f[1].size()));
    } else {
        authorization = std::string(f[1]);
    }
    const sha256_digest digest = sha256(f[4]);
    const request_facts facts{f[2], f[3], &digest, authorization};
    seal_checker checker(seal_policy{}, 16);
    auto result = checker.check(*fx().keys, facts, now);
    if (result.ok()) {
        const std::string_view key = result.key().value();
        BYOK_FUZZ_CHECK(!key.empty() && key.size() <= seal_policy{}.max_key_bytes);
        for (const char c : key) {
            BYOK_FUZZ_CHECK(c > 0x20 && c < 0x7f);  // a key can never break the upstream header
        }
        BYOK_FUZZ_CHECK(mode == "S" || mode != "E");
        // The same seal twice is a replay.
        auto again = checker.check(*fx().keys, facts, now);
        BYOK_FUZZ_CHECK(!again.ok() && again.error() == seal_error::seal_replayed);
    } else if (mode == "E") {
        BYOK_FUZZ_CHECK(result.error() == seal_error::unknown_kid);
    }
    return 0;
}
