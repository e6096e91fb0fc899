#include "crypto/keyring.hpp"

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
    return from_secret(std::move(sk), now, now + lifetime_s);
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
    char sk_b64[sodium_base64_ENCODED_LEN(32, sodium_base64_VARIANT_URLSAFE_NO_PADDING)];
    sodium_bin2base64(sk_b64, sizeof sk_b64, sk_.data(), sk_.size(), sodium_base64_VARIANT_URLSAFE_NO_PADDING);
    auto text = secret_bytes::allocate(max_key_file_bytes);
    const int n = std::snprintf(reinterpret_cast<char*>(text.data()), text.size(),
                                "{\"v\":1,\"alg\":\"%.*s\",\"kid\":\"%s\",\"pk\":\"%s\",\"sk\":\"%s\","
                                "\"created\":%lld,\"exp\":%lld}\n",
                                static_cast<int>(sealed_box_alg.size()), sealed_box_alg.data(), kid_.c_str(),
                                pk_b64.c_str(), sk_b64, static_cast<long long>(created_),
                                static_cast<long long>(exp_));
    sodium_memzero(sk_b64, sizeof sk_b64);
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
    public_key file_pk{};
    std::string file_kid;
    std::string alg;
    std::int64_t version = 0;
    std::int64_t created = -1;
    std::int64_t exp = -1;
    unsigned seen = 0;
    bool ok_sk = false;
    bool ok_pk = false;
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
        if (name == "pk") {
            if (!once(8) || v.type != kind::string) {
                return false;
            }
            const auto n = base64url_decode(v.str, file_pk);
            ok_pk = n && *n == file_pk.size();
            return true;
        }
        if (name == "sk") {
            if (!once(16) || v.type != kind::string) {
                return false;
            }
            const auto n = base64url_decode(v.str, sk.span());
            ok_sk = n && *n == sk.size();
            return true;
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
    return key;
}

bool relay_key::open(std::span<const unsigned char> sealed, std::span<unsigned char> out) const noexcept {
    if (sealed.size() < crypto_box_SEALBYTES || out.size() != sealed.size() - crypto_box_SEALBYTES) {
        return false;
    }
    return crypto_box_seal_open(out.data(), sealed.data(), sealed.size(), pk_.data(), sk_.data()) == 0;
}

std::shared_ptr<const keyring> keyring::load(const std::vector<std::string>& paths) {
    std::vector<relay_key> keys;
    keys.reserve(paths.size());
    for (std::size_t i = 0; i < paths.size(); ++i) {
        keys.push_back(relay_key::load_file(paths[i]));
        for (std::size_t j = 0; j < i; ++j) {
            if (keys[j].kid() == keys[i].kid()) {
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
    for (std::size_t i = 0; i < keys.size(); ++i) {
        for (std::size_t j = 0; j < i; ++j) {
            if (keys[i].kid() == keys[j].kid()) {
                throw key_error("the same key (kid " + keys[i].kid() + ") is loaded twice");
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

std::string keyring::key_config_json(std::int64_t now) const {
    std::string out = "{\"keys\":[";
    bool first = true;
    for (const auto& k : keys_) {
        if (k.expired(now)) {
            continue;
        }
        if (!first) {
            out += ',';
        }
        first = false;
        out += "{\"kid\":\"" + k.kid() + "\",\"alg\":\"" + std::string(sealed_box_alg) + "\",\"pk\":\"" +
               base64url_encode(k.pk()) + "\",\"exp\":" + std::to_string(k.exp()) + "}";
    }
    out += "]}";
    return out;
}

}  // namespace byok::crypto
