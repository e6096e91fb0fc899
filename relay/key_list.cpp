#include "relay/key_list.hpp"

#include <algorithm>
#include <ctime>
#include <limits>

#include <nlohmann/json.hpp>

#include "crypto/encoding.hpp"
#include "relay/config.hpp"
#include "relay/file_text.hpp"

namespace byok::relay {
namespace {

using nlohmann::json;

constexpr std::size_t max_list_bytes = 64 << 10;

std::string date_text(std::int64_t t) {
    const std::time_t tt = static_cast<std::time_t>(t);
    std::tm tm{};
    gmtime_r(&tt, &tm);
    char buf[32];
    std::strftime(buf, sizeof buf, "%Y-%m-%dT%H:%M:%SZ", &tm);
    return buf;
}

[[noreturn]] void fail(const std::string& what) { throw config_error("key_list_file: " + what); }

// Strict base64url of exactly `n` bytes (n = 0: any length).
std::vector<unsigned char> decode(const json& v, std::size_t n, const char* field) {
    if (!v.is_string()) {
        fail(std::string("\"signed\".\"") + field + "\" is missing or not a string");
    }
    const auto& s = v.get_ref<const std::string&>();
    std::vector<unsigned char> out(crypto::base64url_decoded_max(s.size()));
    const auto got = crypto::base64url_decode_public(s, out);
    if (!got || (n != 0 && *got != n)) {
        fail(std::string("\"signed\".\"") + field + "\" is not canonical base64url of the right length");
    }
    out.resize(*got);
    return out;
}

// The "keys" array of keyring::key_config_json, as text.
std::string keys_array_text(const crypto::keyring& keys, std::int64_t now) {
    const std::string doc = keys.key_config_json(now);  // {"keys":[...]}
    constexpr std::string_view head = "{\"keys\":";
    return doc.substr(head.size(), doc.size() - head.size() - 1);
}

}  // namespace

std::string make_signed_key_list(const crypto::keyring& keys, const crypto::signing_key& signer, std::int64_t now,
                                 std::int64_t exp) {
    const std::string arr = keys_array_text(keys, now);
    const std::string list = "{\"typ\":\"" + std::string(key_list_typ) + "\",\"v\":1,\"iat\":" + std::to_string(now) +
                             ",\"exp\":" + std::to_string(exp) + ",\"keys\":" + arr + "}";
    const auto bytes = std::span(reinterpret_cast<const unsigned char*>(list.data()), list.size());
    const auto sig = signer.sign(bytes);
    return "{\"keys\":" + arr + ",\"signed\":{\"alg\":\"ed25519\",\"signer\":\"" +
           crypto::base64url_encode(signer.pk()) + "\",\"list\":\"" + crypto::base64url_encode(bytes) +
           "\",\"sig\":\"" + crypto::base64url_encode(sig) + "\"}}\n";
}

std::string key_list_expiry_note(const signed_key_list& list, std::int64_t now) {
    if (list.exp() <= now) {
        return "error: key_list_file: the signed list expired at " + date_text(list.exp()) +
               "; clients that pin the signing key refuse it and send nothing: sign a new one (byok-relay "
               "sign-keys) and reload (SIGHUP)";
    }
    if (list.exp() - now < key_list_warn_s) {
        return "warning: key_list_file: the signed list expires at " + date_text(list.exp()) +
               "; sign a new one (byok-relay sign-keys) and reload (SIGHUP) before then";
    }
    return "";
}

std::shared_ptr<const signed_key_list> signed_key_list::load(const std::string& path, const crypto::keyring& keys,
                                                             std::int64_t now, std::vector<std::string>& warnings) {
    auto file = read_regular_file(path, max_list_bytes);  // a FIFO or a device must not hang a reload
    if (!file.text) {
        fail("cannot read '" + path + "': " + file.why);
    }
    return check(std::move(*file.text), keys, now, warnings);
}

std::shared_ptr<const signed_key_list> signed_key_list::check(std::string text, const crypto::keyring& keys,
                                                              std::int64_t now, std::vector<std::string>& warnings) {
    const json outer = json::parse(text, nullptr, false);
    if (!outer.is_object() || !outer.contains("signed") || !outer["signed"].is_object()) {
        fail("not a signed key list (make one with: byok-relay sign-keys)");
    }
    const json& s = outer["signed"];
    if (s.value("alg", "") != "ed25519") {
        fail("\"signed\".\"alg\" must be \"ed25519\"");
    }
    const auto signer = decode(s.value("signer", json()), 32, "signer");
    const auto sig = decode(s.value("sig", json()), 64, "sig");
    const auto list = decode(s.value("list", json()), 0, "list");
    crypto::ed25519_public_key pk{};
    crypto::ed25519_signature sg{};
    std::copy(signer.begin(), signer.end(), pk.begin());
    std::copy(sig.begin(), sig.end(), sg.begin());
    if (!crypto::verify_signature(pk, list, sg)) {
        fail("the signature does not verify (the file was changed after signing)");
    }
    const json inner = json::parse(list.begin(), list.end(), nullptr, false);
    if (!inner.is_object() || inner.value("typ", "") != key_list_typ || inner.value("v", 0) != 1 ||
        !inner.contains("exp") || !inner["exp"].is_number_integer() || !inner.contains("keys") ||
        !inner["keys"].is_array()) {
        fail("the signed list is not a byok-relay key list v1");
    }
    if (!outer.contains("keys") || outer["keys"] != inner["keys"]) {
        fail("\"keys\" differs from the keys inside the signed list");
    }
    // Every key the relay holds, expired ones included, by kid.
    const json held = json::parse(keys.key_config_json(std::numeric_limits<std::int64_t>::min()))["keys"];
    std::size_t usable = 0;
    for (const auto& k : inner["keys"]) {
        const std::string kid = k.is_object() ? k.value("kid", "") : "";
        const auto it = std::find_if(held.begin(), held.end(), [&](const json& h) { return h["kid"] == kid; });
        if (it == held.end()) {
            fail("the list names kid '" + kid + "', which is not in key_files: sign the list again for the keys "
                 "the relay loads (byok-relay sign-keys)");
        }
        if (*it != k) {
            fail("the list's entry for kid '" + kid + "' differs from the key in key_files (alg, pk or exp)");
        }
        if (k["exp"].get<std::int64_t>() > now) {
            ++usable;
        }
    }
    const std::string now_list = keys_array_text(keys, now);
    for (const auto& h : json::parse(now_list)) {
        if (std::find(inner["keys"].begin(), inner["keys"].end(), h) == inner["keys"].end()) {
            warnings.push_back("key_list_file: kid " + h["kid"].get<std::string>() +
                               " is loaded but not in the signed list; clients that pin the signing key will not "
                               "seal to it (sign the list again)");
        }
    }
    const auto exp = inner["exp"].get<std::int64_t>();
    if (exp <= now) {
        fail("the signed list expired at " + date_text(exp) + "; sign a new one (byok-relay sign-keys)");
    }
    if (usable == 0) {
        fail("the signed list names no key that is still valid");
    }
    if (exp - now < key_list_warn_s) {
        warnings.push_back("key_list_file: the signed list expires at " + date_text(exp) +
                           "; sign a new one before then (byok-relay sign-keys), or clients that pin the signing "
                           "key stop sending requests");
    }
    auto out = std::shared_ptr<signed_key_list>(new signed_key_list());
    out->text_ = std::move(text);
    out->signer_ = crypto::base64url_encode(pk);
    out->exp_ = exp;
    return out;
}

}  // namespace byok::relay
