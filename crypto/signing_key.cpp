#include "crypto/signing_key.hpp"

#include <cstdio>
#include <string_view>

#include <sodium.h>

#include "crypto/encoding.hpp"
#include "crypto/json_lite.hpp"
#include "crypto/key_file.hpp"
#include "crypto/keyring.hpp"

namespace byok::crypto {
namespace {

constexpr std::size_t max_signing_file_bytes = 1024;
constexpr std::string_view signing_alg = "ed25519";
constexpr std::string_view signing_use = "byok-relay key list";

}  // namespace

signing_key signing_key::from_seed(secret_bytes seed, std::int64_t created) {
    signing_key k;
    k.sk_ = secret_bytes::allocate(crypto_sign_SECRETKEYBYTES);
    if (crypto_sign_seed_keypair(k.pk_.data(), k.sk_.data(), seed.data()) != 0) {
        throw key_error("could not derive the signing key pair");
    }
    k.created_ = created;
    return k;
}

signing_key signing_key::generate(std::int64_t now) {
    ensure_sodium();
    auto seed = secret_bytes::allocate(crypto_sign_SEEDBYTES);
    randombytes_buf(seed.data(), seed.size());
    return from_seed(std::move(seed), now);
}

void signing_key::write_new_file(const std::string& path) const {
    const std::string pk_b64 = base64url_encode(pk_);
    // The seed is the first half of libsodium's secret key; its text is built in secret memory.
    auto seed_b64 = secret_bytes::allocate(sodium_base64_ENCODED_LEN(crypto_sign_SEEDBYTES,
                                                                    sodium_base64_VARIANT_URLSAFE_NO_PADDING));
    sodium_bin2base64(reinterpret_cast<char*>(seed_b64.data()), seed_b64.size(), sk_.data(), crypto_sign_SEEDBYTES,
                      sodium_base64_VARIANT_URLSAFE_NO_PADDING);
    auto text = secret_bytes::allocate(max_signing_file_bytes);
    const int n = std::snprintf(reinterpret_cast<char*>(text.data()), text.size(),
                                "{\"v\":1,\"alg\":\"%.*s\",\"use\":\"%.*s\",\"pk\":\"%s\",\"sk\":\"%s\","
                                "\"created\":%lld}\n",
                                static_cast<int>(signing_alg.size()), signing_alg.data(),
                                static_cast<int>(signing_use.size()), signing_use.data(), pk_b64.c_str(),
                                reinterpret_cast<const char*>(seed_b64.data()), static_cast<long long>(created_));
    if (n <= 0 || static_cast<std::size_t>(n) >= text.size()) {
        throw key_error("signing key file text does not fit");
    }
    write_new_secret_file(path, text.span().first(static_cast<std::size_t>(n)));
}

signing_key signing_key::load_file(const std::string& path) {
    ensure_sodium();
    auto text = read_secret_file(path, max_signing_file_bytes);
    auto seed = secret_bytes::allocate(crypto_sign_SEEDBYTES);
    ed25519_public_key file_pk{};
    bool ok_seed = false;
    bool ok_pk = false;
    bool ok_alg = false;
    std::int64_t version = 0;
    std::int64_t created = 0;
    auto on_member = [&](std::string_view name, const json_lite::value& v) {
        using json_lite::kind;
        if (name == "v") {
            return v.type == kind::integer && (version = v.num, true);
        }
        if (name == "alg") {
            return v.type == kind::string && (ok_alg = v.str == signing_alg, true);
        }
        if (name == "pk" || name == "sk") {
            if (v.type != kind::string) {
                return false;
            }
            const std::span<unsigned char> out = name == "pk" ? std::span<unsigned char>(file_pk) : seed.span();
            const auto n = base64url_decode(v.str, out);
            (name == "pk" ? ok_pk : ok_seed) = n && *n == out.size();
            return true;
        }
        if (name == "created") {
            return v.type == kind::integer && (created = v.num, true);
        }
        return true;
    };
    if (!json_lite::parse_object(text.chars(), on_member) || version != 1 || !ok_alg) {
        throw key_error("'" + path + "' is not a byok-relay signing key file (byok-relay keygen --signing FILE)");
    }
    if (!ok_seed) {
        throw key_error("signing key file '" + path + "': missing or malformed \"sk\"");
    }
    auto key = from_seed(std::move(seed), created);
    if (!ok_pk || sodium_memcmp(file_pk.data(), key.pk_.data(), file_pk.size()) != 0) {
        throw key_error("signing key file '" + path + "': \"pk\" does not belong to \"sk\" (corrupt file?)");
    }
    return key;
}

ed25519_signature signing_key::sign(std::span<const unsigned char> message) const noexcept {
    ed25519_signature sig{};
    crypto_sign_detached(sig.data(), nullptr, message.data(), message.size(), sk_.data());
    return sig;
}

bool verify_signature(const ed25519_public_key& pk, std::span<const unsigned char> message,
                      const ed25519_signature& sig) noexcept {
    return crypto_sign_verify_detached(sig.data(), message.data(), message.size(), pk.data()) == 0;
}

}  // namespace byok::crypto
