#!/bin/sh
# tests/archive_crash.sh - kill -9 test of the message archive (archive.c). A child appends records as fast
# as it can and acknowledges each one on stdout once archive_append has returned; it is killed with SIGKILL
# at a random moment; then the archive must open, every acknowledged record must be there intact, and
# appending goes on from where it stopped. 30 rounds over four archives: unbounded and bounded (so that
# kills land in compactions too), with and without fdatasync. Then deliberately torn tails: the newest
# record cut short at several points and followed by garbage, and garbage after a whole record, must be
# detected, dropped and logged with the rest intact, and appends must work after it.
# Prints "ok - ..." / "not ok - ..." lines and ends with "N passed, M failed"; exits 1 on a failure.
# Usage: sh tests/archive_crash.sh   (CC picks the compiler; the driver is built in a temporary directory)
cd "$(dirname "$0")/.." || exit 2
CC=${CC:-cc}
pass=0
fail=0
child=
work=$(mktemp -d) || exit 2
trap 'if [ -n "$child" ]; then kill -9 "$child" 2>/dev/null; fi; rm -rf "$work"' EXIT
trap 'exit 2' INT TERM HUP

ok() { echo "ok - $*"; pass=$((pass + 1)); }
notok() { echo "not ok - $*"; fail=$((fail + 1)); }
finish() {
    echo "$pass passed, $fail failed"
    [ "$fail" -eq 0 ]
    exit $?
}

drv=$work/archive_crashdrv
if $CC -std=c11 -D_GNU_SOURCE -Wall -Wextra -Werror -Wshadow -Wno-unused-parameter -O2 -g -I. \
       -o "$drv" tests/archive_crashdrv.c archive.c store.c log.c; then
    ok "build the driver"
else
    notok "build the driver"
    finish
fi

# rand N: a number from 0 to N - 1
rand() {
    echo $(( $(od -An -N4 -tu4 /dev/urandom | tr -d ' ') % $1 ))
}

# the last acknowledged sequence in an ack file (whole 21-byte lines only), or $2 when there is none
last_ack() {
    n=$(wc -c <"$1")
    n=$((n / 21 * 21))
    line=$(head -c "$n" "$1" | tail -n 1)
    if [ -n "$line" ]; then expr "$line" + 0; else echo "$2"; fi
}

torn_seen=0
kills_in_compaction=0

# round NAME ARCHIVE MAX SYNC MAX_MS: one child, killed after 5 .. MAX_MS + 4 ms; acked holds the
# archive's acknowledged sequence across rounds
round() {
    name=$1 arch=$2 max=$3 sync=$4
    ms=$(( $(rand "$5") + 5 ))
    "$drv" run "$arch" "$max" "$sync" >"$work/ack" 2>"$work/run.err" &
    child=$!
    sleep "$(printf '%d.%03d' $((ms / 1000)) $((ms % 1000)))"
    kill -9 "$child" 2>/dev/null
    wait "$child" 2>/dev/null
    child=
    [ -e "$arch.tmp" ] && kills_in_compaction=$((kills_in_compaction + 1))
    before=$acked
    acked=$(last_ack "$work/ack" "$acked")
    if [ -s "$work/run.err" ]; then
        notok "$name: the appending child failed: $(head -c 300 "$work/run.err")"
        return
    fi
    out=$(timeout 30 "$drv" check "$arch" "$max" "$acked" 2>"$work/check.err")
    rc=$?
    grep -q 'dropping' "$work/check.err" && torn_seen=$((torn_seen + 1))
    if [ "$rc" -eq 0 ]; then
        ok "$name: SIGKILL after $ms ms, $((acked - before)) appends acknowledged, all there: $out"
        # the record written but not acknowledged (if any) is the one the next round must follow
        acked=$(echo "$out" | sed -E 's/^last ([0-9]+) .*/\1/')
    else
        notok "$name: SIGKILL after $ms ms, acknowledged $acked: $out $(head -c 300 "$work/check.err")"
    fi
}

# phase ARCHIVE MAX SYNC ROUNDS MAX_MS LABEL
phase() {
    acked=0
    i=1
    while [ "$i" -le "$4" ]; do
        round "$6 round $i/$4" "$1" "$2" "$3" "$5"
        i=$((i + 1))
    done
}

phase "$work/plain.archive" 0 none 8 60 "no bound, no sync"
phase "$work/synced.archive" 0 always 6 300 "no bound, fdatasync"
phase "$work/bounded.archive" 300 none 12 300 "bound 300, no sync"
phase "$work/bounded-synced.archive" 50 always 4 300 "bound 50, fdatasync"
echo "# torn tails found at reopen after a kill: $torn_seen; kills while a compaction file existed: $kills_in_compaction"

# ---- deliberately torn tails ----
base=$work/base.archive
"$drv" run "$base" 0 none 40 >/dev/null 2>"$work/run.err" && out=$("$drv" check "$base" 0 40)
if [ $? -ne 0 ]; then
    notok "torn tails: making a 40-record archive: $out $(cat "$work/run.err")"
    finish
fi
size=$(echo "$out" | sed -E 's/.* size ([0-9]+) .*/\1/')
lastoff=$(echo "$out" | sed -E 's/.* lastoff ([0-9]+)$/\1/')
reclen=$((size - lastoff))

# tear CUT GARBAGE LABEL: the archive cut to CUT bytes, GARBAGE appended; expect 39 records and a warning
# that names the file and the bytes dropped, then 5 appends on top
tear() {
    t=$work/torn.archive
    head -c "$1" "$base" >"$t"
    printf '%s' "$2" >>"$t"
    total=$(wc -c <"$t")
    keep=$3 label=$4
    out=$("$drv" check "$t" 0 "$keep" 2>"$work/check.err")
    rc=$?
    dropped=$((total - $(wc -c <"$t")))
    if [ "$rc" -ne 0 ] || [ "$(wc -c <"$t")" -ne "$5" ]; then
        notok "$label: $out (file is $(wc -c <"$t") bytes, expected $5)"
    elif ! grep -q "WARN archive $t: .*dropping the last $dropped bytes" "$work/check.err"; then
        notok "$label: no warning naming $t and $dropped bytes: $(cat "$work/check.err")"
    else
        ok "$label: $dropped bytes dropped and logged, $keep records intact"
    fi
    if "$drv" run "$t" 0 none 5 >/dev/null 2>"$work/run.err" && out=$("$drv" check "$t" 0 $((keep + 5)) 2>&1); then
        ok "$label: 5 appends after the repair: $out"
    else
        notok "$label: appending after the repair: $out $(cat "$work/run.err")"
    fi
}

tear $((lastoff + 1)) "" 39 "newest record cut after 1 of its $reclen bytes" "$lastoff"
tear $((lastoff + 11)) "garbage" 39 "newest record cut inside its header, garbage after" "$lastoff"
tear $((lastoff + reclen / 2)) "garbage after half a record" 39 "newest record cut in the middle, garbage after" "$lastoff"
tear $((size - 1)) "!" 39 "newest record short by its last byte, another byte after" "$lastoff"
tear "$size" "garbage" 40 "garbage after a whole record" "$size"
tear "$size" "$(printf '\307AR\001')" 40 "a lone magic after a whole record" "$size"
finish
