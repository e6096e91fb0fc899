#pragma once
// Everything the relay answers by itself, as a pure function of the request:
// GET /v1/keys, /healthz, the demo files, the root redirect, CORS
// preflights, unknown routes and methods. No socket, no clock but the one
// passed in; tested without a server (tests/relay/local_routes_test.cpp).

#include <cstdint>
#include <string>
#include <string_view>

#include <boost/beast/http/fields.hpp>
#include <boost/beast/http/verb.hpp>

#include "crypto/keyring.hpp"
#include "relay/response.hpp"
#include "relay/router.hpp"
#include "relay/web_files.hpp"

namespace byok::relay {

struct local_request {
    boost::beast::http::verb method = boost::beast::http::verb::get;
    const route* r = nullptr;                       // from classify()
    const boost::beast::http::fields* headers = nullptr;
    cors_decision cors;
    bool draining = false;
    const std::string* signed_key_list = nullptr;  // served verbatim at /v1/keys when set (relay/key_list.hpp)
};

// The answer to a request that is not a sealed request to a provider (a
// sealed route's preflight included). `files` may be null (no web_root).
[[nodiscard]] local_response answer_locally(const local_request& rq, const crypto::keyring& keys,
                                            const web_files* files, std::int64_t now_unix);

}  // namespace byok::relay
