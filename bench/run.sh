#!/bin/bash
# bench/run.sh - Couplet's benchmark suite (run by `make bench`; `make bench-large` adds --large).
# Everything runs on loopback against a fresh build/couplet per measurement, on free ports, with a temporary
# data directory; every process we start is stopped on exit. It prints Markdown tables for BENCHMARKS.md.
#
#   bench/run.sh            the standard suite (2-3 minutes on 2 cores)
#   bench/run.sh --large    100,000 idle sessions only (needs a file limit above 100,000)
#   bench/run.sh --presence roster = shared: cost per presence change and login storm, 10 .. 2,000 accounts
#                           (about 2.5 minutes)
# BUILD=DIR takes the binaries from DIR (default build), where `make BUILD=DIR` puts them.
set -u

ROOT=$(cd "$(dirname "$0")/.." && pwd)
case ${BUILD:-build} in /*) BIN=${BUILD} ;; *) BIN=$ROOT/${BUILD:-build} ;; esac
SERVER=$BIN/couplet
LOAD=$BIN/couplet-load
LARGE=0
[ "${1:-}" = "--large" ] && LARGE=1
PRESENCE=0
[ "${1:-}" = "--presence" ] && PRESENCE=1

for b in "$SERVER" "$LOAD"; do
    [ -x "$b" ] || { echo "bench: $b is missing; run make bench" >&2; exit 2; }
done

# the file limit: raise the soft limit to the hard one (both processes inherit it)
ulimit -n "$(ulimit -Hn)" 2>/dev/null
NOFILE=$(ulimit -n)

TMP=$(mktemp -d /tmp/couplet-bench.XXXXXX)
SERVER_PID=
cleanup() {
    if [ -n "$SERVER_PID" ] && kill -0 "$SERVER_PID" 2>/dev/null; then
        kill -TERM "$SERVER_PID" 2>/dev/null
        for _ in $(seq 50); do kill -0 "$SERVER_PID" 2>/dev/null || break; sleep 0.1; done
        kill -KILL "$SERVER_PID" 2>/dev/null
    fi
    rm -rf "$TMP"
}
trap cleanup EXIT
trap 'exit 130' INT TERM

log() { echo "bench: $*" >&2; }

NACC=10000
[ $LARGE = 1 ] && NACC=100000
[ $PRESENCE = 1 ] && NACC=2000
# SCRAM iterations of the imported accounts: logins run no PBKDF2 on either side (stored keys on the server,
# the generator's key cache), so the presence runs use fewer, to import faster
SCRAM_ITERATIONS=4096
[ $PRESENCE = 1 ] && SCRAM_ITERATIONS=256
if [ "$NOFILE" -lt $((NACC + 1000)) ]; then
    if [ $LARGE = 1 ]; then
        log "cannot run $NACC idle sessions: the hard file limit is $NOFILE (each side needs one descriptor per session)"
        log "raise it (e.g. LimitNOFILE / ulimit -Hn as root with CAP_SYS_RESOURCE) and run again"
        exit 2
    fi
    NACC=$((NOFILE - 1000))
    log "the file limit is $NOFILE: idle test reduced to $NACC sessions"
fi

# one server configuration for every run; only the port (and defer_accept, require_encryption) change
REQUIRE_ENCRYPTION=false
write_conf() {   # write_conf PORT [extra lines...]
    local port=$1; shift
    {
        echo "data_dir = $TMP/data"
        echo "domain = localhost"
        echo "muc_domain = conference.localhost"
        echo "bind = 127.0.0.1"
        echo "c2s_port = $port"
        echo "c2s_tls_port = 0"
        echo "require_encryption = $REQUIRE_ENCRYPTION"
        echo "scram_iterations = $SCRAM_ITERATIONS"
        echo "max_connections = 200000"
        # rate limits off, as for the reference servers: the load comes from a few loopback addresses
        echo "max_connections_per_ip = 0"
        echo "max_read_rate = 0"
        echo "auth_failures_per_ip = 0"
        echo "max_sessions_per_account = 10"
        echo "muc_max_occupants = 1000"
        echo "muc_max_rooms = 10000"
        echo "handshake_timeout = 120"
        echo "log_level = warn"
        for l in "$@"; do echo "$l"; done
    } > "$TMP/couplet.conf"
}

start_server() {   # start_server [extra conf lines...]; sets PORT and SERVER_PID
    PORT=$("$LOAD" --free-port) || { log "no free port"; exit 2; }
    write_conf "$PORT" "$@"
    "$SERVER" -c "$TMP/couplet.conf" >> "$TMP/server.log" 2>&1 &
    SERVER_PID=$!
    for _ in $(seq 100); do
        if ! kill -0 "$SERVER_PID" 2>/dev/null; then log "the server died at start:"; tail -5 "$TMP/server.log" >&2; exit 2; fi
        grep -q ":$(printf '%04X' "$PORT") 00000000:0000 0A" /proc/net/tcp 2>/dev/null && return 0
        sleep 0.05
    done
    log "the server does not listen on $PORT"
    exit 2
}

stop_server() {
    [ -n "$SERVER_PID" ] || return 0
    kill -TERM "$SERVER_PID" 2>/dev/null
    for _ in $(seq 100); do kill -0 "$SERVER_PID" 2>/dev/null || break; sleep 0.05; done
    kill -KILL "$SERVER_PID" 2>/dev/null
    wait "$SERVER_PID" 2>/dev/null
    SERVER_PID=
}

# run NAME ARGS...: a fresh server, one couplet-load run; keeps its RESULT line in $TMP/NAME and the command
# (with the port shown as $PORT) in $TMP/NAME.cmd
EXTRA_CONF=()
run() {
    local name=$1; shift
    start_server "${EXTRA_CONF[@]}"
    log "$name: couplet-load $*"
    timeout 300 "$LOAD" --port "$PORT" --server-pid "$SERVER_PID" --quiet --key-cache "$TMP/keys" "$@" \
        > "$TMP/$name.out" 2> "$TMP/$name.err"
    local rc=$?
    grep '^RESULT ' "$TMP/$name.out" > "$TMP/$name" || echo "RESULT failed=1 first_error=no_result_rc_$rc" > "$TMP/$name"
    sed -n '2,$p' "$TMP/$name.out" >&2
    [ $rc = 0 ] || log "$name: couplet-load exited $rc"
    echo "build/couplet-load --port PORT --server-pid PID $*" > "$TMP/$name.cmd"
    stop_server
}

# CPU busy on the whole machine over one second, in % of one CPU: other load makes the figures noisy
background_load() {
    local a b
    a=($(head -1 /proc/stat)); sleep 1; b=($(head -1 /proc/stat))
    local busy=$(( (b[1]+b[2]+b[3]+b[6]+b[7]+b[8]) - (a[1]+a[2]+a[3]+a[6]+a[7]+a[8]) ))
    local idle=$(( (b[4]+b[5]) - (a[4]+a[5]) ))
    echo $(( busy * 100 * $(nproc) / (busy + idle + 1) ))
}

val() { sed -n "s/.* $2=\([^ ]*\).*/\1/p" "$TMP/$1" | head -1; }   # val NAME KEY
cmd() { cat "$TMP/$1.cmd"; }
median_of() {   # median_of NAME KEY: the run NAME_1..3 whose KEY is the median; copied to NAME
    local m
    m=$(for k in 1 2 3; do echo "$(val "$1_$k" "$2") $k"; done | sort -n | sed -n 2p | cut -d' ' -f2)
    cp "$TMP/$1_$m" "$TMP/$1"
    cp "$TMP/$1_$m.cmd" "$TMP/$1.cmd"
}

# --presence: roster = shared. At N accounts (one session each) the generator logs in N sessions, each sends
# its initial presence (the login storm: every session must receive the N-1 others'), then changes presence
# (<show>away</show> alternated with available), measured two ways, three runs each:
#   isolated: 10 senders in turn at a fixed rate low enough that one change's fan-out is done before the
#             next (each delivery is then a send() of its own, as when one user goes away);
#   flat out: 10 senders with 4 changes each in flight (a change is done when all N-1 contacts have it).
# roster = empty at 100 (the change is only reflected to the sender), and at 1,000 and 2,000 for the login
# storm and memory without the fan-out.
med3() {   # med3 NAME KEY: "median (a/b/c)" of KEY over NAME_1..3
    local a b c m
    a=$(val "$1_1" "$2"); b=$(val "$1_2" "$2"); c=$(val "$1_3" "$2")
    m=$(printf '%s\n%s\n%s\n' "$a" "$b" "$c" | sort -g | sed -n 2p)
    echo "$m ($a/$b/$c)"
}
bench_presence() {
    local n k name rate mode kpct fails
    # fill the generator's key cache, so that no run derives keys during its login storm
    run presence_warm --workload login --sessions "$NACC" --mech SCRAM-SHA-1 --concurrency 500
    for n in 10 100 1000 2000; do
        [ "$n" -le "$NACC" ] || continue
        case $n in 10) rate=1000;; 100) rate=200;; 1000) rate=40;; *) rate=20;; esac
        EXTRA_CONF=("roster = shared")
        for k in 1 2 3; do
            run "pres_iso_shared_${n}_$k" --workload presence --sessions "$n" --mech SCRAM-SHA-1 --senders 10 \
                --msg-rate "$rate" --duration 3 --settle 0.5
            run "pres_sat_shared_${n}_$k" --workload presence --sessions "$n" --mech SCRAM-SHA-1 --senders 10 \
                --window 4 --duration 3 --settle 0.5
        done
        median_of "pres_iso_shared_$n" server_us_per_change
        median_of "pres_sat_shared_$n" server_us_per_change
    done
    EXTRA_CONF=("roster = empty")
    for k in 1 2 3; do
        run "pres_iso_empty_100_$k" --workload presence --roster empty --sessions 100 --mech SCRAM-SHA-1 \
            --senders 10 --msg-rate 200 --duration 3 --settle 0.5
        run "pres_sat_empty_100_$k" --workload presence --roster empty --sessions 100 --mech SCRAM-SHA-1 \
            --senders 10 --window 4 --duration 3 --settle 0.5
    done
    median_of pres_iso_empty_100 server_us_per_change
    median_of pres_sat_empty_100 server_us_per_change
    for n in 1000 2000; do
        [ "$n" -le "$NACC" ] || continue
        run "pres_sat_empty_$n" --workload presence --roster empty --sessions "$n" --mech SCRAM-SHA-1 \
            --senders 10 --window 4 --duration 3 --settle 0.5
    done
    EXTRA_CONF=()
    local t1 bg1
    t1=$(date +%s)
    bg1=$(background_load)
    log "background load after the runs: ${bg1}% of one CPU"

    cat <<EOF

## Shared roster: presence runs ($(date -u +%Y-%m-%d), $((t1 - T0)) s)

Machine: $(nproc) CPUs ($(grep -m1 'model name' /proc/cpuinfo | cut -d: -f2- | sed 's/^ *//')), Linux $(uname -r).
Background load (other processes) over 1 s: ${BG0}% of one CPU before, ${bg1}% after. Server µs per change
and the storm figures: median of 3 runs (all three in brackets); the row's other figures are from the run
with the median µs per change. PORT and PID stand for the free port and the server's pid.

### Cost per presence change

| accounts | roster | mode | changes/s | delivered stanzas/s | until all contacts have it, p50 / p99 | server CPU | server µs per change | server µs per delivered stanza | of it in the kernel | command |
| ---: | --- | --- | ---: | ---: | ---: | ---: | ---: | ---: | ---: | --- |
EOF
    for name in pres_iso_shared_10 pres_sat_shared_10 pres_iso_shared_100 pres_sat_shared_100 pres_iso_empty_100 \
                pres_sat_empty_100 pres_iso_shared_1000 pres_sat_shared_1000 pres_iso_shared_2000 pres_sat_shared_2000; do
        [ -f "$TMP/$name" ] || continue
        case $name in
            pres_iso_*) mode="isolated, $(val "$name" offered_changes_per_s)/s offered";;
            *) mode="flat out, $(val "$name" window) in flight per sender";;
        esac
        kpct=$(awk -v s="$(val "$name" server_sys_s)" -v c="$(val "$name" server_cpu_s)" \
            'BEGIN { if (c > 0) printf "%.0f%%", 100 * s / c; else print "-" }')
        echo "| $(val "$name" sessions) | $(val "$name" roster) | $mode | $(val "$name" changes_per_s) | $(val "$name" delivered_per_s) | $(val "$name" fanout_p50_us) / $(val "$name" fanout_p99_us) µs | $(val "$name" server_cpu_pct)% | $(med3 "$name" server_us_per_change) | $(val "$name" server_us_per_delivery) | $kpct | \`$(cmd "$name")\` (config \`roster = $(val "$name" roster)\`) |"
    done
    cat <<EOF

### Login storm (first connect .. every session has every other session's initial presence) and memory

| accounts | roster | presence stanzas received | storm time | server CPU in the storm | server RSS per session after it | command |
| ---: | --- | ---: | ---: | ---: | ---: | --- |
EOF
    for name in pres_sat_shared_10 pres_sat_shared_100 pres_sat_empty_100 pres_sat_shared_1000 pres_sat_empty_1000 \
                pres_sat_shared_2000 pres_sat_empty_2000; do
        [ -f "$TMP/$name" ] || continue
        if [ -f "$TMP/${name}_1" ]; then
            echo "| $(val "$name" sessions) | $(val "$name" roster) | $(val "$name" storm_presence_in) | $(med3 "$name" storm_s) s | $(med3 "$name" storm_server_cpu_s) s | $(med3 "$name" rss_per_session_b) B | \`$(cmd "$name")\` (config \`roster = $(val "$name" roster)\`) |"
        else
            echo "| $(val "$name" sessions) | $(val "$name" roster) | $(val "$name" storm_presence_in) | $(val "$name" storm_s) s | $(val "$name" storm_server_cpu_s) s | $(val "$name" rss_per_session_b) B | \`$(cmd "$name")\` (config \`roster = $(val "$name" roster)\`) |"
        fi
    done
    echo
    echo "Raw summary lines:"
    echo
    echo '```'
    for name in presence_warm $(cd "$TMP" && ls pres_* 2>/dev/null | grep -v '\.' | sort -V); do
        [ -f "$TMP/${name}_1" ] && continue         # the median's copy: its run is listed
        echo "$name: $(cut -c8- "$TMP/$name")"
    done
    echo '```'
    fails=$(cat "$TMP"/pres_* 2>/dev/null | grep -h '^RESULT' | grep -c 'first_error=[^-]' || true)
    [ "$fails" = 0 ] || log "$fails run(s) reported an error (first_error=...) - see the raw lines"
}

log "machine: $(nproc) CPUs, $(grep -m1 'model name' /proc/cpuinfo | cut -d: -f2- | sed 's/^ *//'), kernel $(uname -r), file limit $NOFILE"
T0=$(date +%s)
BG0=$(background_load)
log "background load before the suite: ${BG0}% of one CPU"
[ "$BG0" -lt 10 ] || log "WARNING: other processes are using the CPU; the figures will be noisy"

# accounts: user0..userN-1, password "password", SCRAM keys with 4096 iterations (256 for --presence), one import
log "importing $NACC accounts (the server derives SCRAM-SHA-1 and -256 keys for each)"
write_conf 1
awk -v n="$NACC" 'BEGIN { for (i = 0; i < n; i++) print "user" i "@localhost password" }' \
    | "$SERVER" -c "$TMP/couplet.conf" import 2>&1 | tail -1 >&2

if [ $PRESENCE = 1 ]; then
    bench_presence
    exit 0
fi

if [ $LARGE = 1 ]; then
    run large_idle --workload idle --sessions "$NACC" --mech SCRAM-SHA-1 --rate 5000 --duration 10
    echo
    echo "| sessions | logged in | server RSS before | after | per idle session | command |"
    echo "| ---: | ---: | ---: | ---: | ---: | --- |"
    echo "| $NACC | $(val large_idle logged_in) | $(val large_idle rss_before_kb) kB | $(val large_idle rss_after_kb) kB | $(val large_idle rss_per_session_b) B | \`$(cmd large_idle)\` |"
    exit 0
fi

# 1. SCRAM logins: the first run derives each account's salted password once (the client's cache), later
#    runs reuse it from the key cache; the measured login runs are all on a warm cache
#    (three measured runs, the median is the figure held against the target, as for 1:1 chat below)
run scram_warm --workload login --sessions "$NACC" --mech SCRAM-SHA-1 --concurrency 500
for k in 1 2 3; do
    run login_scram_$k --workload login --sessions "$NACC" --mech SCRAM-SHA-1 --concurrency 500
done
median_of login_scram logins_per_s
run login_plain --workload login --sessions 2000 --mech PLAIN --concurrency 200
run login_scram_paced --workload login --sessions 4000 --mech SCRAM-SHA-1 --rate 2000

# 2. idle sessions: memory per session, and its breakdown by negotiation stage
run idle --workload idle --sessions "$NACC" --mech SCRAM-SHA-1 --duration 10
for stage in header auth bind; do
    run "idle_$stage" --workload idle --sessions "$NACC" --mech SCRAM-SHA-1 --duration 1 --stop-at "$stage"
done

# 2b. idle TLS sessions: STARTTLS on the same port, require_encryption = true (SASL only after TLS), 2,000
#     sessions (the server's generated ECDSA P-256 certificate; TLS 1.3 unless the client asks otherwise)
REQUIRE_ENCRYPTION=true
run idle_tls --workload idle --sessions 2000 --mech SCRAM-SHA-1 --tls --duration 5
REQUIRE_ENCRYPTION=false

# 3. 1:1 chat: flat out (server CPU per routed message); the same with a client that makes one send() per
#    stanza; flat out at 100 .. NACC sessions (does the cost stay flat?); then at half the saturation rate
#    and at a fixed 2,000 msg/s (latency)
# CPU time per message on a shared VM moves by 10-30 % between runs: the saturation run is made three
# times and the median is the figure held against the target
for k in 1 2 3; do
    run chat_sat_$k --workload chat --sessions 200 --mech SCRAM-SHA-1 --window 8 --duration 8
done
median_of chat_sat server_us_per_delivery
run chat_sat_nocoalesce --workload chat --sessions 200 --mech SCRAM-SHA-1 --window 8 --duration 8 --no-coalesce
run chat_sat_100 --workload chat --sessions 100 --mech SCRAM-SHA-1 --window 8 --duration 6
run chat_sat_1000 --workload chat --sessions 1000 --mech SCRAM-SHA-1 --window 8 --duration 6
run chat_sat_big --workload chat --sessions "$NACC" --mech SCRAM-SHA-1 --window 8 --duration 6
# at a fixed rate each message goes out on its own (one send() each), so "half of saturation" is half the
# saturation of that same client: the --no-coalesce run
HALF=$(( $(val chat_sat_nocoalesce delivered_per_s | cut -d. -f1) / 2 ))
[ "${HALF:-0}" -gt 0 ] || HALF=50000
run chat_half --workload chat --sessions 200 --mech SCRAM-SHA-1 --msg-rate "$HALF" --duration 8
run chat_2000 --workload chat --sessions 1000 --mech SCRAM-SHA-1 --msg-rate 2000 --duration 10

# 4. rooms: server CPU per delivered groupchat stanza by room size
run muc_10 --workload muc --occupants 200 --rooms 20 --senders 20 --window 4 --duration 6 --mech SCRAM-SHA-1
run muc_100 --workload muc --occupants 100 --rooms 1 --senders 10 --window 4 --duration 6 --mech SCRAM-SHA-1
run muc_1000 --workload muc --occupants 1000 --rooms 1 --senders 10 --window 2 --duration 6 --mech SCRAM-SHA-1

# 5. TCP_DEFER_ACCEPT: 2,000 connections that never speak, with the default defer_accept = 10 and with it off
run silent_defer --workload silent --sessions 2000 --rate 1000 --duration 4
EXTRA_CONF=("defer_accept = 0")
run silent_nodefer --workload silent --sessions 2000 --rate 1000 --duration 4
EXTRA_CONF=()

# 6. TLS handshakes: server CPU per full TLS 1.3 handshake (openssl s_time -new: connect, handshake, close)
#    on Couplet's direct TLS port, and on OpenSSL's own s_server with the same certificate and cipher suite
cpu_ticks() { awk '{ print $14 + $15 }' "/proc/$1/stat" 2>/dev/null || echo 0; }
tls_measure() {   # tls_measure NAME PID PORT
    local t0 t1 out n
    t0=$(cpu_ticks "$2")
    out=$(timeout 30 openssl s_time -connect "127.0.0.1:$3" -new -time 5 2>&1)
    t1=$(cpu_ticks "$2")
    n=$(echo "$out" | sed -n 's/^\([0-9]*\) connections in [0-9.]*s.*/\1/p' | head -1)
    awk -v n="${n:-0}" -v t=$((t1 - t0)) -v hz="$(getconf CLK_TCK)" 'BEGIN {
        printf "RESULT handshakes=%d server_cpu_s=%.2f server_us_per_handshake=%.0f first_error=-\n", n, t / hz,
               (n > 0 ? t / hz * 1e6 / n : 0) }' > "$TMP/$1"
}
TPORT=$("$LOAD" --free-port)
start_server "c2s_tls_port = $TPORT"
tls_measure tls_couplet "$SERVER_PID" "$TPORT"
stop_server
SPORT=$("$LOAD" --free-port)
openssl s_server -quiet -cert "$TMP/data/cert.pem" -key "$TMP/data/key.pem" -accept "$SPORT" -no_ticket \
    -ciphersuites TLS_CHACHA20_POLY1305_SHA256 < /dev/null > /dev/null 2>&1 &
SERVER_PID=$!
sleep 0.5
tls_measure tls_openssl "$SERVER_PID" "$SPORT"
stop_server

T1=$(date +%s)
BG1=$(background_load)
log "background load after the suite: ${BG1}% of one CPU"

# ---- the report ----
cat <<EOF

## Results ($(date -u +%Y-%m-%d), suite time $((T1 - T0)) s)

Machine: $(nproc) CPUs ($(grep -m1 'model name' /proc/cpuinfo | cut -d: -f2- | sed 's/^ *//')), Linux $(uname -r).
Server and generator share the machine; PORT and PID stand for the free port and the server's pid.
Background load (other processes) measured over 1 s: ${BG0}% of one CPU before the suite, ${BG1}% after.

### Memory per idle session (plaintext, SCRAM-SHA-1, $NACC sessions)

| sessions held at | sessions | server RSS before | after | per session | command |
| --- | ---: | ---: | ---: | ---: | --- |
EOF
for n in idle_header idle_auth idle_bind idle; do
    case $n in
        idle_header) what="stream features sent (no auth)";;
        idle_auth) what="authenticated, stream restarted";;
        idle_bind) what="resource bound, no presence";;
        idle) what="bound + initial presence (full)";;
    esac
    echo "| $what | $(val $n logged_in) | $(val $n rss_before_kb) kB | $(val $n rss_after_kb) kB | $(val $n rss_per_session_b) B | \`$(cmd $n)\` |"
done
cat <<EOF

Idle phase of the full run: server CPU $(val idle server_cpu_s) s over 10 s with $(val idle alive) sessions open.

### Memory per idle TLS session (STARTTLS, \`require_encryption = true\`, SCRAM-SHA-1)

| sessions | logged in | server RSS before | after | per idle TLS session | target | login rate (TLS handshake + SCRAM) | command |
| ---: | ---: | ---: | ---: | ---: | ---: | ---: | --- |
| 2000 | $(val idle_tls logged_in) | $(val idle_tls rss_before_kb) kB | $(val idle_tls rss_after_kb) kB | $(val idle_tls rss_per_session_b) B | 16384 B | $(val idle_tls logins_per_s)/s | \`$(cmd idle_tls)\` (config \`require_encryption = true\`) |

### Logins

| mechanism (rate) | sessions | logins/s | p50 | p99 | server CPU per login | generator CPU per login | command |
| --- | ---: | ---: | ---: | ---: | ---: | ---: | --- |
EOF
for n in login_scram login_plain login_scram_paced; do
    r=flat; [ $n = login_scram_paced ] && r="2,000/s offered"
    [ $n = login_scram ] && r="flat; median of 3 runs: $(for k in 1 2 3; do val login_scram_$k logins_per_s; done | paste -sd/)/s"
    echo "| $(val $n mech) ($r)  | $(val $n logged_in) | $(val $n logins_per_s) | $(val $n login_p50_ms) ms | $(val $n login_p99_ms) ms | $(val $n server_us_per_login) µs | $(val $n gen_us_per_login) µs | \`$(cmd $n)\` |"
done
cat <<EOF

### 1:1 chat

| run | delivered/s | lost | p50 | p90 | p99 | max | server CPU | of it in the kernel | server µs per message | generator µs per message | command |
| --- | ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: | --- |
EOF
for n in chat_sat chat_sat_nocoalesce chat_sat_100 chat_sat_1000 chat_sat_big chat_half chat_2000; do
    case $n in
        chat_sat) what="saturation, 100 pairs, 8 in flight each way";;
        chat_sat_nocoalesce) what="the same, client sends each stanza with its own send()";;
        chat_sat_100) what="saturation, 50 pairs";;
        chat_sat_1000) what="saturation, 500 pairs";;
        chat_sat_big) what="saturation, $((NACC / 2)) pairs";;
        chat_half) what="half of saturation: $HALF msg/s offered, 100 pairs";;
        chat_2000) what="2,000 msg/s offered, 500 pairs";;
    esac
    [ $n = chat_sat ] && what="saturation, 100 pairs, 8 in flight each way (median of 3 runs: $(for k in 1 2 3; do val chat_sat_$k server_us_per_delivery; done | paste -sd/) µs)"
    kpct=$(awk -v s="$(val $n server_sys_s)" -v c="$(val $n server_cpu_s)" 'BEGIN { if (c > 0) printf "%.0f%%", 100 * s / c; else print "-" }')
    echo "| $what | $(val $n delivered_per_s) | $(val $n lost) | $(val $n lat_p50_us) µs | $(val $n lat_p90_us) µs | $(val $n lat_p99_us) µs | $(val $n lat_max_us) µs | $(val $n server_cpu_pct)% | $kpct | $(val $n server_us_per_delivery) | $(val $n gen_us_per_delivery) | \`$(cmd $n)\` |"
done
cat <<EOF

### Rooms (groupchat fan-out, flat out)

| room size | rooms | senders | messages sent/s | deliveries/s | lost | p50 | p99 | server CPU | server µs per delivered stanza | command |
| ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: | --- |
EOF
for n in muc_10 muc_100 muc_1000; do
    size=${n#muc_}
    echo "| $size | $(val $n rooms) | $(val $n senders) | $(val $n sent_per_s) | $(val $n delivered_per_s) | $(val $n lost) | $(val $n lat_p50_us) µs | $(val $n lat_p99_us) µs | $(val $n server_cpu_pct)% | $(val $n server_us_per_delivery) | \`$(cmd $n)\` |"
done
cat <<EOF

### TCP_DEFER_ACCEPT: 2,000 connections that send nothing

| defer_accept | connected | server CPU during the test | server RSS change | command |
| --- | ---: | ---: | ---: | --- |
| 10 (default) | $(val silent_defer connected) | $(val silent_defer server_cpu_total_s) s | $(val silent_defer server_rss_delta_total_kb) kB | \`$(cmd silent_defer)\` |
| 0 (off) | $(val silent_nodefer connected) | $(val silent_nodefer server_cpu_total_s) s | $(val silent_nodefer server_rss_delta_total_kb) kB | \`$(cmd silent_nodefer)\` (config \`defer_accept = 0\`) |
EOF

cat <<EOF

### TLS handshakes (full TLS 1.3 handshake, ECDSA P-256 certificate generated by Couplet, ChaCha20-Poly1305)

| server | handshakes in 5 s | server CPU | server CPU per handshake | command |
| --- | ---: | ---: | ---: | --- |
| Couplet, direct TLS port | $(val tls_couplet handshakes) | $(val tls_couplet server_cpu_s) s | $(val tls_couplet server_us_per_handshake) µs | \`openssl s_time -connect 127.0.0.1:TLSPORT -new -time 5\` (config \`c2s_tls_port = TLSPORT\`) |
| OpenSSL's s_server, same certificate | $(val tls_openssl handshakes) | $(val tls_openssl server_cpu_s) s | $(val tls_openssl server_us_per_handshake) µs | \`openssl s_server -quiet -cert cert.pem -key key.pem -accept PORT -no_ticket -ciphersuites TLS_CHACHA20_POLY1305_SHA256\`, same s_time |

OpenSSL's primitives on this machine (\`openssl speed -seconds 1 ecdsap256 ecdhx25519\`): $(openssl speed -seconds 1 ecdsap256 ecdhx25519 2>/dev/null | awk '/ecdsa \(nistp256\)/ { printf "%s ECDSA P-256 signatures/s, ", $(NF-1) } /ecdh \(X25519\)/ { printf "%s X25519 operations/s", $NF }').
EOF

fails=$(cat "$TMP"/* 2>/dev/null | grep -h '^RESULT' | grep -c 'first_error=[^-]' || true)
echo
echo "Raw summary lines:"
echo
echo '```'
for n in scram_warm login_scram_1 login_scram_2 login_scram_3 login_plain login_scram_paced idle idle_tls idle_header idle_auth idle_bind chat_sat_1 chat_sat_2 chat_sat_3 chat_sat_nocoalesce chat_sat_100 chat_sat_1000 chat_sat_big chat_half chat_2000 muc_10 muc_100 muc_1000 silent_defer silent_nodefer tls_couplet tls_openssl; do
    echo "$n: $(cut -c8- "$TMP/$n")"
done
echo '```'
[ "$fails" = 0 ] || log "$fails run(s) reported an error (first_error=...) - see the raw lines"
exit 0
