#include "bench/report.hpp"

#pragma GCC diagnostic ignored "-Wmaybe-uninitialized"
#include <nlohmann/json.hpp>

namespace byok::bench {
namespace {

nlohmann::json latency_json(const histogram& h) {
    auto us = [](std::uint64_t ns) { return static_cast<double>(ns) / 1000.0; };
    return {
        {"count", h.count()},
        {"min", us(h.min())},
        {"mean", h.mean() / 1000.0},
        {"p50", us(h.percentile(50))},
        {"p90", us(h.percentile(90))},
        {"p99", us(h.percentile(99))},
        {"p999", us(h.percentile(99.9))},
        {"max", us(h.max())},
    };
}

void print_latency_row(std::FILE* out, const char* name, const nlohmann::json& l) {
    auto ms = [&](const char* k) { return l.at(k).get<double>() / 1000.0; };
    std::fprintf(out, "  %-16s %9.3f %9.3f %9.3f %9.3f %9.3f %9.3f %9.3f\n", name, ms("min"), ms("mean"), ms("p50"),
                 ms("p90"), ms("p99"), ms("p999"), ms("max"));
}

}  // namespace

nlohmann::json make_report(const run_description& d, const run_result& r, const request_pool& pool) {
    const auto& o = d.options;
    nlohmann::json j;
    if (!d.label.empty()) {
        j["label"] = d.label;
    }
    j["url"] = d.url;
    j["target"] = d.target;
    j["mode"] = o.rate > 0 ? "open" : "closed";
    j["rate"] = o.rate;
    j["connections"] = o.connections;
    j["threads"] = o.threads;
    j["duration_s"] = o.duration_s;
    j["warmup_s"] = o.warmup_s;
    j["stream"] = o.stream;
    j["keys"] = d.keys;
    j["request_body_bytes"] = pool.body_bytes();
    j["requests"] = r.requests;
    j["ok"] = r.ok;
    j["errors"] = r.errors;
    j["throughput_rps"] = r.measured_s > 0 ? static_cast<double>(r.requests) / r.measured_s : 0.0;
    j["latency_us"] = latency_json(r.latency);
    if (o.stream) {
        j["first_event_us"] = latency_json(r.first_event);
        j["last_event_us"] = latency_json(r.last_event);
        j["event_gap_us"] = latency_json(r.event_gap);
        j["events"] = r.events;
        j["events_per_stream"] = r.requests > 0 ? static_cast<double>(r.events) / static_cast<double>(r.requests) : 0.0;
    }
    j["responses_by_status"] = r.by_status;
    j["errors_by_code"] = r.by_code;
    j["errors_by_transport"] = r.by_transport;
    j["bytes_sent"] = r.bytes_sent;
    j["bytes_received"] = r.bytes_received;
    j["completed_total"] = r.completed_total;
    j["connects"] = r.connects;
    j["late_sends"] = r.late_sends;
    j["unfinished_at_end"] = r.unfinished;
    j["streaming_at_end"] = r.streaming_at_end;
    if (o.idle_after > 0) {
        j["idle_after"] = o.idle_after;
        j["idle_at_end"] = r.idle_at_end;
        j["idle_closed"] = r.idle_closed;
    }
    if (!d.hist_out.empty()) {
        j["hist_out"] = d.hist_out;
    }
    j["seal"] = {
        {"alg", pool.alg() == crypto::seal_alg::hpke ? crypto::hpke_alg : crypto::sealed_box_alg},
        {"presealed", pool.presealed()},
        {"background", pool.background_seals()},
        {"inline", pool.inline_seals()},
        {"us_per_request", pool.seal_us_per_request()},
        {"fill_s", pool.fill_seconds()},
    };
    return j;
}

void print_table(std::FILE* out, const nlohmann::json& j) {
    const bool open = j.at("mode") == "open";
    std::fprintf(out, "byok-loadgen %s%s%s\n", j.at("url").get<std::string>().c_str(),
                 j.contains("label") ? "  " : "", j.contains("label") ? j.at("label").get<std::string>().c_str() : "");
    char rate[48] = "";
    if (open) {
        std::snprintf(rate, sizeof rate, " at %g req/s", j.at("rate").get<double>());
    }
    std::fprintf(out, "  %s loop%s, %u connections, %u threads, %.1f s measured after %.1f s warm-up, %s, %u keys\n",
                 open ? "open" : "closed", rate,
                 j.at("connections").get<unsigned>(), j.at("threads").get<unsigned>(), j.at("duration_s").get<double>(),
                 j.at("warmup_s").get<double>(), j.at("stream").get<bool>() ? "streaming" : "non-streaming",
                 j.at("keys").get<unsigned>());
    std::fprintf(out, "  requests %llu (%llu ok), errors %llu, %.1f req/s, %llu B sent, %llu B received\n",
                 j.at("requests").get<unsigned long long>(), j.at("ok").get<unsigned long long>(),
                 j.at("errors").get<unsigned long long>(), j.at("throughput_rps").get<double>(),
                 j.at("bytes_sent").get<unsigned long long>(), j.at("bytes_received").get<unsigned long long>());
    std::fprintf(out, "  %-16s %9s %9s %9s %9s %9s %9s %9s\n", "latency (ms)", "min", "mean", "p50", "p90", "p99",
                 "p99.9", "max");
    print_latency_row(out, "response", j.at("latency_us"));
    if (j.contains("first_event_us")) {
        print_latency_row(out, "first event", j.at("first_event_us"));
        print_latency_row(out, "last event", j.at("last_event_us"));
        print_latency_row(out, "event gap", j.at("event_gap_us"));
        std::fprintf(out, "  events %llu (%.1f per stream)\n", j.at("events").get<unsigned long long>(),
                     j.at("events_per_stream").get<double>());
    }
    std::string statuses;
    for (const auto& [k, v] : j.at("responses_by_status").items()) {
        statuses += " " + k + "=" + std::to_string(v.get<unsigned long long>());
    }
    std::fprintf(out, "  status:%s\n", statuses.empty() ? " (none)" : statuses.c_str());
    for (const char* field : {"errors_by_code", "errors_by_transport"}) {
        if (!j.at(field).empty()) {
            std::string line;
            for (const auto& [k, v] : j.at(field).items()) {
                line += " " + k + "=" + std::to_string(v.get<unsigned long long>());
            }
            std::fprintf(out, "  %s:%s\n", field, line.c_str());
        }
    }
    const auto& s = j.at("seal");
    std::fprintf(out,
                 "  sealing (not timed, %s): %.1f us CPU per request, %llu presealed in %.2f s, %llu sealed in the "
                 "background, %llu sealed inline\n",
                 s.at("alg").get<std::string>().c_str(), s.at("us_per_request").get<double>(), s.at("presealed").get<unsigned long long>(),
                 s.at("fill_s").get<double>(), s.at("background").get<unsigned long long>(),
                 s.at("inline").get<unsigned long long>());
    std::fprintf(out, "  connects %llu, late sends %llu, unfinished at end %llu (%llu with head received)\n",
                 j.at("connects").get<unsigned long long>(), j.at("late_sends").get<unsigned long long>(),
                 j.at("unfinished_at_end").get<unsigned long long>(), j.at("streaming_at_end").get<unsigned long long>());
    if (j.contains("idle_at_end")) {
        std::fprintf(out, "  idle after %u requests: %llu connections idle at the end, %llu closed by the server\n",
                     j.at("idle_after").get<unsigned>(), j.at("idle_at_end").get<unsigned long long>(),
                     j.at("idle_closed").get<unsigned long long>());
    }
    if (s.at("inline").get<unsigned long long>() > 0) {
        std::fprintf(out, "  warning: the presealed pool ran out; raise --preseal so sealing stays out of the run\n");
    }
}

}  // namespace byok::bench
