#!/bin/bash
# bench/compare.sh - Couplet, Prosody and ejabberd side by side under the same load generator (run by
# `make bench-compare`). Installs Debian's prosody and ejabberd if they are missing, starts each server as
# root on a free loopback port with a minimal configuration written here (plaintext allowed, rate limits off),
# registers user0..user{N-1} / "password", runs the same build/couplet-load workloads against each and prints
# Markdown tables for BENCHMARKS.md on stdout. Every server is started fresh for every measurement; a trap
# stops whatever is running on any exit. The whole run is bounded (about 4 minutes on 2 cores; runs that
# would start after 540 s are skipped).
#
#   bench/compare.sh [--only couplet|prosody|ejabberd]...
set -u

ROOT=$(cd "$(dirname "$0")/.." && pwd)
COUPLET=$ROOT/build/couplet
LOAD=$ROOT/build/couplet-load
NACC=2000              # accounts and idle sessions per server
BUDGET=540             # seconds: runs that would start after this are skipped (the whole script stays < 10 min)
SERVERS=()
while [ $# -gt 0 ]; do
    case $1 in
        --only) SERVERS+=("$2"); shift 2;;
        *) echo "usage: bench/compare.sh [--only couplet|prosody|ejabberd]..." >&2; exit 2;;
    esac
done
[ ${#SERVERS[@]} -gt 0 ] || SERVERS=(couplet prosody ejabberd)

log() { echo "compare: $*" >&2; }

for b in "$COUPLET" "$LOAD"; do
    [ -x "$b" ] || { log "$b is missing; run make bench-compare"; exit 2; }
done
[ "$(id -u)" = 0 ] || { log "run as root (installs packages, starts the servers as root)"; exit 2; }

ulimit -n "$(ulimit -Hn)" 2>/dev/null

# ---- packages ----
need=()
dpkg -s prosody >/dev/null 2>&1 || need+=(prosody)
dpkg -s ejabberd >/dev/null 2>&1 || need+=(ejabberd)
if [ ${#need[@]} -gt 0 ]; then
    log "installing ${need[*]}"
    export DEBIAN_FRONTEND=noninteractive
    if ! apt-get install -y "${need[@]}" >&2; then
        apt-get update >&2 && apt-get install -y "${need[@]}" >&2 || { log "apt-get install ${need[*]} failed"; exit 2; }
    fi
fi
pkgver() { dpkg-query -W -f='${Version}' "$1" 2>/dev/null || echo "?"; }
V_PROSODY=$(pkgver prosody)
V_EJABBERD=$(pkgver ejabberd)
V_ERLANG=$(pkgver erlang-base)
V_LUA=$(readlink -f "$(command -v lua5.4 || command -v lua)" 2>/dev/null | sed 's,.*/,,')
V_COUPLET=$(cd "$ROOT" && git rev-parse --short HEAD 2>/dev/null || echo "?")
# where ejabberdctl finds the ejabberd application (Debian: /usr/lib/<triplet>)
EJ_LIBS=$(sed -n "s/^ERL_LIBS='\(.*\)'$/\1/p" /usr/sbin/ejabberdctl 2>/dev/null | head -1)
[ -n "$EJ_LIBS" ] || EJ_LIBS=/usr/lib/$(dpkg-architecture -qDEB_HOST_MULTIARCH 2>/dev/null || echo x86_64-linux-gnu)

TMP=$(mktemp -d /tmp/couplet-compare.XXXXXX)
chmod 755 "$TMP"
SERVER_PID=
stop_server() {
    [ -n "$SERVER_PID" ] || return 0
    kill -TERM "$SERVER_PID" 2>/dev/null
    for _ in $(seq 100); do kill -0 "$SERVER_PID" 2>/dev/null || break; sleep 0.1; done
    kill -KILL "$SERVER_PID" 2>/dev/null
    wait "$SERVER_PID" 2>/dev/null
    SERVER_PID=
}
cleanup() { stop_server; rm -rf "$TMP"; }
trap cleanup EXIT
trap 'exit 130' INT TERM

T0=$(date +%s)
elapsed() { echo $(( $(date +%s) - T0 )); }

listening() {   # listening PORT: is something listening on 127.0.0.1:PORT?
    grep -q ":$(printf '%04X' "$1") 00000000:0000 0A" /proc/net/tcp 2>/dev/null
}
wait_listen() {   # wait_listen PORT SECONDS LOGFILE
    local i
    for i in $(seq $(( $2 * 10 ))); do
        kill -0 "$SERVER_PID" 2>/dev/null || { log "the server died at start:"; tail -5 "$3" >&2; SERVER_PID=; return 1; }
        listening "$1" && return 0
        sleep 0.1
    done
    log "the server does not listen on $1 after $2 s"; tail -5 "$3" >&2
    return 1
}

# ---- Couplet: the same settings as bench/run.sh ----
couplet_conf() {
    cat > "$TMP/couplet.conf" <<EOF
data_dir = $TMP/couplet-data
domain = localhost
muc_domain = conference.localhost
bind = 127.0.0.1
c2s_port = $1
c2s_tls_port = 0
require_encryption = false
scram_iterations = 4096
max_connections = 200000
max_connections_per_ip = 0
max_read_rate = 0
auth_failures_per_ip = 0
max_sessions_per_account = 10
muc_max_occupants = 1000
muc_max_rooms = 10000
handshake_timeout = 120
log_level = warn
EOF
}
couplet_setup() {
    couplet_conf 1
    awk -v n="$NACC" 'BEGIN { for (i = 0; i < n; i++) print "user" i "@localhost password" }' \
        | "$COUPLET" -c "$TMP/couplet.conf" import 2>&1 | tail -1 >&2
}
couplet_start() {
    couplet_conf "$PORT"
    "$COUPLET" -c "$TMP/couplet.conf" >> "$TMP/couplet.log" 2>&1 &
    SERVER_PID=$!
    wait_listen "$PORT" 10 "$TMP/couplet.log"
}

# ---- Prosody: own minimal config; one Lua process (no daemon), epoll backend ----
prosody_conf() {
    mkdir -p "$TMP/prosody/data" "$TMP/prosody/certs"
    cat > "$TMP/prosody/prosody.cfg.lua" <<EOF
-- written by bench/compare.sh: plaintext c2s on loopback, nothing else
run_as_root = true
pidfile = "$TMP/prosody/prosody.pid"
data_path = "$TMP/prosody/data"
certificates = "$TMP/prosody/certs"
log = { warn = "$TMP/prosody/prosody.log" }
network_backend = "epoll"
c2s_ports = { $1 }
c2s_interfaces = { "127.0.0.1" }
s2s_ports = { }
component_ports = { }
http_ports = { }
https_ports = { }
network_settings = { tcp_backlog = 4096 }
c2s_require_encryption = false
allow_unencrypted_plain_auth = true
authentication = "internal_hashed"
default_iteration_count = 4096
storage = "internal"
admin_socket = "$TMP/prosody/admin.sock"
modules_enabled = { "saslauth", "roster", "disco", "ping", "admin_shell" }
modules_disabled = { "s2s", "offline", "limits", "tls" }
VirtualHost "localhost"
Component "conference.localhost" "muc"
    muc_room_locking = false
    max_history_messages = 0
    muc_tombstones = false
EOF
}
prosody_start() {
    prosody_conf "$PORT"
    prosody --config "$TMP/prosody/prosody.cfg.lua" -F >> "$TMP/prosody/stdout.log" 2>&1 &
    SERVER_PID=$!
    wait_listen "$PORT" 20 "$TMP/prosody/prosody.log"
}
prosody_setup() {   # accounts through the admin shell of a running server (one prosodyctl process)
    PORT=$("$LOAD" --free-port) || return 1
    prosody_start || return 1
    for _ in $(seq 50); do [ -S "$TMP/prosody/admin.sock" ] && break; sleep 0.1; done
    awk -v n="$NACC" 'BEGIN { for (i = 0; i < n; i++) print "user:create(\"user" i "@localhost\", \"password\")" }' \
        | prosodyctl --config "$TMP/prosody/prosody.cfg.lua" shell > "$TMP/prosody/register.log" 2>&1
    local made
    made=$(ls "$TMP/prosody/data/localhost/accounts" 2>/dev/null | wc -l)
    stop_server
    log "prosody: $made accounts registered"
    [ "$made" = "$NACC" ]
}

# ---- ejabberd: own minimal yml; the Erlang VM run directly (no ejabberdctl, no epmd, no distribution) ----
ejabberd_conf() {
    mkdir -p "$TMP/ejabberd/db"
    cat > "$TMP/ejabberd/ejabberd.yml" <<EOF
# written by bench/compare.sh: plaintext c2s on loopback, shapers and queue limits off
hosts:
  - localhost
loglevel: warning
auth_method: internal
auth_password_format: scram
auth_cache_size: 100000
max_fsm_queue: 100000000
shaper: {}
shaper_rules: {}
listen:
  -
    port: $1
    ip: "127.0.0.1"
    module: ejabberd_c2s
    starttls: false
    starttls_required: false
    shaper: none
    access: all
    backlog: 4096
    max_stanza_size: 262144
modules:
  mod_disco: {}
  mod_ping: {}
  mod_muc:
    host: conference.localhost
    access: all
    access_create: all
    access_persistent: all
    access_admin: none
    history_size: 0
    max_users: 1000
    min_message_interval: 0
    min_presence_interval: 0
EOF
}
EJ_REGISTER=0
ejabberd_start() {
    ejabberd_conf "$PORT"
    rm -f "$TMP/ejabberd/ready"
    local ev='ok'
    [ $EJ_REGISTER = 1 ] && ev="R = [ejabberd_auth:try_register(<<\"user\", (integer_to_binary(I))/binary>>, <<\"localhost\">>, <<\"password\">>) || I <- lists:seq(0, $NACC - 1)], file:write_file(\"$TMP/ejabberd/register.log\", io_lib:format(\"~p~n\", [lists:usort(R)]))"
    (cd "$TMP/ejabberd" && EJABBERD_CONFIG_PATH="$TMP/ejabberd/ejabberd.yml" EJABBERD_LOG_PATH="$TMP/ejabberd/ejabberd.log" \
        ERL_LIBS="$EJ_LIBS" ERL_CRASH_DUMP_BYTES=0 \
        exec erl -noinput +K true +P 250000 -mnesia dir "\"$TMP/ejabberd/db\"" -s ejabberd \
        -eval "$ev, file:write_file(\"$TMP/ejabberd/ready\", <<\"ok\">>).") >> "$TMP/ejabberd/stdout.log" 2>&1 &
    SERVER_PID=$!
    for _ in $(seq 600); do [ -f "$TMP/ejabberd/ready" ] && break; kill -0 "$SERVER_PID" 2>/dev/null || break; sleep 0.1; done
    wait_listen "$PORT" 30 "$TMP/ejabberd/ejabberd.log"
}
ejabberd_setup() {
    PORT=$("$LOAD" --free-port) || return 1
    EJ_REGISTER=1
    ejabberd_start || return 1
    EJ_REGISTER=0
    stop_server
    log "ejabberd: registration result $(tr -d '\n' < "$TMP/ejabberd/register.log" 2>/dev/null)"
    grep -q '^\[ok\]$' "$TMP/ejabberd/register.log"
}

# ---- one measurement: a fresh server, one couplet-load run ----
declare -A OK
run() {   # run SERVER NAME ARGS...
    local srv=$1 name=$2; shift 2
    echo "build/couplet-load --port PORT --server-pid PID $*" > "$TMP/$name.cmd"
    if [ "$(elapsed)" -gt $BUDGET ]; then
        log "$srv $name: skipped (time budget of $BUDGET s used up)"
        echo "RESULT first_error=skipped_time_budget" > "$TMP/$srv.$name"
        return
    fi
    PORT=$("$LOAD" --free-port) || { log "no free port"; exit 2; }
    if ! "${srv}_start"; then
        stop_server
        echo "RESULT first_error=server_did_not_start" > "$TMP/$srv.$name"
        return
    fi
    log "$srv $name: couplet-load $*"
    timeout 150 "$LOAD" --port "$PORT" --server-pid "$SERVER_PID" --quiet --key-cache "$TMP/keys.$srv" "$@" \
        > "$TMP/$srv.$name.out" 2> "$TMP/$srv.$name.err"
    local rc=$?
    grep '^RESULT ' "$TMP/$srv.$name.out" > "$TMP/$srv.$name" || echo "RESULT failed=1 first_error=no_result_rc_$rc" > "$TMP/$srv.$name"
    [ $rc = 0 ] || log "$srv $name: couplet-load exited $rc ($(sed -n 's/.*first_error=\([^ ]*\).*/\1/p' "$TMP/$srv.$name"))"
    stop_server
}

background_load() {   # whole-machine CPU busy over one second, in % of one CPU (as bench/run.sh)
    local a b
    a=($(head -1 /proc/stat)); sleep 1; b=($(head -1 /proc/stat))
    local busy=$(( (b[1]+b[2]+b[3]+b[6]+b[7]+b[8]) - (a[1]+a[2]+a[3]+a[6]+a[7]+a[8]) ))
    local idle=$(( (b[4]+b[5]) - (a[4]+a[5]) ))
    echo $(( busy * 100 * $(nproc) / (busy + idle + 1) ))
}

BG0=$(background_load)
log "background load before: ${BG0}% of one CPU"

for srv in "${SERVERS[@]}"; do
    log "$srv: registering $NACC accounts"
    if ! "${srv}_setup"; then
        log "$srv: setup failed"
        OK[$srv]=0
        continue
    fi
    OK[$srv]=1
    run "$srv" idle --workload idle --sessions "$NACC" --mech SCRAM-SHA-1 --rate 1000 --settle 3 --duration 5
    run "$srv" login_scram --workload login --sessions "$NACC" --mech SCRAM-SHA-1 --concurrency 200
    run "$srv" login_plain --workload login --sessions 1000 --mech PLAIN --concurrency 200
    run "$srv" chat_sat --workload chat --sessions 200 --mech SCRAM-SHA-1 --window 8 --duration 8
    run "$srv" chat_2000 --workload chat --sessions 1000 --mech SCRAM-SHA-1 --rate 1000 --msg-rate 2000 --duration 10
    run "$srv" muc_100 --workload muc --occupants 100 --rooms 1 --senders 10 --window 4 --duration 6 --mech SCRAM-SHA-1
done

BG1=$(background_load)
log "background load after: ${BG1}% of one CPU"
T1=$(date +%s)

# ---- the report ----
iters() { [ -f "$TMP/keys.$1" ] && awk '{ print $1 }' "$TMP/keys.$1" | sort -u | tr '\n' ' ' | sed 's/ $//'; }
val() { [ -f "$TMP/$1.$2" ] && sed -n "s/.* $3=\([^ ]*\).*/\1/p" "$TMP/$1.$2" | head -1; }   # val SERVER NAME KEY
cmd() { cat "$TMP/$1.cmd"; }
label() {
    case $1 in
        couplet) echo "Couplet ($V_COUPLET)";;
        prosody) echo "Prosody $V_PROSODY ($V_LUA)";;
        ejabberd) echo "ejabberd $V_EJABBERD (Erlang/OTP $V_ERLANG)";;
    esac
}
errnote() {   # a short note if the run failed or lost something
    local e
    e=$(val "$1" "$2" first_error)
    [ -z "$e" ] || [ "$e" = "-" ] || echo " (error: ${e//_/ })"
}

cat <<EOF

## Side by side ($(date -u +%Y-%m-%d), run time $((T1 - T0)) s)

Machine: $(nproc) CPUs ($(grep -m1 'model name' /proc/cpuinfo | cut -d: -f2- | sed 's/^ *//')), Linux $(uname -r).
Background load (other processes) measured over 1 s: ${BG0}% of one CPU before, ${BG1}% after.
Each row is a fresh server on a free loopback port; PORT and PID stand for them. $NACC accounts per server.
SCRAM-SHA-1 iteration counts the servers offered (from the generator's key cache):$(for s in "${SERVERS[@]}"; do printf ' %s %s;' "$s" "$(iters $s)"; done | sed 's/;$/./')

### Memory per idle session ($NACC sessions, SCRAM-SHA-1, bound + initial presence)

| server | sessions | RSS before | after | per idle session | command |
| --- | ---: | ---: | ---: | ---: | --- |
EOF
for s in "${SERVERS[@]}"; do
    echo "| $(label $s) | $(val $s idle logged_in) | $(val $s idle rss_before_kb) kB | $(val $s idle rss_after_kb) kB | $(val $s idle rss_per_session_b) B$(errnote $s idle) | \`$(cmd idle)\` |"
done
cat <<EOF

### Logins (flat out, 200 in progress)

| server | mechanism | sessions | logins/s | p50 | p99 | server CPU per login | command |
| --- | --- | ---: | ---: | ---: | ---: | ---: | --- |
EOF
for n in login_scram login_plain; do
    for s in "${SERVERS[@]}"; do
        echo "| $(label $s) | $(val $s $n mech) | $(val $s $n logged_in) | $(val $s $n logins_per_s) | $(val $s $n login_p50_ms) ms | $(val $s $n login_p99_ms) ms | $(val $s $n server_us_per_login) µs$(errnote $s $n) | \`$(cmd $n)\` |"
    done
done
cat <<EOF

### 1:1 chat at saturation (100 pairs, 8 in flight each way)

| server | delivered/s | lost | p50 | p99 | server CPU | server µs per routed message | command |
| --- | ---: | ---: | ---: | ---: | ---: | ---: | --- |
EOF
for s in "${SERVERS[@]}"; do
    n=chat_sat
    echo "| $(label $s) | $(val $s $n delivered_per_s) | $(val $s $n lost) | $(val $s $n lat_p50_us) µs | $(val $s $n lat_p99_us) µs | $(val $s $n server_cpu_pct)% | $(val $s $n server_us_per_delivery)$(errnote $s $n) | \`$(cmd $n)\` |"
done
cat <<EOF

### 1:1 chat at a fixed 2,000 msg/s (500 pairs)

| server | delivered/s | lost | p50 | p90 | p99 | max | server CPU | server µs per message | command |
| --- | ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: | --- |
EOF
for s in "${SERVERS[@]}"; do
    n=chat_2000
    echo "| $(label $s) | $(val $s $n delivered_per_s) | $(val $s $n lost) | $(val $s $n lat_p50_us) µs | $(val $s $n lat_p90_us) µs | $(val $s $n lat_p99_us) µs | $(val $s $n lat_max_us) µs | $(val $s $n server_cpu_pct)% | $(val $s $n server_us_per_delivery)$(errnote $s $n) | \`$(cmd $n)\` |"
done
cat <<EOF

### Room fan-out (1 room, 100 occupants, 10 senders, 4 in flight each, flat out)

| server | messages sent/s | deliveries/s | lost | p50 | p99 | server CPU | server µs per delivered stanza | command |
| --- | ---: | ---: | ---: | ---: | ---: | ---: | ---: | --- |
EOF
for s in "${SERVERS[@]}"; do
    n=muc_100
    echo "| $(label $s) | $(val $s $n sent_per_s) | $(val $s $n delivered_per_s) | $(val $s $n lost) | $(val $s $n lat_p50_us) µs | $(val $s $n lat_p99_us) µs | $(val $s $n server_cpu_pct)% | $(val $s $n server_us_per_delivery)$(errnote $s $n) | \`$(cmd $n)\` |"
done

echo
echo "Raw summary lines:"
echo
echo '```'
for s in "${SERVERS[@]}"; do
    for n in idle login_scram login_plain chat_sat chat_2000 muc_100; do
        [ -f "$TMP/$s.$n" ] && echo "$s $n: $(cut -c8- "$TMP/$s.$n")"
    done
done
echo '```'
for s in "${SERVERS[@]}"; do [ "${OK[$s]:-0}" = 1 ] || log "$s could not be set up (see above)"; done
exit 0
