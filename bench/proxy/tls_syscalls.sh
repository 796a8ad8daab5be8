#!/usr/bin/env bash
# Syscalls and CPU of pgshift-proxy per mTLS transaction (the profile behind
# the TLS steps in bench/proxy/README.md): one PostgreSQL cluster, one proxy
# (PROXY_BIN), CLIENTS pgbench -S clients over mTLS for TXNS transactions each,
# first under `strace -c -f` (syscall counts per transaction), then without
# it (proxy CPU us per transaction from /proc), interleaved with the same
# clients in plaintext through forwarder.c (the floor of any user-space proxy
# on the host: read and write per message, no TLS, no parsing); PERF_OUT=file
# adds a perf profile. kernel_splice is off: mTLS sessions never splice, and
# loading the BPF programs took ~27 s at load 60. Not a test.
#   PROXY_BIN=build/src/proxy/pgshift-proxy bash bench/proxy/tls_syscalls.sh
set -euo pipefail
ROOT="$(cd "$(dirname "$0")/../.." && pwd)"
. "$ROOT/bench/proxy/certs.sh"
PGBIN="${PGBIN:-/usr/lib/postgresql/15/bin}"
PROXY_BIN="${PROXY_BIN:-$ROOT/build/src/proxy/pgshift-proxy}"
CLIENTS="${CLIENTS:-8}"
TXNS="${TXNS:-2000}"
THREADS="${THREADS:-1}"
free_port() { python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1])'; }
as_pg() { runuser -u postgres -- "$@"; }
WORK="$(mktemp -d /tmp/pgshift-tls-syscalls-XXXXXX)"
chown postgres: "$WORK"
PROXY_PID=""; FWD_PID=""
cleanup() {
  [ -n "$PROXY_PID" ] && kill "$PROXY_PID" 2>/dev/null || true
  [ -n "$FWD_PID" ] && kill "$FWD_PID" 2>/dev/null || true
  as_pg "$PGBIN/pg_ctl" -D "$WORK/pg" -m immediate stop >/dev/null 2>&1 || true
  rm -rf "$WORK"
}
trap cleanup EXIT
PGPORT=$(free_port); PROXY_PORT=$(free_port); ADMIN_PORT=$(free_port); FWD_PORT=$(free_port)
as_pg "$PGBIN/initdb" -D "$WORK/pg" -A trust -U postgres --no-sync >/dev/null
printf "listen_addresses='127.0.0.1'\nport=$PGPORT\nunix_socket_directories='$WORK'\nfsync=off\n" >> "$WORK/pg/postgresql.conf"
as_pg "$PGBIN/pg_ctl" -D "$WORK/pg" -l "$WORK/pg.log" -w start >/dev/null
"$PGBIN/createdb" -h 127.0.0.1 -p "$PGPORT" -U postgres bench
"$PGBIN/pgbench" -i -q -s 1 -h 127.0.0.1 -p "$PGPORT" -U postgres bench >/dev/null 2>&1
make_bench_certs "$WORK"
cat > "$WORK/proxy.json" <<CONF
{"listen":"127.0.0.1:$PROXY_PORT","admin_listen":"127.0.0.1:$ADMIN_PORT","threads":$THREADS,"kernel_splice":false,
 "tls":{"cert":"server.crt","key":"server.key","client_ca":"ca.crt"},
 "routes":[{"name":"bench","database":"bench","upstream":{"host":"127.0.0.1","port":$PGPORT}}],
 "policy":[{"identity":"bench-client","databases":["bench"],"roles":["postgres"]}],"credentials":[]}
CONF
"$PROXY_BIN" --config "$WORK/proxy.json" > "$WORK/proxy.log" 2>&1 &
PROXY_PID=$!
cc -O2 -o "$WORK/forwarder" "$ROOT/bench/proxy/forwarder.c"
"$WORK/forwarder" "$FWD_PORT" "$PGPORT" > /dev/null 2>&1 &
FWD_PID=$!
for _ in $(seq 1 600); do (exec 3<>"/dev/tcp/127.0.0.1/$PROXY_PORT") 2>/dev/null && break; sleep 0.05; done
export PGSSLMODE=verify-full PGSSLROOTCERT="$WORK/ca.crt" PGSSLCERT="$WORK/client.crt" PGSSLKEY="$WORK/client.key"
bench() { "$PGBIN/pgbench" -n -S -c "$CLIENTS" -j 2 -t "$TXNS" -h 127.0.0.1 -p "${1:-$PROXY_PORT}" -U postgres bench 2>&1 |
  sed -n 's/^tps = \([0-9.]*\).*/\1/p' | head -1; }
bench > /dev/null  # warm-up
total=$((CLIENTS * TXNS))
strace -c -f -p "$PROXY_PID" -o "$WORK/strace.txt" & SPID=$!
sleep 0.5
bench > /dev/null
kill -INT "$SPID"; wait "$SPID" 2>/dev/null || true
echo "syscalls per transaction ($total transactions, $CLIENTS clients, load $(cut -d' ' -f1 /proc/loadavg)):"
awk -v t="$total" '$NF ~ /^[a-z_0-9]+$/ && $4 ~ /^[0-9]+$/ && $NF != "total" {printf "  %-16s %6.2f\n", $NF, $4 / t}' "$WORK/strace.txt" | sort -k2 -nr | head -12
awk -v t="$total" '$NF == "total" {printf "  %-16s %6.2f\n", "total", $4 / t}' "$WORK/strace.txt"
if [ -n "${PERF_OUT:-}" ]; then  # a CPU profile of the proxy during one more run
  perf record -F 2000 -g -p "$PROXY_PID" -o "$PERF_OUT" >/dev/null 2>&1 & PERF_PID=$!
  sleep 0.5; bench > /dev/null; kill -INT "$PERF_PID"; wait "$PERF_PID" 2>/dev/null || true
fi
ticks() { awk '{print $14 + $15}' "/proc/$1/stat"; }
per_txn() { python3 -c "print(f'{($2 - $1) / $(getconf CLK_TCK) * 1e6 / $total:.1f}')"; }
for r in 1 2 3; do
  c0=$(ticks "$PROXY_PID"); tps=$(bench); c1=$(ticks "$PROXY_PID")
  f0=$(ticks "$FWD_PID"); ftps=$(PGSSLMODE=disable bench "$FWD_PORT"); f1=$(ticks "$FWD_PID")
  echo "cpu: proxy mTLS $(per_txn "$c0" "$c1") us/txn (tps ${tps%.*}), forwarder.c plaintext" \
    "$(per_txn "$f0" "$f1") us/txn (tps ${ftps%.*}) (round $r, load $(cut -d' ' -f1 /proc/loadavg))"
done
