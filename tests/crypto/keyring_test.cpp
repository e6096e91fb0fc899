#include "crypto/keyring.hpp"

#include <doctest/doctest.h>

#include <fstream>
#include <sstream>
#include <string>
#include <vector>

#include <csignal>

#include <sys/resource.h>
#include <sys/stat.h>
#include <unistd.h>

#include <nlohmann/json.hpp>

#include "tests/crypto/test_support.hpp"

using namespace byok;
using namespace byok::test;

namespace {

std::string read_text(const std::string& path) {
    std::ifstream in(path, std::ios::binary);
    std::stringstream ss;
    ss << in.rdbuf();
    return ss.str();
}

void write_text(const std::string& path, const std::string& text, mode_t mode) {
    {
        std::ofstream out(path, std::ios::binary | std::ios::trunc);
        out << text;
    }
    REQUIRE(::chmod(path.c_str(), mode) == 0);
}

mode_t mode_of(const std::string& path) {
    struct stat st {};
    REQUIRE(::stat(path.c_str(), &st) == 0);
    return st.st_mode & 07777;
}

// The message of the key_error that loading `path` throws ("" if none).
std::string load_error(const std::string& path) {
    try {
        (void)crypto::relay_key::load_file(path);
    } catch (const crypto::key_error& e) {
        return e.what();
    }
    return "";
}

// Each (name, file text) of `cases`, written as a key file, is refused with a
// message that names the file and contains none of `secrets`.
void check_each_refused(const temp_dir& dir, const std::vector<std::pair<std::string, std::string>>& cases,
                        const std::vector<std::string>& secrets) {
    for (const auto& [name, text] : cases) {
        CAPTURE(name);
        const auto path = dir.file("bad.json");
        std::filesystem::remove(path);
        write_text(path, text, 0600);
        const auto msg = load_error(path);
        CAPTURE(msg);
        CHECK_FALSE(msg.empty());
        CHECK(msg.find(path) != std::string::npos);
        for (const auto& secret : secrets) {
            CHECK(msg.find(secret) == std::string::npos);
        }
    }
}

// Umask 077 would hide a keygen that forgot to force 0600; 0 shows it.
class umask_guard {
public:
    explicit umask_guard(mode_t m) : old_(::umask(m)) {}
    umask_guard(const umask_guard&) = delete;
    umask_guard& operator=(const umask_guard&) = delete;
    ~umask_guard() { ::umask(old_); }

private:
    mode_t old_;
};

}  // namespace

TEST_CASE("kid: 12 URL-safe characters, base64url of the first 9 bytes of SHA-256(pk)") {
    const auto key = crypto::relay_key::generate(t0);
    CHECK(key.kid().size() == 12);
    CHECK(key.kid().find_first_not_of("ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789-_") ==
          std::string::npos);
    const auto digest = crypto::sha256(std::span<const unsigned char>(key.pk()));
    CHECK(key.kid() == crypto::base64url_encode(std::span(digest.data(), 9)));
    CHECK(key.exp() == t0 + crypto::default_key_lifetime_s);
    CHECK(key.created() == t0);
    CHECK_THROWS_AS((void)crypto::relay_key::generate(t0, 0), crypto::key_error);
}

TEST_CASE("keygen writes mode 0600 whatever the umask, and the file loads back to the same key") {
    temp_dir dir;
    const auto path = dir.file("key.json");
    const auto key = crypto::relay_key::generate(t0, 3600);
    {
        umask_guard u(0);
        key.write_new_file(path);
    }
    CHECK(mode_of(path) == 0600);
    const auto loaded = crypto::relay_key::load_file(path);
    CHECK(loaded.kid() == key.kid());
    CHECK(loaded.pk() == key.pk());
    CHECK(loaded.exp() == t0 + 3600);
    CHECK(loaded.created() == t0);

    const auto j = nlohmann::json::parse(read_text(path));
    CHECK(j["v"] == 1);
    CHECK(j["alg"] == "x25519-sealedbox");
    CHECK(j["kid"] == key.kid());
    CHECK(j["pk"] == crypto::base64url_encode(key.pk()));
    CHECK(j["sk"].get<std::string>().size() == 43);
    CHECK(j["exp"] == t0 + 3600);

    // The loaded secret key opens what is sealed to the generated public key.
    const std::string secret = "the plaintext";
    const auto box = raw_seal(key.pk(), secret);
    std::string out(secret.size(), '\0');
    CHECK(loaded.open(box, std::span(reinterpret_cast<unsigned char*>(out.data()), out.size())));
    CHECK(out == secret);
}

TEST_CASE("keygen refuses to overwrite an existing file, or to follow a symlink") {
    temp_dir dir;
    const auto path = dir.file("key.json");
    const auto first = crypto::relay_key::generate(t0);
    first.write_new_file(path);
    const auto before = read_text(path);
    const auto second = crypto::relay_key::generate(t0);
    try {
        second.write_new_file(path);
        FAIL("overwrote an existing key file");
    } catch (const crypto::key_error& e) {
        CHECK(std::string(e.what()).find(path) != std::string::npos);
        CHECK(std::string(e.what()).find("already exists") != std::string::npos);
    }
    CHECK(read_text(path) == before);

    const auto link = dir.file("link.json");
    REQUIRE(::symlink(dir.file("elsewhere.json").c_str(), link.c_str()) == 0);
    CHECK_THROWS_AS(second.write_new_file(link), crypto::key_error);
    CHECK_FALSE(std::filesystem::exists(dir.file("elsewhere.json")));
}

TEST_CASE("keygen that cannot finish writing removes its half-written file") {
    temp_dir dir;
    const auto path = dir.file("key.json");
    // A file size limit of 16 bytes makes write() fail with EFBIG part-way.
    rlimit old{};
    REQUIRE(::getrlimit(RLIMIT_FSIZE, &old) == 0);
    const auto old_handler = std::signal(SIGXFSZ, SIG_IGN);
    rlimit small = old;
    small.rlim_cur = 16;
    REQUIRE(::setrlimit(RLIMIT_FSIZE, &small) == 0);
    std::string msg;
    try {
        crypto::relay_key::generate(t0).write_new_file(path);
    } catch (const crypto::key_error& e) {
        msg = e.what();
    }
    REQUIRE(::setrlimit(RLIMIT_FSIZE, &old) == 0);
    std::signal(SIGXFSZ, old_handler);
    CHECK(msg.find("cannot write key file") != std::string::npos);
    CHECK_FALSE(std::filesystem::exists(path));
    crypto::relay_key::generate(t0).write_new_file(path);  // and the next keygen works
    CHECK(load_error(path).empty());
}

TEST_CASE("a key file group or others can read is refused, naming the file and the mode") {
    temp_dir dir;
    const auto path = dir.file("key.json");
    crypto::relay_key::generate(t0).write_new_file(path);
    for (const mode_t mode : {0644, 0640, 0604, 0660, 0601, 0610, 0666}) {
        REQUIRE(::chmod(path.c_str(), mode) == 0);
        const auto msg = load_error(path);
        CAPTURE(msg);
        CHECK(msg.find("'" + path + "'") != std::string::npos);
        char octal[8];
        std::snprintf(octal, sizeof octal, "%04o", static_cast<unsigned>(mode));
        CHECK(msg.find(std::string("mode ") + octal) != std::string::npos);
        CHECK(msg.find("chmod 600") != std::string::npos);
    }
    for (const mode_t mode : {0600, 0400}) {
        REQUIRE(::chmod(path.c_str(), mode) == 0);
        CHECK(load_error(path).empty());
    }
}

TEST_CASE("a key file that is not a valid key is refused, naming the file and never the key") {
    temp_dir dir;
    const auto good_path = dir.file("good.json");
    const auto key = crypto::relay_key::generate(t0);
    key.write_new_file(good_path);
    const auto good = nlohmann::json::parse(read_text(good_path));
    const auto other = crypto::relay_key::generate(t0);
    const std::string sk = good["sk"];

    auto variant = [&](auto edit) {
        nlohmann::json j = good;
        edit(j);
        return j.dump();
    };
    const std::vector<std::pair<std::string, std::string>> cases = {
        {"pk of another key", variant([&](auto& j) { j["pk"] = crypto::base64url_encode(other.pk()); })},
        {"pk one char off", variant([&](auto& j) {
             std::string pk = j["pk"];
             pk[0] = pk[0] == 'A' ? 'B' : 'A';
             j["pk"] = pk;
         })},
        {"pk too short", variant([&](auto& j) { j["pk"] = std::string(j["pk"]).substr(0, 40); })},
        // 44 characters: the first 32 decoded bytes are the right pk, then there is one too many.
        {"pk one char too long", variant([&](auto& j) { j["pk"] = std::string(j["pk"]) + "A"; })},
        {"kid of another key", variant([&](auto& j) { j["kid"] = other.kid(); })},
        {"kid empty", variant([&](auto& j) { j["kid"] = ""; })},
        {"sk missing", variant([&](auto& j) { j.erase("sk"); })},
        {"sk short", variant([&](auto& j) { j["sk"] = sk.substr(0, 42); })},
        {"sk long", variant([&](auto& j) { j["sk"] = sk + "AA"; })},
        {"sk not base64url", variant([&](auto& j) { j["sk"] = "+" + sk.substr(1); })},
        {"sk a number", variant([&](auto& j) { j["sk"] = 5; })},
        {"exp missing", variant([&](auto& j) { j.erase("exp"); })},
        {"exp a string", variant([&](auto& j) { j["exp"] = "1800000000"; })},
        {"v 2", variant([&](auto& j) { j["v"] = 2; })},
        {"v missing", variant([&](auto& j) { j.erase("v"); })},
        {"alg other", variant([&](auto& j) { j["alg"] = "x25519-hpke"; })},
        {"duplicate sk", good.dump().insert(1, "\"sk\":\"" + sk + "\",")},
        {"not JSON", "sk=" + sk},
        {"truncated", good.dump().substr(0, 40)},
        {"empty", ""},
    };
    check_each_refused(dir, cases, {sk});
    CHECK(load_error(dir.file("absent.json")).find("absent.json") != std::string::npos);
    CHECK_FALSE(load_error(dir.path().string()).empty());  // a directory
    // A FIFO (nobody writing) is refused at once instead of hanging start-up.
    const auto fifo = dir.file("fifo.json");
    REQUIRE(::mkfifo(fifo.c_str(), 0600) == 0);
    CHECK(load_error(fifo).find("not a regular file") != std::string::npos);

    // pk and kid are optional: a file with only v, alg, sk and exp still loads.
    const auto minimal = dir.file("minimal.json");
    write_text(minimal, variant([](auto& j) {
                   j.erase("pk");
                   j.erase("kid");
                   j.erase("created");
               }),
               0600);
    const auto loaded = crypto::relay_key::load_file(minimal);
    CHECK(loaded.kid() == key.kid());
    CHECK(loaded.created() == 0);
}

TEST_CASE("two keys loaded, newest first; each opens its own seals, not the other's") {
    temp_dir dir;
    const auto a = crypto::relay_key::generate(t0);
    const auto b = crypto::relay_key::generate(t0 - 30 * 86400);
    a.write_new_file(dir.file("a.json"));
    b.write_new_file(dir.file("b.json"));
    const auto ring = crypto::keyring::load({dir.file("a.json"), dir.file("b.json")});
    REQUIRE(ring->keys().size() == 2);
    CHECK(ring->keys()[0].kid() == a.kid());
    CHECK(ring->keys()[1].kid() == b.kid());
    REQUIRE(ring->find(a.kid()) != nullptr);
    REQUIRE(ring->find(b.kid()) != nullptr);
    CHECK(ring->find("nope") == nullptr);

    const std::string msg = "a seal";
    std::string out(msg.size(), '\0');
    const std::span<unsigned char> out_span(reinterpret_cast<unsigned char*>(out.data()), out.size());
    CHECK(ring->find(a.kid())->open(raw_seal(a.pk(), msg), out_span));
    CHECK(ring->find(b.kid())->open(raw_seal(b.pk(), msg), out_span));
    CHECK_FALSE(ring->find(a.kid())->open(raw_seal(b.pk(), msg), out_span));
    CHECK_FALSE(ring->find(b.kid())->open(raw_seal(a.pk(), msg), out_span));
    // A wrong output size is refused before any work.
    std::string small(msg.size() - 1, '\0');
    CHECK_FALSE(ring->find(a.kid())->open(raw_seal(a.pk(), msg),
                                           std::span(reinterpret_cast<unsigned char*>(small.data()), small.size())));
}

TEST_CASE("a keyring refuses no keys and the same key twice") {
    temp_dir dir;
    crypto::relay_key::generate(t0).write_new_file(dir.file("a.json"));
    CHECK_THROWS_AS((void)crypto::keyring::load({}), crypto::key_error);
    try {
        (void)crypto::keyring::load({dir.file("a.json"), dir.file("a.json")});
        FAIL("loaded the same key twice");
    } catch (const crypto::key_error& e) {
        CHECK(std::string(e.what()).find("a.json' and '") != std::string::npos);
    }
    try {
        (void)crypto::keyring::load({dir.file("a.json"), dir.file("missing.json")});
        FAIL("loaded a missing file");
    } catch (const crypto::key_error& e) {
        CHECK(std::string(e.what()).find("missing.json") != std::string::npos);
    }
}

TEST_CASE("key_config_json: the documented shape, in order, expired keys left out") {
    std::vector<crypto::relay_key> keys;
    keys.push_back(crypto::relay_key::generate(t0, 86400));          // exp t0 + 1 day
    keys.push_back(crypto::relay_key::generate(t0 - 86400, 86400 + 10));  // exp t0 + 10
    keys.push_back(crypto::relay_key::generate(t0 - 200, 100));      // exp t0 - 100: expired
    const std::string kid0 = keys[0].kid();
    const std::string kid1 = keys[1].kid();
    const auto ring = crypto::keyring::from_keys(std::move(keys));

    const std::string text = ring->key_config_json(t0);
    const auto j = nlohmann::json::parse(text);
    REQUIRE(j.is_object());
    CHECK(j.size() == 1);
    REQUIRE(j["keys"].is_array());
    // The sealed-box entries first, then the HPKE entries, each in key order.
    REQUIRE(j["keys"].size() == 4);
    CHECK(j["keys"][0]["kid"] == kid0);
    CHECK(j["keys"][1]["kid"] == kid1);
    CHECK(j["keys"][2]["kid"] == ring->keys()[0].hpke_kid());
    CHECK(j["keys"][3]["kid"] == ring->keys()[1].hpke_kid());
    for (std::size_t i = 0; i < 4; ++i) {
        const auto& k = j["keys"][i];
        const bool hpke = i >= 2;
        CHECK(k.size() == 4);
        CHECK(k["alg"] == (hpke ? "hpke-x25519-sha256-aes128gcm" : "x25519-sealedbox"));
        CHECK(k["exp"] == ring->keys()[i % 2].exp());
        const std::string pk = k["pk"];
        CHECK(pk.size() == 43);
        crypto::public_key decoded{};
        const auto n = crypto::base64url_decode(pk, decoded);
        REQUIRE(n);
        CHECK(*n == 32);
        const std::string kid = k["kid"];
        CHECK((hpke ? crypto::derive_hpke_kid(decoded) : crypto::derive_kid(decoded)) == kid);
        const auto found = ring->lookup(kid);
        REQUIRE(found.key == &ring->keys()[i % 2]);
        CHECK(found.alg == (hpke ? crypto::seal_alg::hpke : crypto::seal_alg::sealed_box));
        CHECK((hpke ? found.key->hpke_pk() : found.key->pk()) == decoded);
    }
    CHECK(j["keys"][0]["exp"] == t0 + 86400);
    CHECK(text.find("\"sk\"") == std::string::npos);

    // At t0 + 10 the second key has expired too; at t0 + 1 day, all of them.
    CHECK(nlohmann::json::parse(ring->key_config_json(t0 + 10))["keys"].size() == 2);
    CHECK(ring->key_config_json(t0 + 86400) == R"({"keys":[]})");
}

// ---- the HPKE half -----------------------------------------------------------------

TEST_CASE("HPKE kid: 12 URL-safe characters over the suite id and the key; distinct from the sealed-box kid") {
    const auto key = crypto::relay_key::generate(t0);
    REQUIRE(key.has_hpke());
    CHECK(key.hpke_kid().size() == 12);
    const std::string in = std::string("HPKE\x00\x20\x00\x01\x00\x01", 10) +
                           std::string(key.hpke_pk().begin(), key.hpke_pk().end());
    const auto digest = crypto::sha256(in);
    CHECK(key.hpke_kid() == crypto::base64url_encode(std::span(digest.data(), 9)));
    CHECK(key.hpke_kid() != key.kid());
    CHECK(key.hpke_pk() != key.pk());
    CHECK(crypto::derive_hpke_kid(key.pk()) != crypto::derive_kid(key.pk()));
}

TEST_CASE("keygen writes the HPKE half; it loads back and opens HPKE seals, only as HPKE") {
    temp_dir dir;
    const auto path = dir.file("key.json");
    const auto key = crypto::relay_key::generate(t0, 3600);
    key.write_new_file(path);
    const auto j = nlohmann::json::parse(read_text(path));
    CHECK(j["hpke_kid"] == key.hpke_kid());
    CHECK(j["hpke_pk"] == crypto::base64url_encode(key.hpke_pk()));
    CHECK(j["hpke_sk"].get<std::string>().size() == 43);
    CHECK(j["hpke_sk"] != j["sk"]);

    const auto loaded = crypto::relay_key::load_file(path);
    REQUIRE(loaded.has_hpke());
    CHECK(loaded.hpke_kid() == key.hpke_kid());
    CHECK(loaded.hpke_pk() == key.hpke_pk());

    const std::string msg = "the plaintext";
    auto seal = [&](std::string_view info_kid) { return hpke_seal(key, msg, info_kid); };
    std::string out(msg.size(), '\0');
    const std::span<unsigned char> out_span(reinterpret_cast<unsigned char*>(out.data()), out.size());
    CHECK(loaded.open_hpke(seal(key.hpke_kid()), out_span));
    CHECK(out == msg);
    CHECK_FALSE(loaded.open_hpke(seal(key.kid()), out_span));           // info names another kid
    CHECK_FALSE(loaded.open(seal(key.hpke_kid()), out_span));            // an HPKE seal is no sealed box
    CHECK_FALSE(loaded.open_hpke(raw_seal(key.pk(), msg), out_span));     // nor the reverse
    CHECK_FALSE(loaded.open_hpke(raw_seal(key.hpke_pk(), msg), out_span));
}

TEST_CASE("a key file from before HPKE loads as it is: no HPKE key is made up, none is listed") {
    temp_dir dir;
    const auto key = crypto::relay_key::generate(t0, 3600);
    key.write_new_file(dir.file("new.json"));
    auto j = nlohmann::json::parse(read_text(dir.file("new.json")));
    j.erase("hpke_kid");
    j.erase("hpke_pk");
    j.erase("hpke_sk");
    write_text(dir.file("old.json"), j.dump(), 0600);
    const auto ring = crypto::keyring::load({dir.file("old.json")});
    const auto& loaded = ring->keys()[0];
    CHECK(loaded.kid() == key.kid());
    CHECK_FALSE(loaded.has_hpke());
    CHECK(loaded.hpke_kid().empty());
    CHECK(ring->lookup(key.hpke_kid()).key == nullptr);
    CHECK(ring->lookup(key.kid()).key == &loaded);
    const auto config = nlohmann::json::parse(ring->key_config_json(t0));
    REQUIRE(config["keys"].size() == 1);
    CHECK(config["keys"][0]["alg"] == "x25519-sealedbox");
    std::string out(1, '\0');
    CHECK_FALSE(loaded.open_hpke(bytes(49, 1), std::span(reinterpret_cast<unsigned char*>(out.data()), 1)));
    // Loading it again gives the same (absent) HPKE half: nothing random at load.
    CHECK_FALSE(crypto::relay_key::load_file(dir.file("old.json")).has_hpke());
}

TEST_CASE("a key file with a broken HPKE half is refused, naming the file and never a key") {
    temp_dir dir;
    const auto key = crypto::relay_key::generate(t0);
    key.write_new_file(dir.file("good.json"));
    const auto good = nlohmann::json::parse(read_text(dir.file("good.json")));
    const auto other = crypto::relay_key::generate(t0);
    const std::string sk = good["sk"];
    const std::string hsk = good["hpke_sk"];
    auto variant = [&](auto edit) {
        nlohmann::json j = good;
        edit(j);
        return j.dump();
    };
    const std::vector<std::pair<std::string, std::string>> cases = {
        {"hpke_pk of another key", variant([&](auto& j) { j["hpke_pk"] = crypto::base64url_encode(other.hpke_pk()); })},
        {"hpke_pk = the sealed-box pk", variant([&](auto& j) { j["hpke_pk"] = j["pk"]; })},
        {"hpke_pk too short", variant([&](auto& j) { j["hpke_pk"] = std::string(j["hpke_pk"]).substr(0, 40); })},
        {"hpke_kid of another key", variant([&](auto& j) { j["hpke_kid"] = other.hpke_kid(); })},
        {"hpke_kid = the sealed-box kid", variant([&](auto& j) { j["hpke_kid"] = j["kid"]; })},
        {"hpke_sk missing, pk and kid kept", variant([&](auto& j) { j.erase("hpke_sk"); })},
        {"hpke_sk short", variant([&](auto& j) { j["hpke_sk"] = hsk.substr(0, 42); })},
        {"hpke_sk long", variant([&](auto& j) { j["hpke_sk"] = hsk + "AA"; })},
        {"hpke_sk not base64url", variant([&](auto& j) { j["hpke_sk"] = "+" + hsk.substr(1); })},
        {"hpke_sk a number", variant([&](auto& j) { j["hpke_sk"] = 7; })},
        {"hpke_kid a number", variant([&](auto& j) { j["hpke_kid"] = 7; })},
        {"duplicate hpke_sk", good.dump().insert(1, "\"hpke_sk\":\"" + hsk + "\",")},
    };
    check_each_refused(dir, cases, {sk, hsk});
    // hpke_pk and hpke_kid are optional, like pk and kid.
    const auto minimal = dir.file("minimal.json");
    write_text(minimal, variant([](auto& j) {
                   j.erase("hpke_pk");
                   j.erase("hpke_kid");
               }),
               0600);
    const auto loaded = crypto::relay_key::load_file(minimal);
    CHECK(loaded.hpke_kid() == key.hpke_kid());
    CHECK(loaded.hpke_pk() == key.hpke_pk());
}

TEST_CASE("two key files sharing only their HPKE half are refused") {
    temp_dir dir;
    const auto a = crypto::relay_key::generate(t0);
    const auto b = crypto::relay_key::generate(t0);
    a.write_new_file(dir.file("a.json"));
    b.write_new_file(dir.file("b.json"));
    auto ja = nlohmann::json::parse(read_text(dir.file("a.json")));
    auto jb = nlohmann::json::parse(read_text(dir.file("b.json")));
    jb["hpke_sk"] = ja["hpke_sk"];
    jb["hpke_pk"] = ja["hpke_pk"];
    jb["hpke_kid"] = ja["hpke_kid"];
    write_text(dir.file("b2.json"), jb.dump(), 0600);
    CHECK_NOTHROW((void)crypto::keyring::load({dir.file("a.json"), dir.file("b.json")}));
    CHECK_THROWS_AS((void)crypto::keyring::load({dir.file("a.json"), dir.file("b2.json")}), crypto::key_error);
}
