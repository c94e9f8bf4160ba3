#!/usr/bin/env bash
# Install the system tools the project runs (Debian names), when missing:
#   java + mvn  the local Kafka broker (Maven Central jars)
#   du          GNU coreutils, the runner's worker
#   docker-compose, prometheus, chromium   only for the tests that validate, scrape, browse
#                                (Debian's prometheus brings promtool, for the alert-rule tests)
# As root with apt-get it installs them; otherwise it says what to install.
set -euo pipefail

want=()
command -v java >/dev/null || want+=(openjdk-17-jre-headless)
command -v mvn >/dev/null || want+=(maven)
command -v du >/dev/null || want+=(coreutils)
command -v openssl >/dev/null || want+=(openssl) # the SASL_SSL broker's certificates
if [[ "${1:-}" == "--test" ]]; then
  command -v docker-compose >/dev/null || want+=(docker-compose)
  { command -v prometheus && command -v promtool; } >/dev/null || want+=(prometheus)
  command -v chromium >/dev/null || want+=(chromium)  # the browser tests (headless)
fi
((${#want[@]})) || exit 0

if [[ $(id -u) -eq 0 ]] && command -v apt-get >/dev/null; then
  echo "installing ${want[*]} (apt-get) ..." >&2
  export DEBIAN_FRONTEND=noninteractive
  apt-get update -qq >/dev/null
  apt-get install -y -qq --no-install-recommends "${want[@]}" >/dev/null
else
  echo "missing: ${want[*]} — install them (Debian/Ubuntu: sudo apt-get install ${want[*]})," >&2
  echo "or run the whole stack with Docker: docker compose up" >&2
  exit 1
fi
