#include "crypto/encoding.hpp"

#include <doctest/doctest.h>
#include <sodium.h>

#include <array>
#include <cstring>
#include <random>
#include <string>
#include <vector>

using byok::crypto::base64url_decode;
using byok::crypto::base64url_decoded_max;
using byok::crypto::base64url_encode;
using byok::crypto::sha256;
using byok::crypto::sha256_stream;

namespace {

std::optional<std::vector<unsigned char>> decode(std::string_view in) {
    std::vector<unsigned char> out(base64url_decoded_max(in.size()));
    const auto n = base64url_decode(in, out);
    if (!n) {
        return std::nullopt;
    }
    out.resize(*n);
    return out;
}

std::string hex(const byok::crypto::sha256_digest& d) {
    static constexpr char digits[] = "0123456789abcdef";
    std::string out;
    for (const unsigned char c : d) {
        out += digits[c >> 4];
        out += digits[c & 15];
    }
    return out;
}

}  // namespace

TEST_CASE("base64url: RFC 4648 test vectors, URL alphabet, no padding") {
    const std::vector<std::pair<std::string, std::string>> v = {
        {"", ""}, {"f", "Zg"}, {"fo", "Zm8"}, {"foo", "Zm9v"}, {"foob", "Zm9vYg"}, {"fooba", "Zm9vYmE"},
        {"foobar", "Zm9vYmFy"}, {"\xfb\xff", "-_8"}, {"\xfb\xef\xbe", "----"}, {"\xff\xff\xff", "____"},
    };
    for (const auto& [plain, enc] : v) {
        CAPTURE(enc);
        const std::vector<unsigned char> bytes(plain.begin(), plain.end());
        CHECK(base64url_encode(bytes) == enc);
        const auto d = decode(enc);
        REQUIRE(d);
        CHECK(*d == bytes);
    }
}

TEST_CASE("base64url: every length round-trips, and only the canonical spelling decodes") {
    static constexpr std::string_view alphabet = "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789-_";
    for (std::size_t n = 0; n <= 70; ++n) {
        std::vector<unsigned char> bytes(n);
        for (std::size_t i = 0; i < n; ++i) {
            bytes[i] = static_cast<unsigned char>(i * 37 + 11);
        }
        const std::string enc = base64url_encode(bytes);
        CAPTURE(enc);
        CHECK(enc.size() % 4 != 1);
        const auto d = decode(enc);
        REQUIRE(d);
        CHECK(*d == bytes);
        if (n % 3 != 0) {
            // Setting any unused low bit of the last character gives a non-canonical spelling.
            const std::size_t mask = n % 3 == 1 ? 0x0f : 0x03;
            const auto last = alphabet.find(enc.back());
            for (std::size_t bit = 1; bit <= mask; bit <<= 1) {
                std::string bad = enc;
                bad.back() = alphabet[last | bit];
                CHECK_FALSE(decode(bad));
            }
        }
        if (n % 3 == 0) {
            CHECK_FALSE(decode(enc + "A"));  // length 1 mod 4: no whole byte
        }
        CHECK_FALSE(decode(enc + "="));
        CHECK_FALSE(decode(enc + "=="));
    }
}

TEST_CASE("base64url: bytes outside the alphabet are refused, including 0x80-0xff") {
    // libsodium 1.0.18 decodes 0x80-0xff like '_' (found by tests/fuzz); the
    // wrapper must refuse them, or one value would have many spellings.
    for (const char* bad : {"\xff___", "_\x80__", "__\xdf_", "___\xf1", "Q\xf1", "Q\x80", "Q\xff", "QQ\xdf",
                            "Zm9+", "Zm9/", "Zm 9v", "Zm9v\n", " Zm9v", "Zm9v=",
                            "Zm.9", "Zm9v\t"}) {
        CAPTURE(bad);
        CHECK_FALSE(decode(bad));
    }
    std::string with_nul = "Zm9v";
    with_nul[1] = '\0';
    CHECK_FALSE(decode(with_nul));
    CHECK(decode("____"));  // the control: what the high bytes above would be misread as
    CHECK(decode("Qw"));
}

TEST_CASE("base64url: output that does not fit is refused, not truncated") {
    std::vector<unsigned char> out(2);
    CHECK_FALSE(base64url_decode("Zm9v", out));
    std::vector<unsigned char> exact(3);
    const auto n = base64url_decode("Zm9v", exact);
    REQUIRE(n);
    CHECK(*n == 3);
}

TEST_CASE("sha256: FIPS 180-2 known answers; the stream equals the one-shot over any split") {
    CHECK(hex(sha256(std::string_view(""))) == "e3b0c44298fc1c149afbf4c8996fb92427ae41e4649b934ca495991b7852b855");
    CHECK(hex(sha256(std::string_view("abc"))) == "ba7816bf8f01cfea414140de5dae2223b00361a396177a9cb410ff61f20015ad");
    const std::string two_blocks = "abcdbcdecdefdefgefghfghighijhijkijkljklmklmnlmnomnopnopq";
    CHECK(hex(sha256(two_blocks)) == "248d6a61d20638b8e5c026930c3e6039a33ce45964ff2167f6ecedd419db06c1");
    for (std::size_t split = 0; split <= two_blocks.size(); ++split) {
        sha256_stream s;
        s.update(std::string_view(two_blocks).substr(0, split));
        s.update(std::string_view(two_blocks).substr(split));
        CHECK(s.finish() == sha256(two_blocks));
    }
    sha256_stream million;
    const std::string a1000(1000, 'a');
    for (int i = 0; i < 1000; ++i) {
        million.update(a1000);
    }
    CHECK(hex(million.finish()) == "cdc76e5c9914fb9281a1c7e284d73e67f1809a48a497200e046d39ccc7112cd0");
}

TEST_CASE("sha256_stream: gathered and streamed input agree with libsodium's SHA-256 at every length") {
    // Short input is gathered and hashed by OpenSSL at finish(); longer input
    // switches to libsodium's stream on the update that overflows. Every
    // length from 0 to 600 bytes, cut into three pieces around the switch.
    std::string text(600, '\0');
    for (std::size_t i = 0; i < text.size(); ++i) {
        text[i] = static_cast<char>(i * 131 + 7);
    }
    for (std::size_t len = 0; len <= text.size(); ++len) {
        const std::string_view in = std::string_view(text).substr(0, len);
        byok::crypto::sha256_digest expected{};
        crypto_hash_sha256(expected.data(), reinterpret_cast<const unsigned char*>(in.data()), in.size());
        for (const std::size_t a : {std::size_t{0}, len / 3, std::min<std::size_t>(len, 255), std::min<std::size_t>(len, 256)}) {
            const std::size_t b = a + (len - a) / 2;
            sha256_stream s;
            s.update(in.substr(0, a));
            s.update(in.substr(a, b - a));
            s.update(in.substr(b));
            CHECK_MESSAGE(s.finish() == expected, "length " << len << " cut at " << a << " and " << b);
        }
    }
}

TEST_CASE("base64url_decode_public agrees with the constant-time decoder on every input") {
    // Every string of length 0..4 over a 70-character alphabet that mixes
    // valid characters with '=', '+', '/', space and a high byte would be
    // too many; instead: all lengths 0..12 with random characters from that
    // mix, plus every single-character change of valid encodings.
    const std::string mix = "ABCZabcz0189-_=+/ \x80\xff.";
    std::mt19937 rng(12345);
    auto check = [](const std::string& s) {
        std::array<unsigned char, 64> a{};
        std::array<unsigned char, 64> b{};
        const auto x = byok::crypto::base64url_decode(s, a);
        const auto y = byok::crypto::base64url_decode_public(s, b);
        REQUIRE(x.has_value() == y.has_value());
        if (x) {
            REQUIRE(*x == *y);
            CHECK(std::memcmp(a.data(), b.data(), *x) == 0);
        }
    };
    for (int len = 0; len <= 12; ++len) {
        for (int k = 0; k < 2000; ++k) {
            std::string s;
            for (int i = 0; i < len; ++i) {
                s += mix[rng() % mix.size()];
            }
            check(s);
        }
    }
    for (std::size_t n = 0; n <= 40; ++n) {
        std::vector<unsigned char> bytes(n);
        for (auto& c : bytes) {
            c = static_cast<unsigned char>(rng());
        }
        const std::string enc = byok::crypto::base64url_encode(bytes);
        check(enc);
        for (std::size_t i = 0; i < enc.size(); ++i) {
            for (const char c : mix) {
                std::string t = enc;
                t[i] = c;
                check(t);
            }
        }
    }
    // Output that does not fit is refused, not truncated.
    std::array<unsigned char, 2> small{};
    CHECK_FALSE(byok::crypto::base64url_decode_public("AAAA", small).has_value());
}
