#!/bin/bash
# bench/ab.sh - one couplet-load workload against two builds, alternated (A, B, A, B, ...), each run on a
# fresh server with the bench/run.sh configuration and 10,000 imported accounts: a before/after for a change.
#
#   bench/ab.sh BEFORE_DIR AFTER_DIR ROUNDS couplet-load arguments...
#   e.g. bench/ab.sh /tmp/base/build build 3 --workload login --sessions 10000 --mech SCRAM-SHA-1 --concurrency 500
#
# Prints one RESULT line per run, labelled. Loopback only, free ports, every server stopped on exit.
# AB_CONF_BEFORE / AB_CONF_AFTER: extra configuration lines for that side, separated by ';' (e.g.
# "muc_default_persistent = true;muc_archive_fsync = false"): one build, two configurations. Rooms start
# afresh each run; when a run leaves room archives, their total size is added to its line (archive_bytes=).
set -u
[ $# -ge 4 ] || { echo "usage: $0 BEFORE_DIR AFTER_DIR ROUNDS couplet-load-args..." >&2; exit 2; }
A=$(cd "$1" && pwd); B=$(cd "$2" && pwd); ROUNDS=$3; shift 3
LOAD=$B/couplet-load
for b in "$A/couplet" "$B/couplet" "$LOAD"; do [ -x "$b" ] || { echo "ab: $b is missing" >&2; exit 2; }; done
ulimit -n "$(ulimit -Hn)" 2>/dev/null
TMP=$(mktemp -d /tmp/couplet-ab.XXXXXX)
PID=
cleanup() {
    [ -n "$PID" ] && kill -TERM "$PID" 2>/dev/null && wait "$PID" 2>/dev/null
    rm -rf "$TMP"
}
trap cleanup EXIT
trap 'exit 130' INT TERM

conf() {   # conf PORT [EXTRA]
    local extra=${2:-}
    printf '%s\n' "data_dir = $TMP/data" "domain = localhost" "muc_domain = conference.localhost" \
        "bind = 127.0.0.1" "c2s_port = $1" "c2s_tls_port = 0" "require_encryption = false" \
        "scram_iterations = 4096" "max_connections = 200000" "max_connections_per_ip = 0" "max_read_rate = 0" \
        "auth_failures_per_ip = 0" "max_sessions_per_account = 10" "handshake_timeout = 120" \
        "log_level = warn" "admin_socket =" > "$TMP/couplet.conf"
    [ -z "$extra" ] || printf '%s\n' "$extra" | tr ';' '\n' >> "$TMP/couplet.conf"
}

one() {   # one LABEL BINARY EXTRA_CONF ARGS...: a fresh server, one run
    local label=$1 bin=$2 extra=$3; shift 3
    local port; port=$("$LOAD" --free-port) || exit 2
    conf "$port" "$extra"
    rm -rf "$TMP/data/rooms"
    "$bin" -c "$TMP/couplet.conf" >> "$TMP/server.log" 2>&1 &
    PID=$!
    for _ in $(seq 100); do
        grep -q ":$(printf '%04X' "$port") 00000000:0000 0A" /proc/net/tcp 2>/dev/null && break
        sleep 0.05
    done
    local out
    out=$(timeout 300 "$LOAD" --port "$port" --server-pid "$PID" --quiet --key-cache "$TMP/keys" "$@" | grep '^RESULT')
    kill -TERM "$PID" 2>/dev/null
    wait "$PID" 2>/dev/null
    PID=
    local arc
    arc=$(cat "$TMP"/data/rooms/*.archive 2>/dev/null | wc -c)
    [ "$arc" -gt 0 ] && out="$out archive_bytes=$arc"
    echo "$label $out"
}

conf 1
awk 'BEGIN { for (i = 0; i < 10000; i++) print "user" i "@localhost password" }' \
    | "$B/couplet" -c "$TMP/couplet.conf" import >/dev/null 2>&1
one warm "$B/couplet" "" "$@" > /dev/null     # fills the generator's key cache
for r in $(seq "$ROUNDS"); do
    one "before" "$A/couplet" "${AB_CONF_BEFORE:-}" "$@"
    one "after" "$B/couplet" "${AB_CONF_AFTER:-}" "$@"
done
