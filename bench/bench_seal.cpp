// byok-bench-seal: what the relay's per-request crypto path costs, next to
// the physical floor of one bare libsodium crypto_box_seal_open on the same
// sealed payload.
//
//   check path = SHA-256 of the 600-byte body + seal_checker::check (parse the
//                header, base64url-decode, replay lookup, open into secret
//                memory, parse the payload in place, compare, replay insert)
//   bare open  = crypto_box_seal_open(box) and nothing else
//   HPKE row   = the same two for a seal to the key's HPKE kid (RFC 9180 base
//                mode): the check path, and relay_key::open_hpke alone (X25519,
//                the HKDF key schedule, AES-128-GCM), next to the bare open
//   grant row  = a request with a scoped key grant (docs/protocol.md §13):
//                SHA-256 of the body + grant_checker::open + claim_proof (one
//                grant, a fresh proof each), next to its crypto floor: the
//                grant's XChaCha20-Poly1305 open plus one ES256 verification
//
// Every checked seal is fresh (a batch sealed beforehand; each round uses a
// new checker), so the replay cache never answers early. Times are thread
// CPU time (robust against a shared machine), median of the rounds.
#include <unistd.h>

#include <algorithm>
#include <array>
#include <chrono>
#include <cstdio>
#include <cstdlib>
#include <ctime>
#include <filesystem>
#include <fstream>
#include <iterator>
#include <string>
#include <vector>

#include <openssl/sha.h>
#include <sodium.h>
#pragma GCC diagnostic ignored "-Wmaybe-uninitialized"
#include <nlohmann/json.hpp>

#include "crypto/encoding.hpp"
#include "crypto/grant.hpp"
#include "crypto/json_lite.hpp"
#include "crypto/keyring.hpp"
#include "crypto/replay_cache.hpp"
#include "crypto/seal.hpp"
#include "crypto/secret.hpp"

namespace {

using namespace byok::crypto;

double cpu_now() {
    timespec ts{};
    clock_gettime(CLOCK_THREAD_CPUTIME_ID, &ts);
    return static_cast<double>(ts.tv_sec) * 1e9 + static_cast<double>(ts.tv_nsec);
}

double median(std::vector<double> v) {
    std::sort(v.begin(), v.end());
    return v.empty() ? 0 : v[v.size() / 2];
}

// A chat-completions body of exactly n bytes (n >= 120).
std::string make_body(std::size_t n) {
    std::string head = R"({"model":"gpt-4o-mini","messages":[{"role":"user","content":")";
    const std::string tail = R"("}],"max_tokens":64})";
    std::string filler;
    while (head.size() + filler.size() + tail.size() < n) {
        filler += "lorem ipsum "[filler.size() % 12];
    }
    return head + filler + tail;
}

// What the two biggest parts of the overhead could cost instead (see
// docs/benchmarks.md): a table-driven strict base64url decoder (the box is
// ciphertext, so it needs no constant-time decoding) ...
std::size_t table_base64url_decode(std::string_view in, unsigned char* out) {
    static const auto table = [] {
        std::array<signed char, 256> t{};
        t.fill(-1);
        const char* alphabet = "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789-_";
        for (int i = 0; i < 64; ++i) {
            t[static_cast<unsigned char>(alphabet[i])] = static_cast<signed char>(i);
        }
        return t;
    }();
    std::size_t n = 0;
    std::uint32_t acc = 0;
    int bits = 0;
    int bad = 0;
    for (const char c : in) {
        const int v = table[static_cast<unsigned char>(c)];
        bad |= v;
        acc = (acc << 6) | static_cast<std::uint32_t>(v & 63);
        bits += 6;
        if (bits >= 8) {
            bits -= 8;
            out[n++] = static_cast<unsigned char>(acc >> bits);
        }
    }
    return bad < 0 || (acc & ((1u << bits) - 1)) != 0 ? 0 : n;
}

template <class F>
double time_ns_per_op(std::size_t n, F&& f) {
    const double t0 = cpu_now();
    for (std::size_t i = 0; i < n; ++i) {
        f(i);
    }
    return (cpu_now() - t0) / static_cast<double>(n);
}

}  // namespace

int main(int argc, char** argv) {
    std::size_t batch = 10000;
    int rounds = 5;
    bool json = false;
    for (int i = 1; i < argc; ++i) {
        const std::string a = argv[i];
        if (a == "--batch" && i + 1 < argc) {
            batch = std::strtoul(argv[++i], nullptr, 10);
        } else if (a == "--rounds" && i + 1 < argc) {
            rounds = std::atoi(argv[++i]);
        } else if (a == "--json") {
            json = true;
        } else {
            std::fputs("usage: byok-bench-seal [--batch N] [--rounds N] [--json]\n", a == "--help" ? stdout : stderr);
            return a == "--help" ? 0 : 2;
        }
    }
    batch = std::max<std::size_t>(batch, 100);
    rounds = std::max(rounds, 1);
    ensure_sodium();

    // A relay key, written and read back the way the relay does, so the bare
    // open below can use the very same secret key.
    const auto now = static_cast<std::int64_t>(std::time(nullptr));
    char dir_template[] = "/tmp/byok-bench-seal-XXXXXX";
    if (mkdtemp(dir_template) == nullptr) {
        std::perror("mkdtemp");
        return 1;
    }
    const std::string dir = dir_template;
    const std::string key_path = dir + "/key.json";
    relay_key::generate(now).write_new_file(key_path);
    const auto keys = keyring::load({key_path});
    public_key pk{};
    std::array<unsigned char, 32> sk{};
    {
        std::ifstream in(key_path);
        const auto j = nlohmann::json::parse(std::string(std::istreambuf_iterator<char>(in), {}));
        (void)base64url_decode(j.at("pk").get<std::string>(), pk);
        (void)base64url_decode(j.at("sk").get<std::string>(), sk);
    }
    std::filesystem::remove_all(dir);
    const relay_key& rk = keys->keys()[0];

    const std::string body = make_body(600);
    const std::string path = "/openai/v1/chat/completions";
    const std::string api_key = "sk-bench-0123456789abcdef0123456789abcdef01234567";

    // The batch: headers for the checker, raw boxes for the bare open.
    std::vector<std::string> headers(batch);
    std::vector<std::vector<unsigned char>> boxes(batch);
    const double seal_ns = time_ns_per_op(batch, [&](std::size_t i) {
        const auto payload = make_payload(api_key, now, "POST", path, sha256(body));
        headers[i] = seal_header(rk.kid(), rk.pk(), payload.span());
        const std::string_view b64 = std::string_view(headers[i]).substr(headers[i].find('.') + 1);
        boxes[i].resize(base64url_decoded_max(b64.size()));
        boxes[i].resize(*base64url_decode(b64, boxes[i]));
    });
    const std::size_t plain_len = boxes[0].size() - crypto_box_SEALBYTES;
    // The same payloads sealed with HPKE to the key's HPKE half.
    std::vector<std::string> hpke_headers(batch);
    std::vector<std::vector<unsigned char>> hpke_sealed(batch);
    const double hpke_seal_ns = time_ns_per_op(batch, [&](std::size_t i) {
        const auto payload = make_payload(api_key, now, "POST", path, sha256(body));
        hpke_headers[i] = hpke_seal_header(rk.hpke_kid(), rk.hpke_pk(), payload.span()).value();
        const std::string_view b64 = std::string_view(hpke_headers[i]).substr(hpke_headers[i].find('.') + 1);
        hpke_sealed[i].resize(base64url_decoded_max(b64.size()));
        hpke_sealed[i].resize(*base64url_decode(b64, hpke_sealed[i]));
    });

    // One grant for this key, and a fresh proof (its own jti) for each request.
    const es256_key app = es256_key::generate();
    grant_scope scope;
    scope.provider = "openai";
    scope.paths = {"/v1/chat/completions"};
    scope.models = {"gpt-4o-mini"};
    scope.origin = "https://app.example";
    scope.iat = now;
    scope.exp = now + 1800;
    scope.cnf = app.point();
    const std::string grant_auth = "Grant " + make_grant_token(rk, scope, api_key);
    std::vector<unsigned char> grant_sealed(4200);
    grant_sealed.resize(*base64url_decode(std::string_view(grant_auth).substr(grant_auth.find('.') + 1), grant_sealed));
    std::vector<std::string> proofs(batch);
    std::vector<std::string> signing_inputs(batch);
    std::vector<std::array<unsigned char, 64>> signatures(batch);
    const double proof_ns = time_ns_per_op(batch, [&](std::size_t i) {
        std::array<unsigned char, 16> jti{};
        randombytes_buf(jti.data(), jti.size());
        proofs[i] = make_proof(app, "POST", path, now, base64url_encode(jti), sha256(body));
        signing_inputs[i] = proofs[i].substr(0, proofs[i].rfind('.'));
        (void)base64url_decode(std::string_view(proofs[i]).substr(proofs[i].rfind('.') + 1), signatures[i]);
    });
    std::vector<double> grant_check_ns, grant_aead_ns, es256_ns, grant_ratio;
    std::vector<unsigned char> grant_plain(grant_sealed.size() - 40);

    std::vector<double> hpke_check_ns, hpke_open_ns, hpke_open_ratio;
    std::vector<double> check_ns, open_ns, sha_ns, b64_ns, replay_ns, parse_ns, alloc_ns, ossl_sha_ns, table_b64_ns;
    std::size_t failures = 0;
    std::vector<unsigned char> out(plain_len);
    for (int r = 0; r < rounds; ++r) {
        open_ns.push_back(time_ns_per_op(batch, [&](std::size_t i) {
            if (crypto_box_seal_open(out.data(), boxes[i].data(), boxes[i].size(), pk.data(), sk.data()) != 0) {
                ++failures;
            }
        }));
        seal_checker checker(seal_policy{}, 1u << 20);
        check_ns.push_back(time_ns_per_op(batch, [&](std::size_t i) {
            const auto digest = sha256(body);
            const request_facts facts{"POST", path, &digest, headers[i]};
            const auto result = checker.check(*keys, facts, now);
            if (!result) {
                ++failures;
            }
        }));
        // HPKE, measured right after the sealed box in the same round, so the
        // ratio compares like with like on a shared machine.
        hpke_open_ns.push_back(time_ns_per_op(batch, [&](std::size_t i) {
            if (!rk.open_hpke(hpke_sealed[i], out)) {
                ++failures;
            }
        }));
        hpke_open_ratio.push_back(hpke_open_ns.back() / open_ns.back());
        seal_checker hpke_checker(seal_policy{}, 1u << 20);
        hpke_check_ns.push_back(time_ns_per_op(batch, [&](std::size_t i) {
            const auto digest = sha256(body);
            const request_facts facts{"POST", path, &digest, hpke_headers[i]};
            if (!hpke_checker.check(*keys, facts, now)) {
                ++failures;
            }
        }));
        // The grant path, in the same round, and its crypto floor.
        replay_cache grant_replay(1u << 20);
        grant_checker granted(seal_policy{}, grant_replay);
        grant_check_ns.push_back(time_ns_per_op(batch, [&](std::size_t i) {
            const auto digest = sha256(body);
            const grant_request_facts facts{grant_auth, proofs[i], 1, "POST", path, &digest};
            const auto g = granted.open(*keys, facts, now);
            if (!g || granted.claim_proof(g.grant(), now)) {
                ++failures;
            }
        }));
        grant_aead_ns.push_back(time_ns_per_op(batch, [&](std::size_t) {
            if (!rk.open_grant(grant_sealed, grant_plain)) {
                ++failures;
            }
        }));
        es256_ns.push_back(time_ns_per_op(batch, [&](std::size_t i) {
            if (!es256_verify(app.point(), signing_inputs[i], signatures[i])) {
                ++failures;
            }
        }));
        grant_ratio.push_back(grant_check_ns.back() / (grant_aead_ns.back() + es256_ns.back()));
        // The parts of the overhead, one at a time.
        sha_ns.push_back(time_ns_per_op(batch, [&](std::size_t) {
            const auto d = sha256(body);
            asm volatile("" : : "r"(d.data()) : "memory");
        }));
        std::array<unsigned char, 4096> scratch{};
        b64_ns.push_back(time_ns_per_op(batch, [&](std::size_t i) {
            const std::string_view b64 = std::string_view(headers[i]).substr(headers[i].find('.') + 1);
            (void)base64url_decode(b64, scratch);
            asm volatile("" : : "r"(scratch.data()) : "memory");
        }));
        // ... and OpenSSL's SHA-256, which uses the CPU's SHA extensions where present.
        ossl_sha_ns.push_back(time_ns_per_op(batch, [&](std::size_t) {
            unsigned char d[32];
            SHA256(reinterpret_cast<const unsigned char*>(body.data()), body.size(), d);
            asm volatile("" : : "r"(d) : "memory");
        }));
        table_b64_ns.push_back(time_ns_per_op(batch, [&](std::size_t i) {
            const std::string_view b64 = std::string_view(headers[i]).substr(headers[i].find('.') + 1);
            if (table_base64url_decode(b64, scratch.data()) != boxes[i].size()) {
                ++failures;
            }
            asm volatile("" : : "r"(scratch.data()) : "memory");
        }));
        replay_cache cache(1u << 20);
        replay_ns.push_back(time_ns_per_op(batch, [&](std::size_t i) {
            const auto id = replay_cache::make_id(boxes[i]);
            if (cache.contains(id, now) || cache.insert(id, now + 61, now) != replay_cache::insert_result::inserted) {
                ++failures;
            }
        }));
        if (crypto_box_seal_open(out.data(), boxes[0].data(), boxes[0].size(), pk.data(), sk.data()) != 0) {
            ++failures;
        }
        const std::string opened(reinterpret_cast<const char*>(out.data()), out.size());
        std::string work(opened);
        parse_ns.push_back(time_ns_per_op(batch, [&](std::size_t) {
            work.assign(opened);
            auto sink = [](std::string_view, const json_lite::value&) { return true; };
            if (!json_lite::parse_object(std::span(work.data(), work.size()), sink)) {
                ++failures;
            }
        }));
        alloc_ns.push_back(time_ns_per_op(batch, [&](std::size_t) {
            auto s = secret_bytes::allocate(plain_len);
            asm volatile("" : : "r"(s.data()) : "memory");
        }));
    }
    sodium_memzero(sk.data(), sk.size());

    const double check = median(check_ns);
    const double open = median(open_ns);
    const double ratio = check / open;
    const double hpke_open = median(hpke_open_ns);
    const double hpke_check = median(hpke_check_ns);
    if (json) {
        const nlohmann::json j = {
            {"batch", batch},
            {"rounds", rounds},
            {"body_bytes", body.size()},
            {"payload_bytes", plain_len},
            {"check_path_ns", check},
            {"bare_open_ns", open},
            {"ratio", ratio},
            {"overhead_ns", check - open},
            {"parts_ns",
             {{"sha256_body", median(sha_ns)},
              {"base64url_decode", median(b64_ns)},
              {"replay_lookup_insert", median(replay_ns)},
              {"payload_parse", median(parse_ns)},
              {"secret_alloc", median(alloc_ns)}}},
            {"alternatives_ns",
             {{"openssl_sha256_body", median(ossl_sha_ns)}, {"table_base64url_decode", median(table_b64_ns)}}},
            {"client_seal_ns", seal_ns},
            {"hpke",
             {{"check_path_ns", hpke_check},
              {"open_ns", hpke_open},
              {"open_ratio_vs_sealed_box", median(hpke_open_ratio)},
              {"check_ratio_vs_sealed_box", hpke_check / check},
              {"client_seal_ns", hpke_seal_ns}}},
            {"grant",
             {{"check_path_ns", median(grant_check_ns)},
              {"aead_open_ns", median(grant_aead_ns)},
              {"es256_verify_ns", median(es256_ns)},
              {"check_ratio_vs_floor", median(grant_ratio)},
              {"check_ratio_vs_sealed_box", median(grant_check_ns) / check},
              {"client_proof_ns", proof_ns}}},
            {"failures", failures},
        };
        std::printf("%s\n", j.dump(2).c_str());
    } else {
        std::printf("byok-bench-seal: %zu fresh seals x %d rounds, %zu-byte body, %zu-byte payload (thread CPU, median)\n",
                    batch, rounds, body.size(), plain_len);
        std::printf("  check path (sha256 + seal_checker::check) %10.0f ns/op\n", check);
        std::printf("  bare crypto_box_seal_open                  %10.0f ns/op\n", open);
        std::printf("  ratio                                      %10.3f  (overhead %.0f ns)\n", ratio, check - open);
        std::printf("  parts: sha256(600 B) %.0f ns, base64url decode %.0f ns, replay lookup+insert %.0f ns,\n"
                    "         payload parse %.0f ns, secret alloc %.0f ns\n",
                    median(sha_ns), median(b64_ns), median(replay_ns), median(parse_ns), median(alloc_ns));
        std::printf("  alternatives: OpenSSL SHA256(600 B) %.0f ns, table-driven base64url decode %.0f ns\n",
                    median(ossl_sha_ns), median(table_b64_ns));
        std::printf("  client side: make_payload + crypto_box_seal + base64url %.0f ns/op\n", seal_ns);
        std::printf("  HPKE (hpke-x25519-sha256-aes128gcm), same payloads:\n");
        std::printf("    check path (sha256 + seal_checker::check) %9.0f ns/op  (%.3f x the sealed box's)\n", hpke_check,
                    hpke_check / check);
        std::printf("    relay_key::open_hpke                      %9.0f ns/op  (%.3f x crypto_box_seal_open, median of\n"
                    "                                                             the per-round ratios)\n",
                    hpke_open, median(hpke_open_ratio));
        std::printf("    client side: make_payload + HPKE seal + base64url %.0f ns/op\n", hpke_seal_ns);
        std::printf("  grant (scoped key grant + ES256 proof, one grant, a fresh proof each):\n");
        std::printf("    check path (sha256 + grant_checker::open + claim_proof) %9.0f ns/op  (%.3f x the sealed box's)\n",
                    median(grant_check_ns), median(grant_check_ns) / check);
        std::printf("    floor: XChaCha20-Poly1305 open %.0f ns + ES256 verify %.0f ns; check path / floor %.3f\n",
                    median(grant_aead_ns), median(es256_ns), median(grant_ratio));
        std::printf("    client side: make_proof (ES256 sign) %.0f ns/op\n", proof_ns);
        if (failures > 0) {
            std::printf("  FAILURES: %zu\n", failures);
        }
    }
    return failures == 0 ? 0 : 1;
}
