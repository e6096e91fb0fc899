#include "crypto/signing_key.hpp"

#include <doctest/doctest.h>

#include <fstream>
#include <iterator>
#include <string>

#include <sys/stat.h>

#include "crypto/encoding.hpp"
#include "crypto/keyring.hpp"
#include "tests/crypto/test_support.hpp"

using namespace byok;
using namespace byok::test;

TEST_CASE("signing key: sign and verify; a flipped bit, another message or another key does not verify") {
    const auto k = crypto::signing_key::generate(1800000000);
    const auto other = crypto::signing_key::generate(1800000000);
    const auto msg = as_bytes("{\"typ\":\"byok-relay key list\"}");
    auto sig = k.sign(msg);
    CHECK(crypto::verify_signature(k.pk(), msg, sig));
    CHECK_FALSE(crypto::verify_signature(other.pk(), msg, sig));
    auto msg2 = msg;
    msg2.back() ^= 1;
    CHECK_FALSE(crypto::verify_signature(k.pk(), msg2, sig));
    sig[10] ^= 0x80;
    CHECK_FALSE(crypto::verify_signature(k.pk(), msg, sig));
}

TEST_CASE("signing key file: 0600, loads back to the same key, never overwritten, refused when others can read it") {
    temp_dir dir;
    const std::string path = dir.file("signing.json");
    const auto k = crypto::signing_key::generate(1800000000);
    k.write_new_file(path);
    struct stat st {};
    REQUIRE(::stat(path.c_str(), &st) == 0);
    CHECK((st.st_mode & 0777) == 0600);
    const auto loaded = crypto::signing_key::load_file(path);
    CHECK(loaded.pk() == k.pk());
    const auto msg = as_bytes("x");
    CHECK(loaded.sign(msg) == k.sign(msg));  // Ed25519 is deterministic
    std::ifstream in(path);
    const std::string text((std::istreambuf_iterator<char>(in)), std::istreambuf_iterator<char>());
    CHECK(text.find(crypto::base64url_encode(k.pk())) != std::string::npos);
    CHECK_THROWS_AS(k.write_new_file(path), crypto::key_error);
    REQUIRE(::chmod(path.c_str(), 0640) == 0);
    CHECK_THROWS_AS((void)crypto::signing_key::load_file(path), crypto::key_error);
    // A relay key file is not a signing key file.
    const std::string relay_path = dir.file("relay.json");
    crypto::relay_key::generate(1800000000).write_new_file(relay_path);
    CHECK_THROWS_AS((void)crypto::signing_key::load_file(relay_path), crypto::key_error);
}
