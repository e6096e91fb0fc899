#!/usr/bin/env python3
"""Writes the seed corpus under tests/fuzz/corpus/<target>/ (run from anywhere).

Seeds are small, valid or nearly valid inputs that take each target deep into
the code quickly; libFuzzer mutates from there. The key-file seed holds a key
generated for this corpus only: it protects nothing.
"""
import base64, hashlib, json, os

HERE = os.path.dirname(os.path.abspath(__file__))
NOW = 1700000000  # the fixed clock of fuzz_seal.cpp


def b64url(b):
    return base64.urlsafe_b64encode(b).rstrip(b'=').decode()


def write(target, name, data):
    d = os.path.join(HERE, 'corpus', target)
    os.makedirs(d, exist_ok=True)
    if isinstance(data, str):
        data = data.encode('latin1')
    with open(os.path.join(d, name), 'wb') as f:
        f.write(data)


# ---- fuzz_seal: "<mode>\n<seal material>\n<method>\n<path>\n<body>"
def payload(key='sk-fuzz-0123456789abcdef', iat=NOW, method='POST', path='/openai/v1/chat/completions', body='{}',
            extra=None):
    p = {'key': key, 'iat': iat, 'method': method, 'path': path, 'body_sha256': b64url(hashlib.sha256(body.encode()).digest())}
    if extra:
        p.update(extra)
    return json.dumps(p, separators=(',', ':'))

body = '{"model":"m","messages":[]}'
seal_seeds = {
    'ok': ('S', payload(body=body), 'POST', '/openai/v1/chat/completions', body),
    'ok_get': ('S', payload(method='GET', path='/openai/v1/models', body=''), 'GET', '/openai/v1/models', ''),
    'ok_escaped': ('S', payload(body=body).replace('"sk-fuzz', '"\\u0073k-fuzz'), 'POST', '/openai/v1/chat/completions', body),
    'ok_unknown_field': ('S', payload(body=body, extra={'x': [1, {'y': None}], 'z': 1.5e3}), 'POST', '/openai/v1/chat/completions', body),
    'expired_iat': ('S', payload(iat=NOW - 3600, body=body), 'POST', '/openai/v1/chat/completions', body),
    'future_iat': ('S', payload(iat=NOW + 3600, body=body), 'POST', '/openai/v1/chat/completions', body),
    'mismatch_path': ('S', payload(body=body), 'POST', '/openai/v1/embeddings', body),
    'mismatch_body': ('S', payload(body=body), 'POST', '/openai/v1/chat/completions', body + ' '),
    'dup_key': ('S', payload(body=body).replace('{', '{"key":"sk-x",', 1), 'POST', '/openai/v1/chat/completions', body),
    'key_control': ('S', payload(key='sk-\\u0001x', body=body), 'POST', '/openai/v1/chat/completions', body),
    'not_json': ('S', 'not json at all', 'POST', '/x', ''),
    'expired_key': ('E', payload(body=body), 'POST', '/openai/v1/chat/completions', body),
    'raw_garbage': ('A', 'Sealed AAAAAAAAAAAA.' + 'A' * 120, 'POST', '/x', ''),
    'raw_scheme': ('A', 'sealed   kid.abc', 'GET', '/', ''),
    'raw_bearer': ('A', 'Bearer sk-raw', 'POST', '/x', ''),
}
for name, (mode, material, method, path, b) in seal_seeds.items():
    write('fuzz_seal', name, '\n'.join([mode, material, method, path, b]))

# ---- fuzz_json_lite
json_seeds = {
    'payload': payload(),
    'nested': '{"a":{"b":[1,2,{"c":"d"}]},"e":[],"f":{}}',
    'escapes': '{"s":"\\"\\\\\\/\\b\\f\\n\\r\\t\\u00e9\\ud83d\\ude00"}',
    'numbers': '{"a":0,"b":-0,"c":9223372036854775807,"d":-9223372036854775808,"e":1.5e-3,"f":1E+2}',
    'literals': '{"t":true,"f":false,"n":null}',
    'utf8': '{"k":"h\u00e9llo \u4e16\u754c \U0001f600"}',
    'ws': ' \t\r\n{ "a" : "b" , "c" : 1 } \n',
    'deep': '{"a":' + '[' * 30 + ']' * 30 + '}',
    'empty': '{}',
}
for name, text in json_seeds.items():
    write('fuzz_json_lite', name, text.encode('utf-8'))

# ---- fuzz_base64url
for name, text in {'a': 'AAEC', 'b': 'cmVZkjUVTSOXu_JbVx8gq1jbjwum42BQSnrDaHTOYl4', 'c': 'A-_z', 'd': 'QQ', 'e': ''}.items():
    write('fuzz_base64url', name, text)

# ---- fuzz_config
full = {
    'listen': '127.0.0.1:8080', 'threads': 2, 'key_files': ['key.json'], 'seal_max_age_s': 60,
    'seal_max_future_s': 30, 'max_body_bytes': 8388608, 'max_header_bytes': 16384,
    'allow_origins': ['https://app.example.com', '*'], 'public_path_prefix': '/relay',
    'trusted_proxies': ['127.0.0.1', '::1'], 'metrics_listen': '[::1]:9090', 'header_timeout_s': 10,
    'body_timeout_s': 30, 'idle_timeout_s': 60, 'write_timeout_s': 30, 'upstream_connect_timeout_s': 10,
    'upstream_timeout_s': 300, 'sse_keepalive_s': 15, 'shutdown_grace_s': 30, 'max_in_flight': 1024,
    'replay_cache_entries': 1024, 'max_connections_per_ip': 256, 'rate_limit': {'requests_per_s': 10, 'burst': 20},
    'providers': {
        'openai': {'base_url': 'https://api.openai.com', 'auth': 'bearer', 'paths': ['/v1/chat/completions']},
        'anthropic': None,
        'local': {'base_url': 'http://127.0.0.1:11434/v1/', 'auth': 'api-key', 'paths': ['/chat', '/models/']},
        'v6': {'base_url': 'https://[2001:db8::1]:8443/base', 'auth': 'x-api-key', 'paths': ['/v1']},
    },
}
write('fuzz_config', 'full', json.dumps(full, indent=1))
write('fuzz_config', 'minimal', '{"key_files":["k.json"]}')
write('fuzz_config', 'bad_listen', '{"listen":"nohost","key_files":["k.json"]}')
write('fuzz_config', 'bad_provider', '{"key_files":["k.json"],"providers":{"x":{"base_url":"http://evil.example"}}}')
write('fuzz_config', 'unknown_field', '{"key_files":["k.json"],"lisen":"127.0.0.1:1"}')

# ---- fuzz_key_file
key = ('{"v":1,"alg":"x25519-sealedbox","kid":"0Iv7MQcAyQKi","pk":"cmVZkjUVTSOXu_JbVx8gq1jbjwum42BQSnrDaHTOYl4",'
       '"sk":"rJy1IXyMeqQeoPBpXk63uGnIcY8cIRNMm2lXJ95ZjpY","created":1795368648,"exp":1797960648}\n')
write('fuzz_key_file', 'keygen', key)
write('fuzz_key_file', 'no_pk_kid', '{"v":1,"alg":"x25519-sealedbox","sk":"rJy1IXyMeqQeoPBpXk63uGnIcY8cIRNMm2lXJ95ZjpY","exp":2}')
write('fuzz_key_file', 'wrong_kid', key.replace('0Iv7MQcAyQKi', 'AAAAAAAAAAAA'))
write('fuzz_key_file', 'v2', key.replace('"v":1', '"v":2'))

# ---- fuzz_http_request
P = '/openai/v1/chat/completions'
http = {
    'sealed_post': f'POST {P} HTTP/1.1\r\nHost: relay\r\nContent-Type: application/json\r\nAuthorization: Sealed kid.box\r\n'
                   f'Origin: https://app.example\r\nUser-Agent: x\r\nX-Forwarded-For: 203.0.113.1, 10.0.0.1\r\n'
                   f'Content-Length: {len(body)}\r\n\r\n{body}',
    'chunked': f'POST {P}?a=b HTTP/1.1\r\nHost: r\r\nTransfer-Encoding: chunked\r\n\r\n5\r\nhello\r\n0\r\n\r\n',
    'pipelined': 'GET /healthz HTTP/1.1\r\nHost: r\r\n\r\nGET /v1/keys HTTP/1.1\r\nHost: r\r\n\r\n'
                 'GET /web/demo/index.html HTTP/1.1\r\nHost: r\r\nX-Forwarded-For: ::1, 2001:db8::5\r\n\r\n',
    'local_provider': 'POST /local/v2/x/y?z HTTP/1.1\r\nHost: r\r\nContent-Length: 0\r\n\r\n',
    'dots': 'GET /openai/v1/chat/completions/../%2e%2e/x HTTP/1.1\r\nHost: r\r\n\r\n',
    'absolute': 'POST http://evil.example/openai/v1/chat/completions HTTP/1.1\r\nHost: evil\r\n\r\n',
    'clte': f'POST {P} HTTP/1.1\r\nHost: r\r\nContent-Length: 5\r\nTransfer-Encoding: chunked\r\n\r\n0\r\n\r\n',
    'fold': f'POST {P} HTTP/1.1\r\nHost: r\r\nTransfer-Encoding:\r\n chunked\r\n\r\n0\r\n\r\n',
    'http10': 'GET /healthz HTTP/1.0\r\nConnection: keep-alive\r\n\r\nGET /healthz HTTP/1.0\r\n\r\n',
    'options': f'OPTIONS {P} HTTP/1.1\r\nHost: r\r\nOrigin: https://app.example\r\nAccess-Control-Request-Method: POST\r\n'
               'Access-Control-Request-Headers: authorization, content-type, x-stainless-os\r\n\r\n',
}
for name, text in http.items():
    write('fuzz_http_request', name, text)

# ---- fuzz_grant: "<mode>\n<grant>\n<proof>\n<method>\n<path>\n<body>"
def grant_plain(key='sk-fuzz-0123456789abcdef', paths=('/v1/chat/completions',), models=('m',), exp=NOW + 1800,
                provider='openai', origin='http://app.test'):
    def s(t):
        b = t.encode()
        return len(b).to_bytes(2, 'big') + b
    out = b'\x01' + (NOW - 10).to_bytes(8, 'big') + exp.to_bytes(8, 'big', signed=True) + bytes(64)
    out += s(provider) + s(origin) + bytes([len(paths)]) + b''.join(s(x) for x in paths)
    out += bytes([len(models)]) + b''.join(s(x) for x in models) + s(key)
    return out.hex()


def claims(body=body, htu=P, htm='POST', iat=NOW, jti='cmFuZG9tLWp0aS0xMjM0NTY'):
    return json.dumps({'htm': htm, 'htu': htu, 'iat': iat, 'jti': jti,
                       'body_sha256': b64url(hashlib.sha256(body.encode()).digest())}, separators=(',', ':'))

grant_seeds = {
    'ok': ('P', grant_plain(), claims()),
    'any_model': ('P', grant_plain(models=()), claims()),
    'many_paths': ('P', grant_plain(paths=('/v1/chat/completions', '/v1/embeddings', '/v1/audio')), claims()),
    'expired': ('P', grant_plain(exp=NOW - 1), claims()),
    'bad_padding': ('P', grant_plain() + '01', claims()),
    'key_control': ('P', grant_plain(key='sk-\x01x'), claims()),
    'claims_missing': ('P', grant_plain(), claims()[:-1].rsplit(',', 1)[0] + '}'),
    'other_path': ('P', grant_plain(), claims(htu='/openai/v1/embeddings')),
    'token_text': ('T', 'AAAAAAAAAAAA.' + b64url(bytes(1064)), 'eyJ0eXAiOiJieW9rLXByb29mK2p3dCIsImFsZyI6IkVTMjU2In0.e30.' + b64url(bytes(64))),
    'no_proof': ('T', 'x.y', ''),
}
for name, (mode, g, pr) in grant_seeds.items():
    write('fuzz_grant', name, f'{mode}\n{g}\n{pr}\nPOST\n{P}\n{body}')
print('corpus written under', os.path.join(HERE, 'corpus'))
