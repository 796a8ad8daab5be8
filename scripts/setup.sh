#!/usr/bin/env bash
# Installs every system package pgshift needs to build, test, demo and bench.
# Idempotent: when everything is present it returns in well under a second.
set -euo pipefail

PACKAGES=(
  build-essential cmake pkg-config clang libclang-rt-14-dev libbpf-dev
  libpq-dev libssl-dev openssl libsqlite3-dev sqlite3
  nlohmann-json3-dev libcli11-dev libasio-dev libspdlog-dev libfmt-dev
  libcpp-httplib-dev libicu-dev libgtest-dev libgmock-dev googletest libyaml-dev
  postgresql-15 postgresql-client-15 postgresql-contrib postgresql-15-wal2json
  pgbouncer haproxy procps iproute2 curl ccache
  chromium
)
# Node.js bundles pgshiftd's web page (web/) and drives Chromium in its
# browser test; any node >= 18 with npm will do: Debian's, or one already
# installed (e.g. NodeSource's, whose nodejs package brings npm along).
if ! command -v node >/dev/null 2>&1 || ! command -v npm >/dev/null 2>&1; then
  PACKAGES+=(nodejs npm)
fi

missing=()
for p in "${PACKAGES[@]}"; do
  if ! dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q "install ok installed"; then
    missing+=("$p")
  fi
done

if ((${#missing[@]})); then
  echo "setup: installing ${missing[*]}" >&2
  SUDO=""
  [ "$(id -u)" -ne 0 ] && SUDO="sudo"
  export DEBIAN_FRONTEND=noninteractive
  $SUDO apt-get update -qq
  $SUDO apt-get install -y -qq --no-install-recommends "${missing[@]}" >/dev/null
fi

# The Debian packages start system-wide services where an init system runs;
# pgshift starts its own instances, so make sure none of those hold ports.
for svc in postgresql pgbouncer haproxy; do
  if command -v service >/dev/null 2>&1 && service "$svc" status >/dev/null 2>&1; then
    service "$svc" stop >/dev/null 2>&1 || true
  fi
done
exit 0
