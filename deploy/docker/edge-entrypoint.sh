#!/bin/sh
# Renders the repository's nginx config from BYOK_NGINX_* variables (see
# deploy/nginx/render.sh) and runs nginx in the foreground.
set -eu
sh /usr/share/byok-relay/nginx/render.sh /etc/nginx
ln -sf ../sites-available/byok-relay.conf /etc/nginx/sites-enabled/byok-relay.conf
nginx -t
exec nginx -g 'daemon off;'
