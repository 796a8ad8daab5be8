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

# PostgreSQL 15's own regression suite (make e2e-regress): the source of the
# installed server's exact version (deb-src of Debian 12's main archive), and
# the libraries its tests load from one directory (pg_regress --dlpath):
# regress.so built from that source against postgresql-server-dev-15 of the
# same version, and contrib/spi's autoinc.so and refint.so, which the server
# package ships. Cached outside the repository; once there, only checks run.
REGRESS_CACHE="${PGSHIFT_REGRESS_CACHE:-/var/cache/pgshift}"
REGRESS_SOURCES=/etc/apt/sources.list.d/pgshift-deb-src.sources
PG_LIBDIR=/usr/lib/postgresql/15/lib
pg_version=$(dpkg-query -W -f='${Version}' postgresql-15)
regress_dir="$REGRESS_CACHE/postgresql-15-$pg_version"
if [ ! -f "$regress_dir/lib/regress.so" ]; then
  SUDO=""
  [ "$(id -u)" -ne 0 ] && SUDO="sudo"
  export DEBIAN_FRONTEND=noninteractive
  if ! dpkg-query -W -f='${Status} ${Version}' postgresql-server-dev-15 2>/dev/null |
    grep -qx "install ok installed $pg_version"; then
    echo "setup: installing postgresql-server-dev-15=$pg_version" >&2
    $SUDO apt-get install -y -qq --no-install-recommends \
      "postgresql-server-dev-15=$pg_version" >/dev/null
  fi
  if [ ! -d "$regress_dir/src/test/regress" ]; then
    if ! grep -rqs '^Types:.*deb-src\|^deb-src ' /etc/apt/sources.list /etc/apt/sources.list.d/; then
      echo "setup: adding $REGRESS_SOURCES (bookworm main sources)" >&2
      $SUDO tee "$REGRESS_SOURCES" >/dev/null <<'SOURCES'
Types: deb-src
URIs: http://deb.debian.org/debian
Suites: bookworm bookworm-updates
Components: main
Signed-By: /usr/share/keyrings/debian-archive-keyring.gpg

Types: deb-src
URIs: http://deb.debian.org/debian-security
Suites: bookworm-security
Components: main
Signed-By: /usr/share/keyrings/debian-archive-keyring.gpg
SOURCES
      $SUDO apt-get update -qq
    fi
    echo "setup: fetching postgresql-15 $pg_version source into $REGRESS_CACHE" >&2
    $SUDO mkdir -p "$REGRESS_CACHE"
    fetch=$($SUDO mktemp -d "$REGRESS_CACHE/fetch.XXXXXX")
    # apt's download sandbox user (_apt) cannot write into a root-owned directory.
    (cd "$fetch" && $SUDO apt-get source -qq -o APT::Sandbox::User=root \
      "postgresql-15=$pg_version" >/dev/null)
    src=$(find "$fetch" -mindepth 1 -maxdepth 1 -type d -name 'postgresql-15*' | head -n 1)
    [ -n "$src" ] || { echo "setup: apt-get source postgresql-15 unpacked nothing" >&2; exit 1; }
    $SUDO rm -rf "$regress_dir"
    $SUDO mv "$src" "$regress_dir"
    $SUDO rm -rf "$fetch"
  fi
  pg_config=/usr/lib/postgresql/15/bin/pg_config
  $SUDO mkdir -p "$regress_dir/lib"
  for lib in autoinc refint; do $SUDO ln -sf "$PG_LIBDIR/$lib.so" "$regress_dir/lib/$lib.so"; done
  # Compiled with the flags the server was built with, as PGXS would.
  $SUDO sh -c "cc $($pg_config --cflags_sl) $($pg_config --cflags) -shared \
    -I$($pg_config --includedir-server) -o '$regress_dir/lib/regress.so.tmp' \
    '$regress_dir/src/test/regress/regress.c' && \
    mv '$regress_dir/lib/regress.so.tmp' '$regress_dir/lib/regress.so'"
  $SUDO chmod -R a+rX "$REGRESS_CACHE"
fi

# The Debian packages start system-wide services where an init system runs;
# pgshift starts its own instances, so make sure none of those hold ports.
for svc in postgresql pgbouncer haproxy; do
  if command -v service >/dev/null 2>&1 && service "$svc" status >/dev/null 2>&1; then
    service "$svc" stop >/dev/null 2>&1 || true
  fi
done
exit 0
