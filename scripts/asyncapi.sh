#!/usr/bin/env bash
# The AsyncAPI CLI (npm @asyncapi/cli), installed once into the project's cache,
# run with its usage analytics off (nothing leaves the machine).
#   scripts/asyncapi.sh validate asyncapi.yaml
set -euo pipefail
version=6.2.0
cache="${XDG_CACHE_HOME:-$HOME/.cache}/duroot-stream/asyncapi-cli-$version"
if [[ ! -x "$cache/node_modules/.bin/asyncapi" ]]; then
  command -v npm >/dev/null || { echo "asyncapi: npm is missing (Debian: apt-get install npm)" >&2; exit 1; }
  echo "installing @asyncapi/cli $version into $cache (npm, once) ..." >&2
  rm -rf "$cache.partial" && mkdir -p "$cache.partial"
  npm install --prefix "$cache.partial" --no-audit --no-fund --loglevel=error \
    "@asyncapi/cli@$version" >&2
  rm -rf "$cache" && mv "$cache.partial" "$cache"
fi
settings="$cache/analytics.json"
[[ -f "$settings" ]] || echo '{"analyticsEnabled":"false","infoMessageShown":"true","userID":"none"}' >"$settings"
export ASYNCAPI_METRICS_CONFIG_PATH="$settings" SUPPRESS_NO_CONFIG_WARNING=1 CI=true
exec "$cache/node_modules/.bin/asyncapi" "$@"
