#!/usr/bin/env bash
# Benchmark of pgshift-proxy (not a test): pgbench -S and tpcb-like, 8 clients,
# direct vs pgshift-proxy vs PgBouncer (transaction mode) vs HAProxy (TCP mode)
# vs a minimal C forwarder (forwarder.c) and the same forwarder with the
# proxy's kernel splice (splice_forwarder.cc, src/proxy/splice) in one run,
# plus mTLS vs plaintext through the proxy, and mTLS against what a user would
# otherwise deploy: PgBouncer with client TLS (client_tls_sslmode=verify-full)
# and HAProxy terminating TLS with client-certificate verification, same
# certificates (pg_sslrequest.lua answers PostgreSQL's SSLRequest for it).
# A -C phase (a new connection per transaction) compares the connection rate
# of mTLS through the proxy with PgBouncer's TLS. Self-contained: starts its own PostgreSQL cluster,
# PgBouncer and HAProxy as user postgres, cleans up.
#
#   bash bench/proxy/run.sh     (ROUNDS=6 x SELECT_DURATION=3 s of -S per target,
#                                DURATION=8 s per tpcb / single-client phase, CLIENTS=8)
# -S ratios are the MEDIAN over ROUNDS of per-round tps ratios: each round runs
# every target once, back to back, so a ratio compares runs seconds apart (on
# a shared VM direct tps alone drifts by 2x within minutes). forwarder_vs_direct
# is the ceiling of any user-space proxy on this host: forwarder.c copies bytes
# with nothing else to do. p50_overhead_us is the median latency added by the
# proxy with a single client (no queueing). The proxy's CPU time per phase goes
# to stderr (us per transaction), so a busy-poll trade-off is visible.
#   PROXY_BIN=/path/pgshift-proxy BUSY_POLL_US=0 bash bench/proxy/run.sh
# splice_vs_direct: splice_forwarder.cc, the kernel splice with its sockets left in
# epoll (the kernel then wakes it for every redirected segment), for reference;
# the proxy itself parks spliced sockets (null when it cannot load: not root).
# The last line is: BENCH proxy {"proxy_vs_direct":R,...,"splice_vs_direct":R,
#   "mtls_vs_pgbouncer_tls":R,"mtls_vs_haproxy_tls":R,"mtls_vs_direct":R,
#   "mtls_proxy_cpu_us":U,"mtls_connect_rate":N,"pgbouncer_tls_connect_rate":N,
#   "mtls_connect_vs_pgbouncer_tls":R}
# mtls_proxy_cpu_us is the median over the -S rounds of the proxy's CPU per mTLS
# transaction; the *_connect_rate are median connections per second with -C over
# CONNECT_ROUNDS rounds of CONNECT_DURATION s.
# The CPU budget of the mTLS and PgBouncer-TLS -S rounds (printed per round):
# CPU us per transaction of pgbench, of the PostgreSQL server (the postmaster,
# its live processes and those it reaped) and of the proxy or PgBouncer, and
# the forwarder's in its own rounds (the floor of a user-space relay). The
# last line adds their medians (mtls_cpu_pgbench_us, mtls_cpu_server_us,
# pgbouncer_tls_cpu_pgbench_us, pgbouncer_tls_cpu_server_us,
# pgbouncer_tls_cpu_us, forwarder_cpu_us) and mtls_ceiling_vs_pgbouncer_tls:
# the mTLS/PgBouncer-TLS tps ratio if the proxy's CPU fell to the forwarder's
# with everything else the same (the CPU-bound machine then serves the same
# CPU per second over fewer us per transaction), median over rounds;
# mtls_ceiling_vs_direct the same against direct plaintext, and
# mtls_free_relay_vs_pgbouncer_tls the bound for any relay: the mTLS rounds
# as if the proxy cost no CPU at all (pgbench's TLS and the server remain).
# The direct rounds' budget is printed too (pgbench and server, no relay).
set -euo pipefail
ROOT="$(cd "$(dirname "$0")/../.." && pwd)"
. "$ROOT/bench/proxy/certs.sh"
DURATION="${DURATION:-8}"
SELECT_DURATION="${SELECT_DURATION:-3}"
CLIENTS="${CLIENTS:-8}"
SCALE="${SCALE:-8}"
ROUNDS="${ROUNDS:-6}"
CONNECT_ROUNDS="${CONNECT_ROUNDS:-3}"
CONNECT_DURATION="${CONNECT_DURATION:-3}"
PGBIN="${PGBIN:-/usr/lib/postgresql/15/bin}"
BUILD="${BUILD:-$ROOT/build}"
PROXY_BIN="${PROXY_BIN:-$BUILD/src/proxy/pgshift-proxy}"
# Event loops = cores: on the 2-core VM 2 loops gave a median 1.16x the mTLS
# tps of 1 (5 interleaved rounds, load ~18), at the same CPU per transaction.
PROXY_THREADS="${PROXY_THREADS:-$(nproc)}"
BUSY_POLL_US="${BUSY_POLL_US:-}"  # "" = the proxy's default
# The proxy's upstream pool (max_idle; 0 = off, "" = the proxy's default): an
# A/B of -C with and without it.
POOL_MAX_IDLE="${POOL_MAX_IDLE:-}"
# How PgBouncer, HAProxy and the C forwarder reach PostgreSQL: unix (its
# socket directory) or tcp. pgshift-proxy uses TCP (PROXY_UPSTREAM): its
# kernel splice works on TCP sockets only. KERNEL_SPLICE=false measures the
# proxy's user-space path alone.
UPSTREAM="${UPSTREAM:-unix}"
PROXY_UPSTREAM="${PROXY_UPSTREAM:-tcp}"
KERNEL_SPLICE="${KERNEL_SPLICE:-true}"

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
  # runuser does not pass the signal on: stop PgBouncer and HAProxy by their config paths.
  pkill -f -- "$WORK/(pgbouncer(-tls)?.ini|haproxy.cfg)" 2>/dev/null || true
  as_pg "$PGBIN/pg_ctl" -D "$WORK/pg" -m immediate stop >/dev/null 2>&1 || true
  if [ -n "${PG_CGROUP:-}" ]; then  # empty once the server's processes are gone
    for _ in $(seq 1 50); do rmdir "$PG_CGROUP" 2>/dev/null && break; sleep 0.1; done
  fi
  rm -rf "$WORK"
}
trap cleanup EXIT

if [ "$UPSTREAM" = unix ]; then
  UP_HOST="$WORK"; HAPROXY_SERVER='unix@'"$WORK"'/.s.PGSQL.$PGPORT'
else
  UP_HOST=127.0.0.1; HAPROXY_SERVER='127.0.0.1:$PGPORT'
fi

wait_port() {
  for _ in $(seq 1 1200); do  # 60 s: the proxy loads its BPF programs first (~27 s seen at load 60)
    if (exec 3<>"/dev/tcp/127.0.0.1/$1") 2>/dev/null; then return 0; fi
    sleep 0.05
  done
  echo "bench: nothing listens on port $1" >&2
  return 1
}

PGPORT=$(free_port); PROXY_PORT=$(free_port); ADMIN_PORT=$(free_port)
BOUNCER_PORT=$(free_port); HAPROXY_PORT=$(free_port); FORWARDER_PORT=$(free_port)
SPLICE_PORT=$(free_port); BOUNCER_TLS_PORT=$(free_port); HAPROXY_TLS_PORT=$(free_port)
SPLICE_BIN="${SPLICE_BIN:-$BUILD/bench/proxy/splice_forwarder}"

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
make_bench_certs "$WORK"
(
  cd "$WORK"
  cat server.crt server.key > server.pem  # HAProxy's crt: certificate and key in one file
  chmod 600 ./*.key server.pem
  chown postgres: ./*.key ./*.crt server.pem  # PgBouncer and HAProxy run as postgres
)

BUSY_POLL_KEY=""; [ -n "$BUSY_POLL_US" ] && BUSY_POLL_KEY="\"busy_poll_us\":$BUSY_POLL_US,"
POOL_KEY=""; [ -n "$POOL_MAX_IDLE" ] && POOL_KEY="\"upstream_pool\":{\"max_idle\":$POOL_MAX_IDLE},"
PROXY_UP_HOST=127.0.0.1; [ "$PROXY_UPSTREAM" = unix ] && PROXY_UP_HOST="$WORK"
cat > "$WORK/proxy.json" <<CONF
{"listen":"127.0.0.1:$PROXY_PORT","admin_listen":"127.0.0.1:$ADMIN_PORT","threads":$PROXY_THREADS,$BUSY_POLL_KEY$POOL_KEY
 "kernel_splice":$KERNEL_SPLICE,
 "tls":{"cert":"server.crt","key":"server.key","client_ca":"ca.crt"},
 "routes":[{"name":"bench","database":"bench","upstream":{"host":"$PROXY_UP_HOST","port":$PGPORT},
            "allow_plaintext":true}],
 "policy":[{"identity":"bench-client","databases":["bench"],"roles":["postgres"]}],
 "credentials":[]}
CONF
"$PROXY_BIN" --config "$WORK/proxy.json" > "$WORK/proxy.log" 2>&1 &
PROXY_PID=$!
PIDS+=($PROXY_PID)

cc -O2 -o "$WORK/forwarder" "$ROOT/bench/proxy/forwarder.c"
if [ "$UPSTREAM" = unix ]; then FWD_UP="$WORK/.s.PGSQL.$PGPORT"; else FWD_UP="$PGPORT"; fi
"$WORK/forwarder" "$FORWARDER_PORT" "$FWD_UP" > "$WORK/forwarder.log" 2>&1 &
PIDS+=($!)
FORWARDER_PID=$!
# The kernel splice works on TCP sockets only: it reaches PostgreSQL over TCP.
SPLICE_TARGET=()
if [ -x "$SPLICE_BIN" ]; then
  "$SPLICE_BIN" "$SPLICE_PORT" "$PGPORT" > "$WORK/splice.log" 2>&1 &
  PIDS+=($!)
  sleep 0.3
  if kill -0 "${PIDS[-1]}" 2>/dev/null; then SPLICE_TARGET=("splice:$SPLICE_PORT")
  else echo "bench: no kernel splice: $(cat "$WORK/splice.log")" >&2; fi
fi

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
# The same PgBouncer with client TLS: a client certificate signed by the CA is required.
sed -e "s/^listen_port = .*/listen_port = $BOUNCER_TLS_PORT/" \
    -e "s|^logfile = .*|logfile = $WORK/pgbouncer-tls.log|" "$WORK/pgbouncer.ini" > "$WORK/pgbouncer-tls.ini"
cat >> "$WORK/pgbouncer-tls.ini" <<CONF
client_tls_sslmode = verify-full
client_tls_cert_file = $WORK/server.crt
client_tls_key_file = $WORK/server.key
client_tls_ca_file = $WORK/ca.crt
CONF
chown postgres: "$WORK"/pgbouncer.ini "$WORK"/pgbouncer-tls.ini "$WORK"/userlist.txt
as_pg pgbouncer "$WORK/pgbouncer.ini" > /dev/null 2>&1 &
PIDS+=($!)
as_pg pgbouncer "$WORK/pgbouncer-tls.ini" > /dev/null 2>&1 &
PIDS+=($!)

cat > "$WORK/haproxy.cfg" <<CONF
global
  maxconn 400
  lua-load $ROOT/bench/proxy/pg_sslrequest.lua
defaults
  mode tcp
  timeout connect 5s
  timeout client 2m
  timeout server 2m
listen pg
  bind 127.0.0.1:$HAPROXY_PORT
  server pg1 $(eval echo "$HAPROXY_SERVER")
# TLS: answer the SSLRequest, then pass the handshake to the TLS frontend below.
listen pg-sslrequest
  bind 127.0.0.1:$HAPROXY_TLS_PORT
  tcp-request inspect-delay 5s
  tcp-request content lua.pg_sslrequest if { req.len ge 8 }
  server tls abns@pgshift-bench-tls-$HAPROXY_TLS_PORT
listen pg-tls
  bind abns@pgshift-bench-tls-$HAPROXY_TLS_PORT ssl crt $WORK/server.pem ca-file $WORK/ca.crt verify required
  server pg1 $(eval echo "$HAPROXY_SERVER")
CONF
chown postgres: "$WORK/haproxy.cfg"
as_pg haproxy -db -f "$WORK/haproxy.cfg" > "$WORK/haproxy.log" 2>&1 &
PIDS+=($!)

wait_port "$PROXY_PORT"; wait_port "$BOUNCER_PORT"; wait_port "$HAPROXY_PORT"; wait_port "$FORWARDER_PORT"
wait_port "$BOUNCER_TLS_PORT"; wait_port "$HAPROXY_TLS_PORT"
echo "bench: $(grep -o 'listening.*' "$WORK/proxy.log" | head -1)" >&2

proxy_cpu_ticks() { awk '{print $14 + $15}' "/proc/$PROXY_PID/stat"; }
TICKS=$(getconf CLK_TCK)
# The CPU budget's parties (see the header): PgBouncer runs under runuser,
# found by its exact command line.
BOUNCER_TLS_PID=$(pgrep -xf "pgbouncer $WORK/pgbouncer-tls.ini" | head -1)
[ -n "$BOUNCER_TLS_PID" ] || { echo "bench: cannot find PgBouncer (TLS)'s pid" >&2; exit 1; }
PG_POSTMASTER=$(head -1 "$WORK/pg/postmaster.pid")
pid_cpu_ticks() { awk '{print $14 + $15}' "/proc/$1/stat" 2>/dev/null || echo 0; }
# The server's CPU: a cpuacct cgroup of the postmaster (its backends are
# forked into it) where the machine lets us make one; else the postmaster,
# what it reaped and its live processes from /proc (backends that exit
# between two samples can go missing there: an estimate from below).
PG_CGROUP=/sys/fs/cgroup/cpuacct/pgshift-bench-$$
if mkdir "$PG_CGROUP" 2>/dev/null && echo "$PG_POSTMASTER" > "$PG_CGROUP/cgroup.procs" 2>/dev/null; then
  echo "bench: server CPU from cgroup $PG_CGROUP" >&2
else
  rmdir "$PG_CGROUP" 2>/dev/null || true; PG_CGROUP=""
  echo "bench: server CPU from /proc (no cpuacct cgroup)" >&2
fi
server_cpu_ticks() {
  if [ -n "$PG_CGROUP" ]; then
    awk -v t="$TICKS" '{print $1 / 1e9 * t}' "$PG_CGROUP/cpuacct.usage"; return
  fi
  { awk '{print $14 + $15 + $16 + $17}' "/proc/$PG_POSTMASTER/stat"
    for c in $(pgrep -P "$PG_POSTMASTER"); do pid_cpu_ticks "$c"; done
  } | awk '{s += $1} END {print s}'
}
middle_pid() {  # the relay a target's transactions pass through, if any
  case $1 in proxy*) echo "$PROXY_PID" ;; pgbouncer-tls*) echo "$BOUNCER_TLS_PID" ;;
    forwarder*) echo "$FORWARDER_PID" ;; esac
}

# run NAME PORT MODE(select|tpcb|connect) SECONDS [mtls] [clients] → prints
# "tps p50_us proxy_cpu_us_per_txn pgbench_us server_us middle_us" (the last
# three: CPU per transaction of pgbench, the server, and the target's relay);
# connect is -S with a new connection per transaction (-C), its tps the
# connection rate.
run() {
  local name=$1 port=$2 mode=$3 seconds=$4 tls=${5:-} clients=${6:-$CLIENTS}
  local dir="$WORK/log-$name-$mode-$clients"; mkdir -p "$dir"
  local threads=2; [ "$clients" -lt 2 ] && threads=1
  local args=(-n -c "$clients" -j "$threads" -T "$seconds" -h 127.0.0.1 -p "$port" -U postgres -l --log-prefix "$dir/tx")
  [ "$mode" = select ] && args+=(-S)
  [ "$mode" = connect ] && args+=(-S -C)
  local env=(PGSSLMODE=disable)
  [ -n "$tls" ] && env=(PGSSLMODE=verify-full PGSSLROOTCERT="$WORK/ca.crt" PGSSLCERT="$WORK/client.crt" PGSSLKEY="$WORK/client.key")
  local out c0 c1 s0 s1 m0 m1 mid TIMEFORMAT='%3U %3S'
  mid=$(middle_pid "$name")
  c0=$(proxy_cpu_ticks); s0=$(server_cpu_ticks); m0=$(pid_cpu_ticks "${mid:-0}")
  { time out=$(env "${env[@]}" "$PGBIN/pgbench" "${args[@]}" bench 2>&1) ; } 2> "$dir/time" || { echo "bench: pgbench $name $mode failed:" >&2; echo "$out" >&2; return 1; }
  c1=$(proxy_cpu_ticks); s1=$(server_cpu_ticks); m1=$(pid_cpu_ticks "${mid:-0}")
  local tps; tps=$(echo "$out" | sed -n 's/^tps = \([0-9.]*\).*/\1/p' | head -1)
  local p50; p50=$(cat "$dir"/tx* | awk '{print $3}' | sort -n | awk '{a[NR]=$1} END {print a[int((NR+1)/2)]}')
  local cpu; cpu=$(python3 -c "print(round(($c1 - $c0) / $TICKS * 1e6 / ($tps * $seconds), 1))")
  local budget; budget=$(python3 -c "
u, s = map(float, open('$dir/time').read().split()); n = $tps * $seconds
print(round((u + s) * 1e6 / n, 1), round(($s1 - $s0) / $TICKS * 1e6 / n, 1),
      round(($m1 - $m0) / $TICKS * 1e6 / n, 1))")
  echo "$tps $p50 $cpu $budget"
}

declare -A TPS P50 SEL CPU CONN
TARGETS=("direct:$PGPORT" "proxy:$PROXY_PORT" "pgbouncer:$BOUNCER_PORT" "haproxy:$HAPROXY_PORT")
SELECT_TARGETS=("${TARGETS[@]:0:2}" "forwarder:$FORWARDER_PORT" "${SPLICE_TARGET[@]}"
                "${TARGETS[@]:2}" "proxy-mtls:$PROXY_PORT" "pgbouncer-tls:$BOUNCER_TLS_PORT"
                "haproxy-tls:$HAPROXY_TLS_PORT")
# Client TLS with the bench certificates (verify-full) for these targets.
tls_of() { case $1 in proxy-mtls | *-tls) echo mtls ;; esac; }
# -S: ROUNDS round-robin passes over the targets; SEL[name] collects each
# round's tps, and the ratios below are medians of per-round ratios.
phase_cpu() {  # stderr: the proxy's CPU per transaction, for phases through it
  case $1 in proxy*) printf ' proxy_cpu=%5.1f us/txn' "$2" >&2 ;; esac
  echo >&2
}
declare -A BPG BSRV BMID
budget() {  # NAME PGBENCH SERVER MIDDLE: stderr and BPG/BSRV/BMID, for the budget's targets
  case $1 in proxy-mtls | pgbouncer-tls | forwarder | direct) ;; *) return 0 ;; esac
  printf 'bench:   cpu us/txn %-13s pgbench=%5.1f server=%5.1f relay=%5.1f sum=%5.1f\n' "$1" "$2" \
    "$3" "$4" "$(python3 -c "print($2 + $3 + $4)")" >&2
  BPG[$1]="${BPG[$1]:-} $2"; BSRV[$1]="${BSRV[$1]:-} $3"; BMID[$1]="${BMID[$1]:-} $4"
}
# A discarded warm-up, so the first round's direct run does not meet cold caches.
run warmup "$PGPORT" select 2 > /dev/null
for round in $(seq 1 "$ROUNDS"); do
  for spec in "${SELECT_TARGETS[@]}"; do
    name=${spec%%:*}; port=${spec##*:}
    read -r t p c bp bs bm < <(run "$name-r$round" "$port" select "$SELECT_DURATION" "$(tls_of "$name")")
    printf 'bench: %-13s %-7s tps=%10.1f p50=%6d us (round %d, load %s)' "$name" select "$t" "$p" \
      "$round" "$(cut -d' ' -f1 /proc/loadavg)" >&2
    phase_cpu "$name" "$c"
    budget "$name" "$bp" "$bs" "$bm"
    SEL[$name]="${SEL[$name]:-} $t"
    CPU[$name]="${CPU[$name]:-} $c"
  done
done
# -C: the connection rate of mTLS through the proxy vs PgBouncer's TLS (and
# direct plaintext for reference), interleaved rounds like -S.
for round in $(seq 1 "$CONNECT_ROUNDS"); do
  for spec in "direct:$PGPORT" "proxy-mtls:$PROXY_PORT" "pgbouncer-tls:$BOUNCER_TLS_PORT"; do
    name=${spec%%:*}; port=${spec##*:}
    read -r t p c _ < <(run "$name-c$round" "$port" connect "$CONNECT_DURATION" "$(tls_of "$name")")
    printf 'bench: %-13s %-7s conn/s=%7.1f p50=%6d us (round %d, load %s)' "$name" connect "$t" \
      "$p" "$round" "$(cut -d' ' -f1 /proc/loadavg)" >&2
    phase_cpu "$name" "$c"
    CONN[$name]="${CONN[$name]:-} $t"
  done
done
for spec in "${TARGETS[@]}"; do
  name=${spec%%:*}; port=${spec##*:}
  read -r t p c _ < <(run "$name" "$port" tpcb "$DURATION")
  TPS[$name-tpcb]=$t; P50[$name-tpcb]=$p
  printf 'bench: %-10s %-6s tps=%10.1f p50=%6d us' "$name" tpcb "$t" "$p" >&2
  phase_cpu "$name" "$c"
done
# Per-hop latency without queueing: one client, -S, direct vs proxy.
for spec in "direct:$PGPORT" "proxy:$PROXY_PORT"; do
  name=${spec%%:*}; port=${spec##*:}
  read -r t p c _ < <(run "$name" "$port" select "$DURATION" "" 1)
  P50[$name-single]=$p
  printf 'bench: %-10s %-6s tps=%10.1f p50=%6d us (1 client)' "$name" select "$t" "$p" >&2
  phase_cpu "$name" "$c"
done

# What the upstream pool did (the -C phase's logins mostly).
curl -s "http://127.0.0.1:$ADMIN_PORT/stats" | python3 -c '
import json, sys
s = json.load(sys.stdin)
print("bench: proxy upstream pool: " + " ".join(f"{k[5:]}={v}" for k, v in s.items() if k.startswith("pool_")))' >&2 || true
# How often the proxy's sessions went to kernel mode (0: user space only).
SPLICES=$(curl -s "http://127.0.0.1:$ADMIN_PORT/routes/bench/stats" |
  python3 -c 'import json,sys; print(json.load(sys.stdin).get("splices", 0))' 2>/dev/null || echo 0)
echo "bench: proxy sessions entered kernel mode $SPLICES times (kernel_splice=$KERNEL_SPLICE)" >&2

python3 - "${SEL[direct]}" "${SEL[proxy]}" "${SEL[pgbouncer]}" "${SEL[haproxy]}" \
  "${SEL[proxy-mtls]}" "${SEL[forwarder]}" "${P50[direct-single]}" "${P50[proxy-single]}" \
  "${TPS[direct-tpcb]}" "${TPS[proxy-tpcb]}" "${TPS[pgbouncer-tpcb]}" "${TPS[haproxy-tpcb]}" \
  "${SEL[splice]:-}" "${SEL[pgbouncer-tls]}" "${SEL[haproxy-tls]}" "${CPU[proxy-mtls]}" \
  "${CONN[proxy-mtls]}" "${CONN[pgbouncer-tls]}" "${CONN[direct]}" \
  "${BPG[proxy-mtls]}" "${BSRV[proxy-mtls]}" "${BMID[proxy-mtls]}" \
  "${BPG[pgbouncer-tls]}" "${BSRV[pgbouncer-tls]}" "${BMID[pgbouncer-tls]}" "${BMID[forwarder]}" <<'PY'
import json, statistics, sys
d, p, b, h, m, f = ([float(x) for x in a.split()] for a in sys.argv[1:7])
p50d, p50p, dt, pt, bt, ht = map(float, sys.argv[7:13])
sp = [float(x) for x in sys.argv[13].split()]
bs, hs, mcpu, mc, bc, dc = ([float(x) for x in a.split()] for a in sys.argv[14:20])
mpg, msrv, mmid, bpg, bsrv, bmid, fmid = ([float(x) for x in a.split()] for a in sys.argv[20:27])
def med(num, den):  # median over rounds of the per-round ratio
    return round(statistics.median(x / y for x, y in zip(num, den)), 3)
def show(name, num, den):
    rs = " ".join(f"{x / y:.3f}" for x, y in zip(num, den))
    print(f"bench: -S {name}: median {med(num, den)} of rounds [{rs}]", file=sys.stderr)
show("proxy/direct", p, d)
show("forwarder/direct", f, d)
show("proxy/forwarder", p, f)
show("mtls/pgbouncer-tls", m, bs)
show("mtls/haproxy-tls", m, hs)
show("mtls/direct", m, d)
show("-C mtls/pgbouncer-tls", mc, bc)
print(f"bench: -C conn/s median: mtls={statistics.median(mc):.1f} "
      f"pgbouncer-tls={statistics.median(bc):.1f} direct={statistics.median(dc):.1f}", file=sys.stderr)
if sp:
    show("splice/direct", sp, d)
# The ceiling: each mTLS round's tps if the proxy cost the forwarder's CPU of
# the same round, against that round's PgBouncer TLS.
ceil = [mt * (g + s + x) / (g + s + fl) for mt, g, s, x, fl in zip(m, mpg, msrv, mmid, fmid)]
show("ceiling mtls (relay at the forwarder's CPU)/pgbouncer-tls", ceil, bs)
show("ceiling mtls (relay at the forwarder's CPU)/direct", ceil, d)
# The bound for any relay at all: mTLS rounds as if the proxy cost no CPU.
free = [mt * (g + s + x) / (g + s) for mt, g, s, x in zip(m, mpg, msrv, mmid)]
show("bound mtls (relay at 0 CPU)/pgbouncer-tls", free, bs)
print(f"bench: tpcb ratios: proxy/direct={pt/dt:.3f} proxy/pgbouncer={pt/bt:.3f} proxy/haproxy={pt/ht:.3f}",
      file=sys.stderr)
print("BENCH proxy " + json.dumps({
    "proxy_vs_direct": med(p, d),
    "proxy_vs_pgbouncer": med(p, b),
    "proxy_vs_haproxy": med(p, h),
    "p50_overhead_us": round(p50p - p50d, 1),
    "mtls_vs_plain": med(m, p),
    "forwarder_vs_direct": med(f, d),
    "proxy_vs_forwarder": med(p, f),
    "splice_vs_direct": med(sp, d) if sp else None,
    "mtls_vs_pgbouncer_tls": med(m, bs),
    "mtls_vs_haproxy_tls": med(m, hs),
    "mtls_vs_direct": med(m, d),
    "mtls_proxy_cpu_us": round(statistics.median(mcpu), 1),
    "mtls_connect_rate": round(statistics.median(mc), 1),
    "pgbouncer_tls_connect_rate": round(statistics.median(bc), 1),
    "mtls_connect_vs_pgbouncer_tls": med(mc, bc),
    "mtls_cpu_pgbench_us": round(statistics.median(mpg), 1),
    "mtls_cpu_server_us": round(statistics.median(msrv), 1),
    "pgbouncer_tls_cpu_pgbench_us": round(statistics.median(bpg), 1),
    "pgbouncer_tls_cpu_server_us": round(statistics.median(bsrv), 1),
    "pgbouncer_tls_cpu_us": round(statistics.median(bmid), 1),
    "forwarder_cpu_us": round(statistics.median(fmid), 1),
    "mtls_ceiling_vs_pgbouncer_tls": med(ceil, bs),
    "mtls_ceiling_vs_direct": med(ceil, d),
    "mtls_free_relay_vs_pgbouncer_tls": med(free, bs),
}, separators=(",", ":")))
PY
