#!/usr/bin/env bash
# Benchmark of pgshift-proxy (not a test): pgbench -S and tpcb-like, 8 clients,
# direct vs pgshift-proxy vs PgBouncer (transaction mode) vs HAProxy (TCP mode)
# in one run, plus mTLS vs plaintext through the proxy. Self-contained: starts
# its own PostgreSQL cluster, PgBouncer and HAProxy as user postgres, cleans up.
#
#   bash bench/proxy/run.sh            (DURATION=10 seconds per phase, CLIENTS=8)
# Ratios are tps ratios of pgbench -S with CLIENTS clients; p50_overhead_us is
# the median latency added by the proxy with a single client (no queueing).
#   PROXY_BIN=/path/pgshift-proxy bash bench/proxy/run.sh
# The last line is: BENCH proxy {"proxy_vs_direct":R,...}
set -euo pipefail
ROOT="$(cd "$(dirname "$0")/../.." && pwd)"
DURATION="${DURATION:-10}"
CLIENTS="${CLIENTS:-8}"
SCALE="${SCALE:-8}"
ROUNDS="${ROUNDS:-2}"
PGBIN="${PGBIN:-/usr/lib/postgresql/15/bin}"
BUILD="${BUILD:-$ROOT/build}"
PROXY_BIN="${PROXY_BIN:-$BUILD/src/proxy/pgshift-proxy}"
PROXY_THREADS="${PROXY_THREADS:-1}"
# How the three middlemen reach PostgreSQL: unix (its socket directory) or tcp.
UPSTREAM="${UPSTREAM:-unix}"

if [ ! -x "$PROXY_BIN" ]; then
  echo "bench: building pgshift-proxy in $BUILD" >&2
  cmake -S "$ROOT" -B "$BUILD" -DCMAKE_BUILD_TYPE=RelWithDebInfo >/dev/null
  cmake --build "$BUILD" -j2 --target pgshift-proxy >/dev/null
fi

free_port() { python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1])'; }
as_pg() { runuser -u postgres -- "$@"; }

WORK="$(mktemp -d /tmp/pgshift-bench-proxy-XXXXXX)"
chown postgres: "$WORK"
PIDS=()
cleanup() {
  # Best effort on exit: any of these may already have stopped on its own.
  for p in "${PIDS[@]}"; do kill "$p" 2>/dev/null || true; done
  for p in "${PIDS[@]}"; do wait "$p" 2>/dev/null || true; done
  as_pg "$PGBIN/pg_ctl" -D "$WORK/pg" -m immediate stop >/dev/null 2>&1 || true
  rm -rf "$WORK"
}
trap cleanup EXIT

if [ "$UPSTREAM" = unix ]; then
  UP_HOST="$WORK"; HAPROXY_SERVER='unix@'"$WORK"'/.s.PGSQL.$PGPORT'
else
  UP_HOST=127.0.0.1; HAPROXY_SERVER='127.0.0.1:$PGPORT'
fi

wait_port() {
  for _ in $(seq 1 200); do
    if (exec 3<>"/dev/tcp/127.0.0.1/$1") 2>/dev/null; then return 0; fi
    sleep 0.05
  done
  echo "bench: nothing listens on port $1" >&2
  return 1
}

PGPORT=$(free_port); PROXY_PORT=$(free_port); ADMIN_PORT=$(free_port)
BOUNCER_PORT=$(free_port); HAPROXY_PORT=$(free_port)

echo "bench: initdb + pgbench -i -s $SCALE" >&2
as_pg "$PGBIN/initdb" -D "$WORK/pg" -A trust -U postgres --no-sync >/dev/null
cat >> "$WORK/pg/postgresql.conf" <<CONF
listen_addresses = '127.0.0.1'
port = $PGPORT
unix_socket_directories = '$WORK'
max_connections = 100
shared_buffers = 256MB
synchronous_commit = off
fsync = off
CONF
as_pg "$PGBIN/pg_ctl" -D "$WORK/pg" -l "$WORK/pg.log" -w start >/dev/null
"$PGBIN/createdb" -h 127.0.0.1 -p "$PGPORT" -U postgres bench
"$PGBIN/pgbench" -i -q -s "$SCALE" -h 127.0.0.1 -p "$PGPORT" -U postgres bench >/dev/null 2>&1

# Certificates for the mTLS phase.
(
  cd "$WORK"
  K="-newkey ec -pkeyopt ec_paramgen_curve:prime256v1 -nodes"
  openssl req -x509 $K -keyout ca.key -out ca.crt -days 2 -subj /CN=bench-ca 2>/dev/null
  printf 'subjectAltName=IP:127.0.0.1\n' > san.ext
  openssl req $K -keyout server.key -out server.csr -subj /CN=localhost 2>/dev/null
  openssl x509 -req -in server.csr -CA ca.crt -CAkey ca.key -CAcreateserial -out server.crt -days 2 -extfile san.ext 2>/dev/null
  openssl req $K -keyout client.key -out client.csr -subj /CN=bench-client 2>/dev/null
  openssl x509 -req -in client.csr -CA ca.crt -CAkey ca.key -CAcreateserial -out client.crt -days 2 2>/dev/null
  chmod 600 ./*.key
)

cat > "$WORK/proxy.json" <<CONF
{"listen":"127.0.0.1:$PROXY_PORT","admin_listen":"127.0.0.1:$ADMIN_PORT","threads":$PROXY_THREADS,
 "tls":{"cert":"server.crt","key":"server.key","client_ca":"ca.crt"},
 "routes":[{"name":"bench","database":"bench","upstream":{"host":"$UP_HOST","port":$PGPORT},
            "allow_plaintext":true}],
 "policy":[{"identity":"bench-client","databases":["bench"],"roles":["postgres"]}],
 "credentials":[]}
CONF
"$PROXY_BIN" --config "$WORK/proxy.json" > "$WORK/proxy.log" 2>&1 &
PIDS+=($!)

cat > "$WORK/pgbouncer.ini" <<CONF
[databases]
bench = host=$UP_HOST port=$PGPORT dbname=bench
[pgbouncer]
listen_addr = 127.0.0.1
listen_port = $BOUNCER_PORT
unix_socket_dir =
auth_type = trust
auth_file = $WORK/userlist.txt
pool_mode = transaction
max_client_conn = 200
default_pool_size = $CLIENTS
logfile = $WORK/pgbouncer.log
CONF
echo '"postgres" ""' > "$WORK/userlist.txt"
chown postgres: "$WORK"/pgbouncer.ini "$WORK"/userlist.txt
as_pg pgbouncer "$WORK/pgbouncer.ini" > /dev/null 2>&1 &
PIDS+=($!)

cat > "$WORK/haproxy.cfg" <<CONF
global
  maxconn 400
defaults
  mode tcp
  timeout connect 5s
  timeout client 2m
  timeout server 2m
listen pg
  bind 127.0.0.1:$HAPROXY_PORT
  server pg1 $(eval echo "$HAPROXY_SERVER")
CONF
chown postgres: "$WORK/haproxy.cfg"
as_pg haproxy -db -f "$WORK/haproxy.cfg" > "$WORK/haproxy.log" 2>&1 &
PIDS+=($!)

wait_port "$PROXY_PORT"; wait_port "$BOUNCER_PORT"; wait_port "$HAPROXY_PORT"

# run NAME PORT MODE(select|tpcb) [mtls] [clients] → prints "tps p50_us"
run() {
  local name=$1 port=$2 mode=$3 tls=${4:-} clients=${5:-$CLIENTS}
  local dir="$WORK/log-$name-$mode-$clients"; mkdir -p "$dir"
  local threads=2; [ "$clients" -lt 2 ] && threads=1
  local args=(-n -c "$clients" -j "$threads" -T "$DURATION" -h 127.0.0.1 -p "$port" -U postgres -l --log-prefix "$dir/tx")
  [ "$mode" = select ] && args+=(-S)
  local env=(PGSSLMODE=disable)
  [ -n "$tls" ] && env=(PGSSLMODE=verify-full PGSSLROOTCERT="$WORK/ca.crt" PGSSLCERT="$WORK/client.crt" PGSSLKEY="$WORK/client.key")
  local out
  out=$(env "${env[@]}" "$PGBIN/pgbench" "${args[@]}" bench 2>&1) || { echo "bench: pgbench $name $mode failed:" >&2; echo "$out" >&2; return 1; }
  local tps; tps=$(echo "$out" | sed -n 's/^tps = \([0-9.]*\).*/\1/p' | head -1)
  local p50; p50=$(cat "$dir"/tx* | awk '{print $3}' | sort -n | awk '{a[NR]=$1} END {print a[int((NR+1)/2)]}')
  echo "$tps $p50"
}

declare -A TPS P50
TARGETS=("direct:$PGPORT" "proxy:$PROXY_PORT" "pgbouncer:$BOUNCER_PORT" "haproxy:$HAPROXY_PORT")
# -S: ROUNDS round-robin passes over the targets (and the proxy with mTLS), best
# tps of each, so a burst of load from elsewhere on the host does not decide a
# ratio alone.
for round in $(seq 1 "$ROUNDS"); do
  for spec in "${TARGETS[@]}" "proxy-mtls:$PROXY_PORT"; do
    name=${spec%%:*}; port=${spec##*:}
    tls=""; [ "$name" = proxy-mtls ] && tls=mtls
    read -r t p < <(run "$name-r$round" "$port" select "$tls")
    printf 'bench: %-10s %-6s tps=%10.1f p50=%6d us (round %d)\n' "$name" select "$t" "$p" "$round" >&2
    if [ -z "${TPS[$name-select]:-}" ] || python3 -c "import sys; sys.exit(0 if $t > ${TPS[$name-select]} else 1)"; then
      TPS[$name-select]=$t; P50[$name-select]=$p
    fi
  done
done
for spec in "${TARGETS[@]}"; do
  name=${spec%%:*}; port=${spec##*:}
  read -r t p < <(run "$name" "$port" tpcb)
  TPS[$name-tpcb]=$t; P50[$name-tpcb]=$p
  printf 'bench: %-10s %-6s tps=%10.1f p50=%6d us\n' "$name" tpcb "$t" "$p" >&2
done
# Per-hop latency without queueing: one client, -S, direct vs proxy.
for spec in "direct:$PGPORT" "proxy:$PROXY_PORT"; do
  name=${spec%%:*}; port=${spec##*:}
  read -r t p < <(run "$name" "$port" select "" 1)
  P50[$name-single]=$p
  printf 'bench: %-10s %-6s tps=%10.1f p50=%6d us (1 client)\n' "$name" select "$t" "$p" >&2
done

python3 - "${TPS[direct-select]}" "${TPS[proxy-select]}" "${TPS[pgbouncer-select]}" \
  "${TPS[haproxy-select]}" "${P50[direct-single]}" "${P50[proxy-single]}" \
  "${TPS[proxy-mtls-select]}" "${TPS[direct-tpcb]}" "${TPS[proxy-tpcb]}" \
  "${TPS[pgbouncer-tpcb]}" "${TPS[haproxy-tpcb]}" <<'PY'
import json, sys
d, p, b, h, p50d, p50p, m, dt, pt, bt, ht = map(float, sys.argv[1:])
print(f"bench: tpcb ratios: proxy/direct={pt/dt:.3f} proxy/pgbouncer={pt/bt:.3f} proxy/haproxy={pt/ht:.3f}",
      file=sys.stderr)
print("BENCH proxy " + json.dumps({
    "proxy_vs_direct": round(p / d, 3),
    "proxy_vs_pgbouncer": round(p / b, 3),
    "proxy_vs_haproxy": round(p / h, 3),
    "p50_overhead_us": round(p50p - p50d, 1),
    "mtls_vs_plain": round(m / p, 3),
}, separators=(",", ":")))
PY
