#include "crypto/keyring.hpp"

#include <algorithm>
#include <array>
#include <cerrno>
#include <cstring>
#include <string>

#include <fcntl.h>
#include <sys/stat.h>
#include <unistd.h>

#include <sodium.h>

#include "crypto/encoding.hpp"
#include "crypto/json_lite.hpp"

namespace byok::crypto {
namespace {

constexpr std::size_t max_key_file_bytes = 4096;

std::string errno_text(int err) { return std::strerror(err); }

class fd_guard {
public:
    explicit fd_guard(int fd) noexcept : fd_(fd) {}
    fd_guard(const fd_guard&) = delete;
    fd_guard& operator=(const fd_guard&) = delete;
    ~fd_guard() {
        if (fd_ >= 0) {
            ::close(fd_);
        }
    }
    [[nodiscard]] int get() const noexcept { return fd_; }

private:
    int fd_;
};

// base64url of a secret key, on the stack, wiped by the caller's guard.
using sk_text = std::array<char, sodium_base64_ENCODED_LEN(32, sodium_base64_VARIANT_URLSAFE_NO_PADDING)>;

void encode_secret(std::span<const unsigned char> sk, sk_text& out) noexcept {
    sodium_bin2base64(out.data(), out.size(), sk.data(), sk.size(), sodium_base64_VARIANT_URLSAFE_NO_PADDING);
}

std::string mode_text(mode_t mode) {
    char buf[8];
    std::snprintf(buf, sizeof buf, "%04o", static_cast<unsigned>(mode & 07777));
    return buf;
}

}  // namespace

std::string derive_kid(const public_key& pk) {
    const auto digest = sha256(std::span<const unsigned char>(pk));
    return base64url_encode(std::span(digest.data(), 9));
}

std::string derive_hpke_kid(const public_key& pk) {
    std::array<unsigned char, hpke::suite_id.size() + 32> in{};
    std::copy(hpke::suite_id.begin(), hpke::suite_id.end(), in.begin());
    std::copy(pk.begin(), pk.end(), in.begin() + hpke::suite_id.size());
    const auto digest = sha256(std::span<const unsigned char>(in));
    return base64url_encode(std::span(digest.data(), 9));
}

std::string derive_grant_kid(std::span<const unsigned char> grant_key) {
    sha256_stream h;
    h.update("byok-relay grant kid ");
    h.update(grant_key);
    const auto digest = h.finish();
    return base64url_encode(std::span(digest.data(), 9));
}

void relay_key::attach_hpke(hpke::private_key k) {
    hpke_kid_ = derive_hpke_kid(k.pk());
    hpke_context_ = hpke::schedule_context::base(std::string(hpke_info_prefix) + hpke_kid_);
    hpke_ = std::move(k);
}

const public_key& relay_key::hpke_pk() const noexcept {
    static const public_key none{};
    return hpke_ ? hpke_->pk() : none;
}

relay_key relay_key::from_secret(secret_bytes sk, std::int64_t created, std::int64_t exp) {
    relay_key k;
    if (crypto_scalarmult_base(k.pk_.data(), sk.data()) != 0) {
        throw key_error("could not derive the public key");
    }
    k.sk_ = std::move(sk);
    k.kid_ = derive_kid(k.pk_);
    k.created_ = created;
    k.exp_ = exp;
    return k;
}

relay_key relay_key::generate(std::int64_t now, std::int64_t lifetime_s) {
    ensure_sodium();
    if (lifetime_s <= 0) {
        throw key_error("key lifetime must be positive");
    }
    auto sk = secret_bytes::allocate(crypto_box_SECRETKEYBYTES);
    public_key pk;
    crypto_box_keypair(pk.data(), sk.data());
    auto key = from_secret(std::move(sk), now, now + lifetime_s);
    key.attach_hpke(hpke::private_key::generate());
    key.grant_sk_ = secret_bytes::allocate(crypto_aead_xchacha20poly1305_ietf_KEYBYTES);
    crypto_aead_xchacha20poly1305_ietf_keygen(key.grant_sk_.data());
    key.grant_kid_ = derive_grant_kid(key.grant_sk_.span());
    return key;
}

void relay_key::write_new_file(const std::string& path) const {
    // O_EXCL: never replace a key that may still be in use; 0600 regardless of umask.
    const int raw = ::open(path.c_str(), O_WRONLY | O_CREAT | O_EXCL | O_CLOEXEC | O_NOFOLLOW, 0600);
    if (raw < 0) {
        if (errno == EEXIST) {
            throw key_error("key file '" + path + "' already exists; refusing to overwrite it");
        }
        throw key_error("cannot create key file '" + path + "': " + errno_text(errno));
    }
    fd_guard fd(raw);
    if (::fchmod(fd.get(), 0600) != 0) {
        throw key_error("cannot set mode 0600 on '" + path + "': " + errno_text(errno));
    }
    // The file text holds the secret key, so it is built in secret memory.
    const std::string pk_b64 = base64url_encode(pk_);
    sk_text sk_b64{};
    encode_secret(sk_.span(), sk_b64);
    // The HPKE half, when this key has one: three more members.
    const std::string hpke_pk_b64 = hpke_ ? base64url_encode(hpke_->pk()) : std::string();
    sk_text hpke_sk_b64{};
    if (hpke_) {
        encode_secret(hpke_->secret(), hpke_sk_b64);
    }
    // The grant half, when this key has one: two more members.
    std::array<char, 128> grant_part{};
    if (has_grant()) {
        sk_text grant_sk_b64{};
        encode_secret(grant_sk_.span(), grant_sk_b64);
        std::snprintf(grant_part.data(), grant_part.size(), "\"grant_kid\":\"%s\",\"grant_sk\":\"%s\",",
                      grant_kid_.c_str(), grant_sk_b64.data());
        sodium_memzero(grant_sk_b64.data(), grant_sk_b64.size());
    }
    auto text = secret_bytes::allocate(max_key_file_bytes);
    const int n = std::snprintf(reinterpret_cast<char*>(text.data()), text.size(),
                                "{\"v\":1,\"alg\":\"%.*s\",\"kid\":\"%s\",\"pk\":\"%s\",\"sk\":\"%s\",%s%s%s%s%s%s%s%s"
                                "\"created\":%lld,\"exp\":%lld}\n",
                                static_cast<int>(sealed_box_alg.size()), sealed_box_alg.data(), kid_.c_str(),
                                pk_b64.c_str(), sk_b64.data(), hpke_ ? "\"hpke_kid\":\"" : "", hpke_kid_.c_str(),
                                hpke_ ? "\",\"hpke_pk\":\"" : "", hpke_pk_b64.c_str(), hpke_ ? "\",\"hpke_sk\":\"" : "",
                                hpke_sk_b64.data(), hpke_ ? "\"," : "", grant_part.data(),
                                static_cast<long long>(created_), static_cast<long long>(exp_));
    sodium_memzero(sk_b64.data(), sk_b64.size());
    sodium_memzero(grant_part.data(), grant_part.size());
    sodium_memzero(hpke_sk_b64.data(), hpke_sk_b64.size());
    if (n <= 0 || static_cast<std::size_t>(n) >= text.size()) {
        throw key_error("key file text does not fit");
    }
    // O_EXCL means this process created the file: if it cannot be completed,
    // remove it, so that a half-written key never blocks the next keygen or
    // gets loaded.
    try {
        std::size_t done = 0;
        while (done < static_cast<std::size_t>(n)) {
            const ssize_t w = ::write(fd.get(), text.data() + done, static_cast<std::size_t>(n) - done);
            if (w < 0) {
                if (errno == EINTR) {
                    continue;
                }
                throw key_error("cannot write key file '" + path + "': " + errno_text(errno));
            }
            done += static_cast<std::size_t>(w);
        }
        if (::fsync(fd.get()) != 0) {
            throw key_error("cannot sync key file '" + path + "': " + errno_text(errno));
        }
    } catch (...) {
        ::unlink(path.c_str());
        throw;
    }
}

relay_key relay_key::load_file(const std::string& path) {
    ensure_sodium();
    // O_NONBLOCK: opening a FIFO must not hang start-up; it is refused as not a regular file below.
    const int raw = ::open(path.c_str(), O_RDONLY | O_CLOEXEC | O_NONBLOCK | O_NOCTTY);
    if (raw < 0) {
        throw key_error("cannot open key file '" + path + "': " + errno_text(errno));
    }
    fd_guard fd(raw);
    struct stat st {};
    if (::fstat(fd.get(), &st) != 0) {
        throw key_error("cannot stat key file '" + path + "': " + errno_text(errno));
    }
    if (!S_ISREG(st.st_mode)) {
        throw key_error("key file '" + path + "' is not a regular file");
    }
    if ((st.st_mode & 077) != 0) {
        throw key_error("key file '" + path + "' has mode " + mode_text(st.st_mode) +
                        ": group or others can access it; run chmod 600 on it (the relay refuses a private key "
                        "others can read)");
    }
    if (st.st_size <= 0 || static_cast<std::size_t>(st.st_size) > max_key_file_bytes) {
        throw key_error("key file '" + path + "' has an unexpected size");
    }
    auto text = secret_bytes::allocate(static_cast<std::size_t>(st.st_size));
    std::size_t done = 0;
    while (done < text.size()) {
        const ssize_t r = ::read(fd.get(), text.data() + done, text.size() - done);
        if (r < 0 && errno == EINTR) {
            continue;
        }
        if (r <= 0) {
            throw key_error("cannot read key file '" + path + "'");
        }
        done += static_cast<std::size_t>(r);
    }

    auto sk = secret_bytes::allocate(crypto_box_SECRETKEYBYTES);
    auto hpke_sk = secret_bytes::allocate(hpke::n_sk);
    auto grant_sk = secret_bytes::allocate(crypto_aead_xchacha20poly1305_ietf_KEYBYTES);
    std::string file_grant_kid;
    bool ok_grant_sk = false;
    public_key file_pk{};
    public_key file_hpke_pk{};
    std::string file_hpke_kid;
    std::string file_kid;
    std::string alg;
    std::int64_t version = 0;
    std::int64_t created = -1;
    std::int64_t exp = -1;
    unsigned seen = 0;
    bool ok_sk = false;
    bool ok_pk = false;
    bool ok_hpke_sk = false;
    bool ok_hpke_pk = false;
    auto on_member = [&](std::string_view name, const json_lite::value& v) {
        auto once = [&](unsigned bit) {
            if ((seen & bit) != 0) {
                return false;
            }
            seen |= bit;
            return true;
        };
        using json_lite::kind;
        if (name == "v") {
            return once(1) && v.type == kind::integer && (version = v.num, true);
        }
        if (name == "alg") {
            return once(2) && v.type == kind::string && (alg = v.str, true);
        }
        if (name == "kid") {
            return once(4) && v.type == kind::string && (file_kid = v.str, true);
        }
        // A 32-byte base64url member: the JSON must be well formed, the
        // value's validity is judged after parsing (ok_...).
        auto key_bytes = [&](unsigned bit, std::span<unsigned char> out, bool& ok) {
            if (!once(bit) || v.type != kind::string) {
                return false;
            }
            const auto n = base64url_decode(v.str, out);
            ok = n && *n == out.size();
            return true;
        };
        if (name == "pk") {
            return key_bytes(8, file_pk, ok_pk);
        }
        if (name == "sk") {
            return key_bytes(16, sk.span(), ok_sk);
        }
        if (name == "hpke_kid") {
            return once(128) && v.type == kind::string && (file_hpke_kid = v.str, true);
        }
        if (name == "hpke_pk") {
            return key_bytes(256, file_hpke_pk, ok_hpke_pk);
        }
        if (name == "hpke_sk") {
            return key_bytes(512, hpke_sk.span(), ok_hpke_sk);
        }
        if (name == "grant_kid") {
            return once(1024) && v.type == kind::string && (file_grant_kid = v.str, true);
        }
        if (name == "grant_sk") {
            return key_bytes(2048, grant_sk.span(), ok_grant_sk);
        }
        if (name == "created") {
            return once(32) && v.type == kind::integer && (created = v.num, true);
        }
        if (name == "exp") {
            return once(64) && v.type == kind::integer && (exp = v.num, true);
        }
        return true;  // unknown fields are ignored, as in the wire protocol
    };
    if (!json_lite::parse_object(text.chars(), on_member)) {
        throw key_error("key file '" + path + "' is not a byok-relay key file (malformed JSON)");
    }
    if (version != 1) {
        throw key_error("key file '" + path + "': unsupported or missing version \"v\" (expected 1)");
    }
    if (alg != sealed_box_alg) {
        throw key_error("key file '" + path + "': unsupported or missing \"alg\" (expected x25519-sealedbox)");
    }
    if (!ok_sk) {
        throw key_error("key file '" + path + "': missing or malformed \"sk\"");
    }
    if (exp <= 0) {
        throw key_error("key file '" + path + "': missing or malformed \"exp\"");
    }
    auto key = from_secret(std::move(sk), created < 0 ? 0 : created, exp);
    if ((seen & 8) != 0 && (!ok_pk || sodium_memcmp(file_pk.data(), key.pk_.data(), file_pk.size()) != 0)) {
        throw key_error("key file '" + path + "': \"pk\" does not belong to \"sk\" (corrupt file?)");
    }
    if ((seen & 4) != 0 && file_kid != key.kid_) {
        throw key_error("key file '" + path + "': \"kid\" does not match the key");
    }
    // The HPKE half: absent in files written before HPKE (nothing is made up
    // for them); if present, its sk is required and pk and kid must match it.
    if ((seen & (128 | 256 | 512)) != 0) {
        if (!ok_hpke_sk) {
            throw key_error("key file '" + path + "': missing or malformed \"hpke_sk\"");
        }
        auto hk = hpke::private_key::from_bytes(std::move(hpke_sk));
        if (!hk) {
            throw key_error("key file '" + path + "': malformed \"hpke_sk\"");
        }
        if ((seen & 256) != 0 &&
            (!ok_hpke_pk || sodium_memcmp(file_hpke_pk.data(), hk->pk().data(), file_hpke_pk.size()) != 0)) {
            throw key_error("key file '" + path + "': \"hpke_pk\" does not belong to \"hpke_sk\" (corrupt file?)");
        }
        key.attach_hpke(std::move(*hk));
        if ((seen & 128) != 0 && file_hpke_kid != key.hpke_kid_) {
            throw key_error("key file '" + path + "': \"hpke_kid\" does not match the key");
        }
    }
    // The grant half: absent in files written before grants; if present,
    // grant_sk is required and grant_kid must match it.
    if ((seen & (1024 | 2048)) != 0) {
        if (!ok_grant_sk) {
            throw key_error("key file '" + path + "': missing or malformed \"grant_sk\"");
        }
        key.grant_kid_ = derive_grant_kid(grant_sk.span());
        key.grant_sk_ = std::move(grant_sk);
        if ((seen & 1024) != 0 && file_grant_kid != key.grant_kid_) {
            throw key_error("key file '" + path + "': \"grant_kid\" does not match the key");
        }
    }
    return key;
}

bool relay_key::open(std::span<const unsigned char> sealed, std::span<unsigned char> out) const noexcept {
    if (sealed.size() < crypto_box_SEALBYTES || out.size() != sealed.size() - crypto_box_SEALBYTES) {
        return false;
    }
    return crypto_box_seal_open(out.data(), sealed.data(), sealed.size(), pk_.data(), sk_.data()) == 0;
}

bool relay_key::open_hpke(std::span<const unsigned char> sealed, std::span<unsigned char> out) const {
    if (!hpke_ || sealed.size() < hpke::n_enc + hpke::n_t || out.size() != sealed.size() - hpke::n_enc - hpke::n_t) {
        return false;
    }
    try {
        auto r = hpke::recipient::setup(sealed.first(hpke::n_enc), *hpke_, *hpke_context_);
        return r && std::move(*r).open({}, sealed.subspan(hpke::n_enc), out);
    } catch (const std::bad_alloc&) {
        throw;
    } catch (const std::exception&) {
        return false;  // OpenSSL failed inside: refuse, as for any seal that does not open
    }
}

namespace {

// The additional data of a grant token: grant_ad_prefix, then the kid.
std::string grant_ad(const std::string& kid) { return std::string(grant_ad_prefix) + kid; }

}  // namespace

std::vector<unsigned char> relay_key::seal_grant(std::span<const unsigned char> plaintext,
                                                 std::span<const unsigned char, 24> nonce) const {
    if (!has_grant()) {
        throw key_error("this key has no grant half");
    }
    static_assert(crypto_aead_xchacha20poly1305_ietf_NPUBBYTES == 24);
    const std::string ad = grant_ad(grant_kid_);
    std::vector<unsigned char> out(nonce.size() + plaintext.size() + crypto_aead_xchacha20poly1305_ietf_ABYTES);
    std::copy(nonce.begin(), nonce.end(), out.begin());
    unsigned long long ct_len = 0;
    crypto_aead_xchacha20poly1305_ietf_encrypt(out.data() + nonce.size(), &ct_len, plaintext.data(), plaintext.size(),
                                               reinterpret_cast<const unsigned char*>(ad.data()), ad.size(), nullptr,
                                               nonce.data(), grant_sk_.data());
    return out;
}

bool relay_key::open_grant(std::span<const unsigned char> sealed, std::span<unsigned char> out) const noexcept {
    constexpr std::size_t overhead =
        crypto_aead_xchacha20poly1305_ietf_NPUBBYTES + crypto_aead_xchacha20poly1305_ietf_ABYTES;
    if (!has_grant() || sealed.size() < overhead || out.size() != sealed.size() - overhead) {
        return false;
    }
    // The additional data on the stack: no allocation on the request path.
    std::array<unsigned char, grant_ad_prefix.size() + 64> ad{};
    if (grant_kid_.size() > ad.size() - grant_ad_prefix.size()) {
        return false;
    }
    std::copy(grant_ad_prefix.begin(), grant_ad_prefix.end(), ad.begin());
    std::copy(grant_kid_.begin(), grant_kid_.end(), ad.begin() + grant_ad_prefix.size());
    unsigned long long n = 0;
    const auto nonce = sealed.first(crypto_aead_xchacha20poly1305_ietf_NPUBBYTES);
    const auto ct = sealed.subspan(nonce.size());
    return crypto_aead_xchacha20poly1305_ietf_decrypt(out.data(), &n, nullptr, ct.data(), ct.size(), ad.data(),
                                                      grant_ad_prefix.size() + grant_kid_.size(), nonce.data(),
                                                      grant_sk_.data()) == 0 &&
           n == out.size();
}

std::shared_ptr<const keyring> keyring::load(const std::vector<std::string>& paths) {
    std::vector<relay_key> keys;
    keys.reserve(paths.size());
    for (std::size_t i = 0; i < paths.size(); ++i) {
        keys.push_back(relay_key::load_file(paths[i]));
        for (std::size_t j = 0; j < i; ++j) {
            if (keys[j].kid() == keys[i].kid() || (keys[i].has_hpke() && keys[j].hpke_kid() == keys[i].hpke_kid()) ||
                (keys[i].has_grant() && keys[j].grant_kid() == keys[i].grant_kid())) {
                throw key_error("key files '" + paths[j] + "' and '" + paths[i] + "' hold the same key (kid " +
                                keys[i].kid() + ")");
            }
        }
    }
    return from_keys(std::move(keys));
}

std::shared_ptr<const keyring> keyring::from_keys(std::vector<relay_key> keys) {
    if (keys.empty()) {
        throw key_error("no keys: at least one key file is needed");
    }
    // Every kid (sealed-box or HPKE, of any key) names one key pair only.
    std::vector<std::string_view> kids;
    for (const auto& k : keys) {
        kids.push_back(k.kid());
        if (k.has_hpke()) {
            kids.push_back(k.hpke_kid());
        }
        if (k.has_grant()) {
            kids.push_back(k.grant_kid());
        }
    }
    for (std::size_t i = 0; i < kids.size(); ++i) {
        for (std::size_t j = 0; j < i; ++j) {
            if (kids[i] == kids[j]) {
                throw key_error("the same key (kid " + std::string(kids[i]) + ") is loaded twice");
            }
        }
    }
    return std::shared_ptr<const keyring>(new keyring(std::move(keys)));
}

const relay_key* keyring::find(std::string_view kid) const noexcept {
    for (const auto& k : keys_) {
        if (k.kid() == kid) {
            return &k;
        }
    }
    return nullptr;
}

keyring::found keyring::lookup(std::string_view kid) const noexcept {
    for (const auto& k : keys_) {
        if (k.kid() == kid) {
            return {&k, seal_alg::sealed_box};
        }
        if (k.has_hpke() && k.hpke_kid() == kid) {
            return {&k, seal_alg::hpke};
        }
    }
    return {};
}

const relay_key* keyring::find_grant(std::string_view kid) const noexcept {
    for (const auto& k : keys_) {
        if (k.has_grant() && k.grant_kid() == kid) {
            return &k;
        }
    }
    return nullptr;
}

const relay_key* keyring::grant_signer(std::int64_t now) const noexcept {
    for (const auto& k : keys_) {
        if (k.has_grant() && !k.expired(now)) {
            return &k;
        }
    }
    return nullptr;
}

std::string keyring::key_config_json(std::int64_t now) const {
    std::string out = "{\"keys\":[";
    bool first = true;
    auto entry = [&](const std::string& kid, std::string_view alg, const public_key& pk, std::int64_t exp) {
        if (!first) {
            out += ',';
        }
        first = false;
        out += "{\"kid\":\"" + kid + "\",\"alg\":\"" + std::string(alg) + "\",\"pk\":\"" + base64url_encode(pk) +
               "\",\"exp\":" + std::to_string(exp) + "}";
    };
    for (const auto& k : keys_) {
        if (!k.expired(now)) {
            entry(k.kid(), sealed_box_alg, k.pk(), k.exp());
        }
    }
    for (const auto& k : keys_) {
        if (!k.expired(now) && k.has_hpke()) {
            entry(k.hpke_kid(), hpke_alg, k.hpke_pk(), k.exp());
        }
    }
    out += "]}";
    return out;
}

}  // namespace byok::crypto
