#!/usr/bin/env bash
# Writes DIR/plugins.yaml: bench routes with plugins, to append to a gen-config.sh config (it
# continues its `routes:` list): `/key` (key-auth, 1,000 consumers), `/jwt` (jwt with an RS256 key
# pair made here with openssl), `/rl-local` and `/rl-redis` (rate-limiting with limits too high to
# be reached, so every request is counted and admitted; Redis at REDIS_URL, default
# redis://127.0.0.1:6379), `/observed` (access-log to DIR/access.log plus tracing at 100 %
# sampling, spans posted to ZIPKIN_URL, default the bench upstream's /api/v2/spans, which
# answers 202 like a collector), and `/transform` (response-transformer removing a field of the
# JSON answer of the upstream's /bench.json and adding one, so `GET /transform/bench.json`
# compares with `GET /bench.json` on the catch-all route), and `/aggregate` (an aggregation
# route over the upstream's /agg/user, /agg/orders and /agg/recs JSON locations). Prints "API_KEY JWT": a valid key and
# a token valid for a day.
#
#   bench/plugin-routes.sh DIR
set -euo pipefail

[[ $# -eq 1 && -d $1 ]] || {
    echo "usage: $0 DIR (an existing directory)" >&2
    exit 2
}
dir=$1
command -v openssl >/dev/null || {
    echo "$0: openssl is needed to make the JWT key pair" >&2
    exit 1
}

openssl genpkey -algorithm RSA -pkeyopt rsa_keygen_bits:2048 -out "$dir/jwt-private.pem" 2>/dev/null
openssl pkey -in "$dir/jwt-private.pem" -pubout -out "$dir/jwt-public.pem"

b64url() { openssl base64 -A | tr '+/' '-_' | tr -d '='; }
now=$(date +%s)
header=$(printf '{"alg":"RS256","typ":"JWT","kid":"bench"}' | b64url)
payload=$(printf '{"sub":"bench-user-7","iss":"bench","aud":"meshgate-bench","iat":%d,"exp":%d}' "$now" $((now + 86400)) | b64url)
signature=$(printf '%s.%s' "$header" "$payload" | openssl dgst -sha256 -sign "$dir/jwt-private.pem" -binary | b64url)
jwt="$header.$payload.$signature"

{
    cat <<'YAML'
  - name: key-auth
    service: upstream
    paths: ["/key"]
    plugins: [{ name: key-auth }]
  - name: jwt
    service: upstream
    paths: ["/jwt"]
    plugins:
      - name: jwt
        config:
          keys: [{ kid: bench, algorithm: RS256, public_key: { file: jwt-public.pem } }]
          issuer: [bench]
          audience: [meshgate-bench]
  - name: rl-local
    service: upstream
    paths: ["/rl-local"]
    plugins: [{ name: rate-limiting, config: { second: 100000000, hour: 100000000000, limit_by: ip } }]
  - name: rl-redis
    service: upstream
    paths: ["/rl-redis"]
    plugins:
      - name: rate-limiting
        config:
          second: 100000000
          hour: 100000000000
          limit_by: ip
          policy: redis
          on_store_error: refuse
          redis: { url: "REDIS_URL_HERE", prefix: "meshgate-bench:PREFIX_HERE" }
  - name: observed
    service: upstream
    paths: ["/observed"]
    plugins:
      - { name: access-log, config: { path: access.log } }
      - name: tracing
        config: { sampling: 1.0, zipkin: { url: "ZIPKIN_URL_HERE" } }
  - name: transform
    service: upstream
    paths: ["/transform"]
    strip_path: true
    plugins:
      - name: response-transformer
        config: { remove: { json: [internal] }, add: { json: { via: meshgate } } }
  - name: aggregate
    paths: ["/aggregate"]
    backends:
      - { name: user, service: upstream, path: /agg/user, allow: [id, name] }
      - { name: orders, service: upstream, path: /agg/orders, target: items, group: orders }
      - { name: recs, service: upstream, path: /agg/recs, group: recs }
consumers:
YAML
    awk 'BEGIN {
        for (i = 0; i < 1000; i++)
            printf "  - { username: bench-user-%d, credentials: { key-auth: [{ key: bench-key-%04d-0123456789abcdef }] } }\n", i, i
    }'
} >"$dir/plugins.yaml"
sed -i "s#REDIS_URL_HERE#${REDIS_URL:-redis://127.0.0.1:6379}#; s#PREFIX_HERE#$$-$now#; s#ZIPKIN_URL_HERE#${ZIPKIN_URL:-http://127.0.0.1:18080/api/v2/spans}#" "$dir/plugins.yaml"

echo "bench-key-0777-0123456789abcdef $jwt"
