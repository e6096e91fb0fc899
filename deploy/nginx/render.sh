#!/bin/sh
# Renders deploy/nginx/ into an nginx configuration directory laid out like
# Debian's /etc/nginx:
#   OUT/sites-available/byok-relay.conf, OUT/sites-available/byok-relay-prefix.conf,
#   OUT/snippets/byok-relay-{upstream,proxy,server}.conf
# The only things filled in are listen addresses, certificate paths, the log
# directory and the relay addresses; everything else is the file as committed
# (the nginx integration test renders through this same script).
#
# Usage: BYOK_NGINX_UPSTREAMS="10.0.0.11:8080 10.0.0.12:8080" \
#        BYOK_NGINX_TLS_CERT=/etc/ssl/relay.pem BYOK_NGINX_TLS_KEY=/etc/ssl/private/relay.key \
#        deploy/nginx/render.sh /etc/nginx
# Optional: BYOK_NGINX_HTTPS_LISTEN (default "[::]:443 ipv6only=off"),
#           BYOK_NGINX_HTTP_LISTEN (default "[::]:80 ipv6only=off"),
#           BYOK_NGINX_LOG_DIR (default /var/log/nginx),
#           BYOK_NGINX_BALANCE ("hash", the default: every copy of a seal to one
#             relay; "round-robin": only for relays that share a replay store).
set -eu

here=$(cd "$(dirname "$0")" && pwd)
out=${1:?usage: render.sh OUT_DIR}

https_listen=${BYOK_NGINX_HTTPS_LISTEN:-[::]:443 ipv6only=off}
http_listen=${BYOK_NGINX_HTTP_LISTEN:-[::]:80 ipv6only=off}
tls_cert=${BYOK_NGINX_TLS_CERT:?set BYOK_NGINX_TLS_CERT}
tls_key=${BYOK_NGINX_TLS_KEY:?set BYOK_NGINX_TLS_KEY}
log_dir=${BYOK_NGINX_LOG_DIR:-/var/log/nginx}
upstreams=${BYOK_NGINX_UPSTREAMS:?set BYOK_NGINX_UPSTREAMS (space-separated host:port list)}
case "${BYOK_NGINX_BALANCE:-hash}" in
    hash) balance='hash $byok_relay_route consistent;' ;;
    round-robin) balance='# round robin (the default method): the relays share a replay store' ;;
    *) echo "render.sh: BYOK_NGINX_BALANCE must be hash or round-robin" >&2; exit 2 ;;
esac

# Values are pasted into nginx syntax: refuse anything that could end a
# directive or start a new one (quotes, ';', '{', '$', '#', newlines).
check() {
    case "$2" in
        *[!A-Za-z0-9_./:@=\[\]\ -]*|'') echo "render.sh: $1 has characters not allowed here: '$2'" >&2; exit 2 ;;
    esac
}
check BYOK_NGINX_HTTPS_LISTEN "$https_listen"
check BYOK_NGINX_HTTP_LISTEN "$http_listen"
check BYOK_NGINX_TLS_CERT "$tls_cert"
check BYOK_NGINX_TLS_KEY "$tls_key"
check BYOK_NGINX_LOG_DIR "$log_dir"
check BYOK_NGINX_UPSTREAMS "$upstreams"
case "$tls_cert$tls_key$log_dir" in *' '*) echo "render.sh: paths must not contain spaces" >&2; exit 2 ;; esac

servers=""
for a in $upstreams; do
    servers="$servers    server $a max_fails=1 fail_timeout=10s;
"
done

render() {  # render SRC DST
    awk -v https="$https_listen" -v http="$http_listen" -v cert="$tls_cert" -v key="$tls_key" \
        -v logs="$log_dir" -v servers="$servers" -v balance="$balance" '
        function sub_all(s, from, to,    i, r) {
            # literal replacement (gsub would treat "&" and "\\" in "to" specially)
            r = ""
            while ((i = index(s, from)) > 0) { r = r substr(s, 1, i - 1) to; s = substr(s, i + length(from)) }
            return r s
        }
        /^[ \t]*@UPSTREAM_SERVERS@[ \t]*$/ { printf "%s", servers; next }
        /^[ \t]*@UPSTREAM_BALANCE@[ \t]*$/ { print "    " balance; next }
        {
            line = $0
            line = sub_all(line, "@HTTPS_LISTEN@", https)
            line = sub_all(line, "@HTTP_LISTEN@", http)
            line = sub_all(line, "@TLS_CERT@", cert)
            line = sub_all(line, "@TLS_KEY@", key)
            line = sub_all(line, "@LOG_DIR@", logs)
            print line
        }' "$1" > "$2.tmp"
    if grep -n '@[A-Z_]*@' "$2.tmp" >&2; then
        echo "render.sh: placeholder left in $2" >&2
        rm -f "$2.tmp"
        exit 1
    fi
    mv "$2.tmp" "$2"
}

mkdir -p "$out/sites-available" "$out/snippets"
render "$here/byok-relay.conf" "$out/sites-available/byok-relay.conf"
render "$here/byok-relay-prefix.conf" "$out/sites-available/byok-relay-prefix.conf"
for f in upstream proxy server; do
    render "$here/snippets/byok-relay-$f.conf" "$out/snippets/byok-relay-$f.conf"
done
echo "render.sh: wrote $out/sites-available/byok-relay.conf, byok-relay-prefix.conf and $out/snippets/byok-relay-*.conf"
