// byok-loadgen: argument parsing and wiring only. See docs/benchmarks.md.
#include <sys/resource.h>
#include <unistd.h>

#include <cmath>
#include <cstdio>
#include <cstdlib>
#include <fstream>
#include <iterator>
#include <memory>
#include <optional>
#include <stdexcept>
#include <string>
#include <string_view>
#include <utility>
#include <vector>

#include <sodium.h>
#pragma GCC diagnostic ignored "-Wmaybe-uninitialized"
#include <nlohmann/json.hpp>

#include "bench/driver.hpp"
#include "bench/hgrm.hpp"
#include "bench/key_fetch.hpp"
#include "bench/progress.hpp"
#include "bench/report.hpp"
#include "bench/request_pool.hpp"
#include "crypto/secret.hpp"

namespace {

constexpr const char* usage_text =
    "usage: byok-loadgen --url URL [options]\n"
    "Drives a byok-relay (or a proxy in front of it) with freshly sealed requests.\n"
    "  --url URL          base URL (http:// or https://[host[:port][/prefix]]); loopback only\n"
    "  --path P           request path (default /openai/v1/chat/completions)\n"
    "  --seal-path P      path the seal binds (default: the URL's prefix + --path)\n"
    "  --keys-url URL     where to GET the key configuration (default: URL/v1/keys)\n"
    "  --seal ALG         sealed-box (default) or hpke: which of the relay's keys to seal to\n"
    "  --grant            mint one scoped key grant (POST /v1/grants, sealed) before the run and send\n"
    "                     every request with it and a fresh ES256 Byok-Proof instead of a seal\n"
    "  --grant-origin O   the grant's origin, which must be in the relay's allow_origins\n"
    "                     (default http://localhost)\n"
    "  --grant-model M    limit the grant to model M (repeatable; the relay then reads each body's\n"
    "                     top-level \"model\"); default: any model\n"
    "  --ca FILE          CA bundle for https:// URLs\n"
    "  --connections N    concurrent connections (default 16)\n"
    "  --duration S       measured seconds (default 10)\n"
    "  --warmup S         seconds run but not measured, before --duration (default 0)\n"
    "  --rate R           open loop: R requests/s in total, latency from the intended send time\n"
    "  --stream           ask for SSE answers (adds \"stream\":true); reports time to the first and\n"
    "                     the last complete event and the gaps between events\n"
    "  --body FILE        request body, a JSON object (default: a small chat completion)\n"
    "  --keys N           distinct random user API keys, rotated through (default 16)\n"
    "  --threads N        load-generator threads (default 1)\n"
    "  --preseal N        requests sealed before the run, and kept in reserve after (default: the\n"
    "                     estimated need of the run, at most 30 s worth so that seals stay fresh)\n"
    "  --seal-threads N   threads that seal before the run (default: --threads)\n"
    "  --timeout S        per read/write timeout (default 60)\n"
    "  --ramp S           open the connections evenly over S seconds (default 0: all at once)\n"
    "  --idle-after N     each connection sends N requests, then stays open and idle to the end\n"
    "                     (memory per idle connection); the report counts them in idle_at_end\n"
    "  --hist-out FILE    write the latency histogram to FILE in HdrHistogram's percentile-\n"
    "                     distribution text (ms); --stream adds FILE's name with .first-event,\n"
    "                     .last-event and .event-gap before its extension\n"
    "  --progress         a progress line on stderr every second even when stderr is not a terminal\n"
    "  --quiet            no progress line (default on a terminal)\n"
    "  --label TEXT       a label copied into the report\n"
    "  --json             print the report as JSON (default: a table)\n"
    "  --allow-remote     allow a non-loopback target (never on shared machines)\n";

constexpr std::string_view default_body =
    R"({"model":"gpt-4o-mini","messages":[{"role":"system","content":"You are a helpful assistant."},)"
    R"({"role":"user","content":"Say hello in one short sentence."}],"max_tokens":64})";

bool parse_double(const char* s, double lo, double hi, double& out) {
    char* end = nullptr;
    const double v = std::strtod(s, &end);
    if (end == s || *end != '\0' || !std::isfinite(v) || v < lo || v > hi) {
        return false;
    }
    out = v;
    return true;
}

bool parse_uint(const char* s, unsigned long lo, unsigned long hi, unsigned long& out) {
    char* end = nullptr;
    const unsigned long v = std::strtoul(s, &end, 10);
    if (end == s || *end != '\0' || v < lo || v > hi) {
        return false;
    }
    out = v;
    return true;
}

int bad(const std::string& what) {
    std::fprintf(stderr, "byok-loadgen: %s\n", what.c_str());
    return 2;
}

// Each connection is a file descriptor; raise the soft limit as far as the hard one allows.
void raise_fd_limit(unsigned want) {
    rlimit rl{};
    if (getrlimit(RLIMIT_NOFILE, &rl) == 0 && rl.rlim_cur < want + 64) {
        rl.rlim_cur = std::min<rlim_t>(rl.rlim_max, want + 64);
        (void)setrlimit(RLIMIT_NOFILE, &rl);
    }
}

// --hist-out: one file per histogram (names in bench/hgrm.hpp, docs/benchmarks.md).
void write_histograms(const std::string& base, const byok::bench::run_result& r, bool stream) {
    using namespace byok::bench;
    std::vector<std::pair<std::string_view, const histogram*>> files{{"", &r.latency}};
    if (stream) {
        files.insert(files.end(), {{"first-event", &r.first_event}, {"last-event", &r.last_event},
                                   {"event-gap", &r.event_gap}});
    }
    for (const auto& [tag, h] : files) {
        const std::string name = hist_file_name(base, tag);
        std::FILE* f = std::fopen(name.c_str(), "w");
        if (f == nullptr) {
            throw std::runtime_error("cannot write --hist-out " + name);
        }
        write_percentile_distribution(f, *h);
        if (std::fclose(f) != 0) {
            throw std::runtime_error("cannot write --hist-out " + name);
        }
    }
}

}  // namespace

int main(int argc, char** argv) {
    using namespace byok::bench;
    std::string url;
    std::string path = "/openai/v1/chat/completions";
    std::string seal_path;
    std::string keys_url;
    std::string ca_file;
    std::string body_file;
    std::string label;
    run_options o;
    unsigned long keys = 16;
    unsigned long preseal = 0;
    bool preseal_given = false;
    unsigned long seal_threads = 0;
    bool json = false;
    bool allow_remote = false;
    bool quiet = false;
    bool progress = false;
    std::string hist_out;
    byok::crypto::seal_alg seal_alg = byok::crypto::seal_alg::sealed_box;
    bool grant = false;
    std::string grant_origin = "http://localhost";
    std::vector<std::string> grant_models;
    for (int i = 1; i < argc; ++i) {
        const std::string a = argv[i];
        const bool v = i + 1 < argc;
        unsigned long n = 0;
        double d = 0;
        if (a == "--url" && v) {
            url = argv[++i];
        } else if (a == "--path" && v) {
            path = argv[++i];
        } else if (a == "--seal-path" && v) {
            seal_path = argv[++i];
        } else if (a == "--seal" && v && (std::string_view(argv[i + 1]) == "hpke" ||
                                           std::string_view(argv[i + 1]) == "sealed-box")) {
            seal_alg = std::string_view(argv[++i]) == "hpke" ? byok::crypto::seal_alg::hpke
                                                              : byok::crypto::seal_alg::sealed_box;
        } else if (a == "--grant") {
            grant = true;
        } else if (a == "--grant-origin" && v) {
            grant_origin = argv[++i];
        } else if (a == "--grant-model" && v) {
            grant_models.emplace_back(argv[++i]);
        } else if (a == "--keys-url" && v) {
            keys_url = argv[++i];
        } else if (a == "--ca" && v) {
            ca_file = argv[++i];
        } else if (a == "--body" && v) {
            body_file = argv[++i];
        } else if (a == "--label" && v) {
            label = argv[++i];
        } else if (a == "--hist-out" && v) {
            hist_out = argv[++i];
        } else if (a == "--connections" && v && parse_uint(argv[i + 1], 1, 100000, n)) {
            o.connections = static_cast<unsigned>(n);
            ++i;
        } else if (a == "--threads" && v && parse_uint(argv[i + 1], 1, 256, n)) {
            o.threads = static_cast<unsigned>(n);
            ++i;
        } else if (a == "--keys" && v && parse_uint(argv[i + 1], 1, 1000000, n)) {
            keys = n;
            ++i;
        } else if (a == "--preseal" && v && parse_uint(argv[i + 1], 0, 50000000, n)) {
            preseal = n;
            preseal_given = true;
            ++i;
        } else if (a == "--seal-threads" && v && parse_uint(argv[i + 1], 1, 256, n)) {
            seal_threads = n;
            ++i;
        } else if (a == "--duration" && v && parse_double(argv[i + 1], 0.1, 86400, d)) {
            o.duration_s = d;
            ++i;
        } else if (a == "--warmup" && v && parse_double(argv[i + 1], 0, 3600, d)) {
            o.warmup_s = d;
            ++i;
        } else if (a == "--rate" && v && parse_double(argv[i + 1], 0.001, 1e7, d)) {
            o.rate = d;
            ++i;
        } else if (a == "--ramp" && v && parse_double(argv[i + 1], 0, 3600, d)) {
            o.ramp_s = d;
            ++i;
        } else if (a == "--timeout" && v && parse_double(argv[i + 1], 0.1, 86400, d)) {
            o.timeout_s = d;
            ++i;
        } else if (a == "--idle-after" && v && parse_uint(argv[i + 1], 1, 1000000, n)) {
            o.idle_after = static_cast<unsigned>(n);
            ++i;
        } else if (a == "--stream") {
            o.stream = true;
        } else if (a == "--quiet") {
            quiet = true;
        } else if (a == "--progress") {
            progress = true;
        } else if (a == "--json") {
            json = true;
        } else if (a == "--allow-remote") {
            allow_remote = true;
        } else if (a == "--help" || a == "-h") {
            std::fputs(usage_text, stdout);
            return 0;
        } else {
            std::fprintf(stderr, "byok-loadgen: bad or incomplete argument %s\n", a.c_str());
            std::fputs(usage_text, stderr);
            return 2;
        }
    }
    if (url.empty()) {
        return bad("--url is required");
    }
    if (path.empty() || path.front() != '/') {
        return bad("--path must start with '/'");
    }

    try {
        byok::crypto::ensure_sodium();
        const parsed_url u = parse_url(url);
        const std::string address = resolve_address(u, allow_remote);
        const parsed_url ku = parse_url(keys_url.empty() ? url + "/v1/keys" : keys_url);
        const std::string keys_address = resolve_address(ku, allow_remote);
        const key_config kc = fetch_key_config(ku, keys_address, ca_file, seal_alg);

        request_template t;
        t.target = u.path + path;
        t.seal_path = seal_path.empty() ? t.target : seal_path;
        t.host_header = u.host_header();
        t.stream = o.stream;
        t.kid = kc.kid;
        t.pk = kc.pk;
        t.alg = kc.alg;
        if (body_file.empty()) {
            t.body = std::string(default_body);
        } else {
            std::ifstream in(body_file, std::ios::binary);
            if (!in) {
                return bad("cannot read --body " + body_file);
            }
            t.body.assign(std::istreambuf_iterator<char>(in), std::istreambuf_iterator<char>());
        }
        for (unsigned long k = 0; k < keys; ++k) {
            unsigned char raw[20];
            randombytes_buf(raw, sizeof raw);
            std::string key = "sk-bench-";
            static constexpr char hex[] = "0123456789abcdef";
            for (const unsigned char b : raw) {
                key += hex[b >> 4];
                key += hex[b & 15];
            }
            t.api_keys.push_back(std::move(key));
        }
        if (grant) {
            // One grant, for the first key, for exactly this provider and path.
            if (seal_alg != byok::crypto::seal_alg::sealed_box) {
                return bad("--grant mints with the relay's sealed-box key; leave out --seal hpke");
            }
            const auto slash = path.find('/', 1);
            if (slash == std::string::npos) {
                return bad("--grant needs --path /<provider>/<path>");
            }
            auto app = std::make_shared<const byok::crypto::es256_key>(byok::crypto::es256_key::generate());
            grant_request g;
            g.provider = path.substr(1, slash - 1);
            g.provider_path = path.substr(slash, path.find('?') - slash);
            g.origin = grant_origin;
            g.models = grant_models;
            g.app = app.get();
            t.grant = mint_grant(u, address, ca_file, kc, t.api_keys.front(), g);
            t.proof_key = std::move(app);
        }

        // Sealed before the run: at most 30 s worth, so every iat is still
        // fresh (60 s by default) when sent; a longer run is sealed in the
        // background, that many requests ahead. Open loop: the schedule;
        // closed loop: a generous guess (the report says if requests had to
        // be sealed inline).
        const double secs = o.duration_s + o.warmup_s;
        const double per_s = o.rate > 0 ? o.rate * 1.02 : 4000.0;
        const auto total = static_cast<unsigned long>(std::min(per_s * secs, 50e6)) + o.connections;
        if (!preseal_given) {
            preseal = static_cast<unsigned long>(std::min(per_s * std::min(secs, 30.0), 400000.0)) + o.connections;
        }
        raise_fd_limit(o.connections);
        request_pool pool(std::move(t), std::max(total, preseal), preseal,
                          seal_threads > 0 ? static_cast<unsigned>(seal_threads) : o.threads);

        target tg;
        tg.tls = u.tls;
        tg.host = u.host;
        tg.address = address;
        tg.port = u.port;
        tg.ca_file = ca_file;
        // Like oha and k6: the line is on when stderr is a terminal (or
        // --progress says so), off with --quiet.
        const bool tty = isatty(STDERR_FILENO) == 1;
        live_stats live(run_threads(o));
        std::optional<progress_line> line;
        if (!quiet && (tty || progress)) {
            line.emplace(stderr, tty, o.warmup_s, o.warmup_s + o.duration_s, live);
        }
        const run_result r = run_load(tg, o, pool, &live);
        if (line) {
            line->stop();
        }
        if (!hist_out.empty()) {
            write_histograms(hist_out, r, o.stream);
        }

        run_description desc{label, url, u.path + path, o, static_cast<unsigned>(keys), hist_out};
        const auto report = make_report(desc, r, pool);
        if (json) {
            std::printf("%s\n", report.dump(2).c_str());
        } else {
            print_table(stdout, report);
        }
        return 0;
    } catch (const std::exception& e) {
        std::fprintf(stderr, "byok-loadgen: %s\n", e.what());
        return 1;
    }
}
