// base64url: strict decode of arbitrary text, and encode/decode round trips.
#include "crypto/encoding.hpp"

#include <algorithm>
#include <vector>

#include "fuzz_support.hpp"

using namespace byok::crypto;

extern "C" int LLVMFuzzerTestOneInput(const std::uint8_t* data, std::size_t size) {
    const std::string_view text = byok::fuzz::as_view(data, size);
    std::vector<unsigned char> out(base64url_decoded_max(text.size()));
    const auto n = base64url_decode(text, out);
    if (n) {
        // Canonical: decoding then encoding gives the same text back.
        BYOK_FUZZ_CHECK(base64url_encode(std::span(out.data(), *n)) == text);
    }
    // The table-driven decoder (for public data) accepts and produces exactly the same.
    std::vector<unsigned char> out2(out.size());
    const auto n2 = base64url_decode_public(text, out2);
    BYOK_FUZZ_CHECK(n.has_value() == n2.has_value());
    if (n) {
        BYOK_FUZZ_CHECK(*n == *n2 && std::equal(out.begin(), out.begin() + static_cast<long>(*n), out2.begin()));
    }
    // Too small an output is refused, never overrun.
    if (!out.empty()) {
        std::vector<unsigned char> small(out.size() / 2);
        (void)base64url_decode(text, small);
        (void)base64url_decode_public(text, small);
    }
    const std::string enc = base64url_encode(std::span(data, size));
    std::vector<unsigned char> back(base64url_decoded_max(enc.size()));
    const auto m = base64url_decode(enc, back);
    BYOK_FUZZ_CHECK(m && *m == size && std::equal(back.begin(), back.begin() + static_cast<long>(size), data));
    return 0;
}
