#include "relay/key_path.hpp"

#include <algorithm>
#include <array>
#include <chrono>
#include <cstring>
#include <optional>
#include <vector>

#include <boost/asio/post.hpp>
#include <boost/beast/core/error.hpp>
#include <boost/beast/http/error.hpp>

#include "crypto/secret.hpp"
#include "relay/grants.hpp"
#include "relay/http_util.hpp"
#include "relay/moderation.hpp"

namespace byok::relay {

namespace asio = boost::asio;
namespace beast = boost::beast;

namespace {

// A request whose head and body fit here goes out as one TLS record from
// one locked pooled page; a larger body follows the head as its own buffer.
constexpr std::size_t one_block = crypto::secret_bytes::pool_block_size;

// Writes the head twice over: once counting (out == nullptr), once copying.
class head_writer {
public:
    explicit head_writer(char* out) noexcept : out_(out) {}
    head_writer& operator<<(std::string_view s) noexcept {
        if (out_ != nullptr) {
            std::memcpy(out_ + n_, s.data(), s.size());
        }
        n_ += s.size();
        return *this;
    }
    [[nodiscard]] std::size_t size() const noexcept { return n_; }

private:
    char* out_;
    std::size_t n_ = 0;
};

// The whole request head with the key, and the body if it fits beside it.
void write_head(head_writer& w, const sealed_request& rq, const provider& prov, std::string_view key,
                std::string_view content_length, bool inline_body) {
    w << rq.method << " " << rq.upstream_target << " HTTP/1.1\r\nHost: " << prov.host_header << "\r\n";
    w << prov.auth_line << key << "\r\n";  // a header, never the query string
    for_each_allowed_field(*rq.headers, forward_request_header, [&](std::string_view name, std::string_view value) {
        w << name << ": " << value << "\r\n";
    });
    if (!content_length.empty()) {
        w << "Content-Length: " << content_length << "\r\n";
    }
    w << "\r\n";
    if (inline_body) {
        w << rq.body;
    }
}

// The moderation check's head: POST <base>/v1/moderations with the key.
void write_moderation_head(head_writer& w, const provider& prov, std::string_view key,
                           std::string_view content_length) {
    w << "POST " << prov.base_path << "/v1/moderations HTTP/1.1\r\nHost: " << prov.host_header << "\r\n";
    w << prov.auth_line << key << "\r\n";
    w << "Content-Type: application/json\r\nAccept: application/json\r\nContent-Length: " << content_length
      << "\r\n\r\n";
}

// Answers a moderation check may have; a longer one is not one.
constexpr std::size_t max_moderation_answer = 256 * 1024;

// The moderation pre-check (relay/moderation.hpp): the request's text to the
// provider's /v1/moderations, with the key. nullopt when no verdict came
// (unreachable, timeout, not 200, not a moderation answer). On `via`
// another provider, with the operator's key for it instead of `user_key`.
asio::awaitable<std::optional<moderation_verdict>> moderate(const key_path_env& env, std::string_view user_key,
                                                            const std::vector<std::string>& texts) {
    const auto timeout = std::chrono::seconds(env.cfg.upstream_timeout_s);
    const moderation_check& check = *env.prov.moderation;
    const bool other = check.operator_key && env.moderation_prov != nullptr && env.moderation_pool != nullptr;
    if (check.operator_key && !other) {
        co_return std::nullopt;  // never the user's key to another provider
    }
    const provider& via = other ? *env.moderation_prov : env.prov;
    upstream_pool& pool = other ? *env.moderation_pool : env.pool;
    const std::string_view key = other ? check.operator_key->view() : user_key;
    std::unique_ptr<upstream_conn> conn = pool.take();
    if (!conn) {
        boost::system::error_code ec;
        conn = co_await pool.connect(std::chrono::seconds(env.cfg.upstream_connect_timeout_s), ec);
        if (!conn) {
            co_return std::nullopt;
        }
    }
    const std::string body = moderation_request_body(check.model, texts);
    const std::string length = std::to_string(body.size());
    head_writer counter(nullptr);
    write_moderation_head(counter, via, key, length);
    crypto::secret_bytes head = crypto::secret_bytes::allocate(counter.size());
    head_writer writer(head.chars().data());
    write_moderation_head(writer, via, key, length);
    const std::array<asio::const_buffer, 2> bufs{asio::buffer(head.data(), head.size()), asio::buffer(body)};
    conn->deadline.expires_after(timeout);
    const auto wec = co_await conn->write(bufs);
    head = crypto::secret_bytes();  // wiped and back to the pool
    if (wec) {
        conn->close();
        co_return std::nullopt;
    }
    upstream_response resp(*conn, timeout);
    std::string answer;
    bool ok = !co_await resp.read_head() && resp.status() == 200;
    std::array<char, 4096> piece{};
    while (ok) {
        boost::system::error_code pec;
        answer.append(piece.data(), resp.parse_body(asio::buffer(piece), pec));
        if (pec || answer.size() > max_moderation_answer) {
            ok = false;
        } else if (resp.done()) {
            break;
        } else if (const auto fec = co_await resp.fill(); fec && !(fec == beast::http::error::end_of_stream)) {
            ok = false;
        }
    }
    if (ok && resp.reusable()) {
        pool.give_back(std::move(conn));
    } else {
        conn->close();
    }
    co_return ok ? read_moderation_answer(answer) : std::nullopt;
}

// SHA-256 of the forwarded header fields a seal binds (docs/protocol.md §3.5):
// a captured request resent with another organization, project, beta or
// content type no longer matches its seal.
crypto::sha256_digest sealed_headers_digest(const beast::http::fields& headers) {
    std::array<crypto::header_field, 16> few{};
    std::size_t n = 0;
    bool overflow = false;
    for (const auto& f : headers) {
        const std::string_view name = f.name_string();
        bool bound = false;
        for (const auto b : crypto::sealed_header_names) {
            bound = bound || iequals(name, b);
        }
        if (!bound) {
            continue;
        }
        if (n == few.size()) {
            overflow = true;
            break;
        }
        few[n++] = {name, f.value()};
    }
    if (!overflow) {
        return crypto::headers_sha256(std::span<const crypto::header_field>(few.data(), n));
    }
    std::vector<crypto::header_field> all;  // headers_sha256 filters them itself
    for (const auto& f : headers) {
        all.push_back({f.name_string(), f.value()});
    }
    return crypto::headers_sha256(all);
}

// The one point where a proof's jti is claimed as used (a shared replay
// store, when there is one, claims the same id here too).
std::optional<error_code> claim_proof(const key_path_env& env, const crypto::opened_grant& g, std::int64_t now) {
    if (const auto e = env.grants.claim_proof(g, now)) {
        return from_grant_error(*e);
    }
    return std::nullopt;
}

// The key from a grant: the grant and its proof (crypto), the grant's scope
// (relay/grants.cpp), then the proof's jti recorded once every check passed.
std::optional<crypto::opened_key> open_grant(const key_path_env& env, const sealed_request& rq,
                                             std::string_view authorization, std::int64_t now, sent_request& out,
                                             crypto::accepted_seal& accepted) {
    out.grant = true;
    const auto [proof, proofs] = proof_header(*rq.headers);
    const crypto::grant_request_facts facts{authorization, proof, proofs, rq.method, rq.sealed_path, rq.body_sha256};
    auto opened = env.grants.open(env.keys, facts, now);
    if (!opened) {
        out.error = from_grant_error(opened.error());
        out.seal_refused = out.error != error_code::overloaded;
        return std::nullopt;
    }
    if (const auto e = check_grant_scope(opened.grant(), {rq.headers, env.prov.name, rq.provider_path, rq.body})) {
        out.error = *e;
        out.seal_refused = true;
        return std::nullopt;
    }
    if (const auto e = claim_proof(env, opened.grant(), now)) {
        out.error = *e;
        out.seal_refused = out.error != error_code::overloaded;
        return std::nullopt;
    }
    accepted = {opened.grant().proof_id(), opened.grant().proof_forget_at()};
    return std::move(opened).take().take_key();
}

// The key from a seal.
std::optional<crypto::opened_key> open_seal(crypto::seal_checker& checker, const crypto::keyring& keys,
                                            const sealed_request& rq, std::string_view authorization,
                                            std::int64_t now, bool& seal_refused, error_code& error,
                                            crypto::accepted_seal& accepted) {
    const crypto::sha256_digest headers_digest = sealed_headers_digest(*rq.headers);
    const crypto::request_facts facts{rq.method, rq.sealed_path, rq.body_sha256, authorization, &headers_digest};
    auto checked = checker.check(keys, facts, now);
    if (!checked) {
        error = from_seal_error(checked.error());
        seal_refused = error != error_code::overloaded;
        return std::nullopt;
    }
    accepted = checked.accepted();
    return std::move(checked).take_key();
}

}  // namespace

asio::awaitable<std::optional<error_code>> claim_once(replay_store* store, metrics* stats,
                                                      std::span<const unsigned char> id, std::int64_t forget_at,
                                                      std::int64_t now_unix) {
    if (store == nullptr) {
        co_return std::nullopt;  // the local replay cache (already checked) is all there is
    }
    const auto ttl = std::chrono::milliseconds(std::max<std::int64_t>(forget_at - now_unix, 1) * 1000);
    switch (co_await store->claim(id, ttl)) {
    case claim_outcome::claimed: co_return std::nullopt;
    case claim_outcome::replayed: co_return error_code::seal_replayed;
    case claim_outcome::unavailable: break;
    }
    if (store->config().on_error == replay_store_failure::local) {
        stats->replay_store_served_local.fetch_add(1, std::memory_order_relaxed);
        co_return std::nullopt;
    }
    stats->replay_store_refused.fetch_add(1, std::memory_order_relaxed);
    co_return error_code::overloaded;  // never forwarded unconfirmed
}

asio::awaitable<sent_request> open_and_send(const key_path_env& env, const sealed_request& rq,
                                            std::int64_t now_unix) {
    sent_request out;

    // 1. Open and check a seal, or a grant with its proof. The key exists
    //    from here to the end of this function.
    const std::string_view authorization = (*rq.headers)[beast::http::field::authorization];
    crypto::accepted_seal accepted;  // the seal's replay id, or the proof's
    std::optional<crypto::opened_key> opened =
        crypto::is_grant_authorization(authorization)
            ? open_grant(env, rq, authorization, now_unix, out, accepted)
            : open_seal(env.checker, env.keys, rq, authorization, now_unix, out.seal_refused, out.error, accepted);
    if (!opened) {
        co_return out;
    }
    const crypto::opened_key key = std::move(*opened);
    opened.reset();

    // 1b. Claimed once across every replica sharing the store, before the
    // key goes anywhere.
    if (const auto refused = co_await claim_once(env.store, env.stats, accepted.id, accepted.forget_at, now_unix)) {
        out.error = out.grant && *refused == error_code::seal_replayed ? error_code::proof_replayed : *refused;
        out.seal_refused = *refused == error_code::seal_replayed;
        co_return out;
    }
    out.key_opened = true;

    // 2. A slot, then a verified connection, before the key is put anywhere.
    out.slot = in_flight_slot::try_take(env.in_flight, env.max_in_flight);
    if (!out.slot) {
        out.error = error_code::overloaded;
        co_return out;
    }
    // 2b. The moderation pre-check, when the provider has one: first, with
    // the same key; a flagged request never reaches the provider.
    if (env.prov.moderation) {
        if (const auto texts = moderation_texts(rq.body); !texts.empty()) {
            const auto started = std::chrono::steady_clock::now();
            const auto verdict = co_await moderate(env, key.value(), texts);
            out.moderation_s = std::chrono::duration<double>(std::chrono::steady_clock::now() - started).count();
            if (verdict && verdict->flagged) {
                out.error = error_code::content_flagged;
                out.flagged_categories = verdict->categories;
                co_return out;
            }
            if (!verdict && env.prov.moderation->refuse_on_error) {
                out.error = error_code::moderation_unavailable;
                co_return out;
            }
        }
    }
    out.conn = env.pool.take();
    if (!out.conn) {
        boost::system::error_code ec;
        out.conn = co_await env.pool.connect(std::chrono::seconds(env.cfg.upstream_connect_timeout_s), ec);
        if (!out.conn) {
            out.error = ec == beast::error::timeout ? error_code::upstream_timeout : error_code::upstream_unreachable;
            co_return out;
        }
    }

    // 3. The head, in one locked block sized for it (pooled when it fits a page).
    char length_text[24];
    std::size_t length_len = 0;
    if (!rq.body.empty() || rq.method == "POST") {
        length_len = static_cast<std::size_t>(std::snprintf(length_text, sizeof length_text, "%zu", rq.body.size()));
    }
    const std::string_view content_length(length_text, length_len);
    head_writer counter(nullptr);
    write_head(counter, rq, env.prov, key.value(), content_length, false);
    const bool inline_body = counter.size() + rq.body.size() <= one_block;
    crypto::secret_bytes head = crypto::secret_bytes::allocate(counter.size() + (inline_body ? rq.body.size() : 0));
    head_writer writer(head.chars().data());
    write_head(writer, rq, env.prov, key.value(), content_length, inline_body);

    // 4. Write, then wipe. Code that handles the key may leave pieces of it in
    // stack frames it does not wipe: after OpenSSL began writing to the
    // socket itself, the residue test found 40 key bytes on the worker's
    // stack 1 KiB below the event loop's frame, out of reach of a wipe from
    // here. A handler posted to this thread runs from the top of its event
    // loop and zeroes the 16 KiB below it: every frame this request used.
    const std::array<asio::const_buffer, 2> bufs{asio::buffer(head.data(), head.size()),
                                                 asio::buffer(inline_body ? std::string_view() : rq.body)};
    out.conn->deadline.expires_after(std::chrono::seconds(env.cfg.upstream_timeout_s));
    const auto wec = co_await out.conn->write(bufs);
    head = crypto::secret_bytes();  // wiped and back to the pool
    asio::post(out.conn->socket().get_executor(), [] { crypto::wipe_stack_below(); });
    if (wec) {
        out.conn->close();
        out.error = wec == beast::error::timeout ? error_code::upstream_timeout : error_code::upstream_unreachable;
        co_return out;
    }
    out.ok = true;
    co_return out;
}  // `key` is wiped here

minted_grant mint_grant(crypto::seal_checker& checker, const crypto::keyring& keys, const config& cfg,
                        const sealed_request& rq, std::int64_t now_unix) {
    minted_grant out;
    auto scope = parse_grant_request(cfg, rq.body, now_unix);
    if (const auto* e = std::get_if<error_code>(&scope)) {
        out.error = *e;
        return out;
    }
    const crypto::relay_key* signer = keys.grant_signer(now_unix);
    if (signer == nullptr) {
        out.error = error_code::unknown_route;  // this relay's key files hold no grant key: no grants here
        return out;
    }
    const std::string_view authorization = (*rq.headers)[beast::http::field::authorization];
    const auto key = open_seal(checker, keys, rq, authorization, now_unix, out.seal_refused, out.error, out.accepted);
    if (!key) {
        return out;
    }
    auto& s = std::get<crypto::grant_scope>(scope);
    s.exp = std::min(s.exp, signer->exp());  // a grant dies with its key
    out.body = grant_response_body(crypto::make_grant_token(*signer, s, key->value()), s);
    crypto::wipe_stack_below();  // what sealing the token left on this thread's stack
    out.ok = true;
    return out;
}  // `key` is wiped here

}  // namespace byok::relay
