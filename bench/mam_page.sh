#!/bin/bash
# bench/mam_page.sh [BUILD_DIR] [N] [PAGE] [FSYNC]: a room archive's cost. A fresh server on a free loopback port
# with a temporary data directory; bench/mam_page.py fills a persistent room with N messages (10,000) and pages
# through them with MAM, PAGE (50) at a time. FSYNC (true) is muc_archive_fsync. Prints the RESULT line.
set -u
BUILD=$(cd "${1:-build}" && pwd); N=${2:-10000}; PAGE=${3:-50}; FSYNC=${4:-true}
TMP=$(mktemp -d /tmp/couplet-mam.XXXXXX)
PID=
cleanup() { [ -n "$PID" ] && kill -TERM "$PID" 2>/dev/null && wait "$PID" 2>/dev/null; rm -rf "$TMP"; }
trap cleanup EXIT
trap 'exit 130' INT TERM
PORT=$(python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1])')
printf '%s\n' "data_dir = $TMP/data" "bind = 127.0.0.1" "c2s_port = $PORT" "c2s_tls_port = 0" \
    "require_encryption = false" "max_read_rate = 0" "log_level = warn" "admin_socket =" \
    "muc_archive_max = $((N + 1000))" "muc_archive_fsync = $FSYNC" > "$TMP/couplet.conf"
echo password | "$BUILD/couplet" -c "$TMP/couplet.conf" adduser user0@localhost >/dev/null || exit 2
"$BUILD/couplet" -c "$TMP/couplet.conf" 2>>"$TMP/server.log" &
PID=$!
for _ in $(seq 100); do python3 -c "import socket; socket.create_connection(('127.0.0.1', $PORT), 0.2)" 2>/dev/null && break; sleep 0.05; done
timeout 300 python3 "$(dirname "$0")/mam_page.py" "$PORT" "$PID" "$TMP/data/rooms/bench.archive" "$N" "$PAGE"
