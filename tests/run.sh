#!/bin/sh
# Runs every test for each build directory given (plain, then sanitized), adds up the per-suite
# "N passed, M failed" lines and ends with the total.  --valgrind runs them under valgrind instead.
# A suite that dies before printing its line counts as one failure.
cd "$(dirname "$0")/.." || exit 2
VALGRIND=
if [ "$1" = "--valgrind" ]; then
    VALGRIND="valgrind -q --leak-check=full --show-leak-kinds=definite,indirect --errors-for-leak-kinds=definite,indirect --error-exitcode=99"
    shift
fi
SHARED_SPECS=../shared/specs
total_pass=0
total_fail=0
log=$(mktemp)
trap 'rm -f "$log"' EXIT

# run NAME CMD...: show the suite's output, pick up its counts
run() {
    name=$1; shift
    echo "== $name"
    "$@" >"$log" 2>&1
    rc=$?
    cat "$log"
    line=$(grep -E '^([A-Za-z0-9_./-]+: )?[0-9]+ passed, [0-9]+ failed' "$log" | tail -n 1)
    if [ -z "$line" ]; then
        echo "FAIL $name: exited with status $rc before reporting"
        total_fail=$((total_fail + 1))
        return
    fi
    p=$(echo "$line" | sed -E 's/^([^ ]+: )?([0-9]+) passed, ([0-9]+) failed.*/\2/')
    f=$(echo "$line" | sed -E 's/^([^ ]+: )?([0-9]+) passed, ([0-9]+) failed.*/\3/')
    if [ "$rc" -ne 0 ] && [ "$f" -eq 0 ]; then
        echo "FAIL $name: exited with status $rc"
        f=1
    fi
    total_pass=$((total_pass + p))
    total_fail=$((total_fail + f))
}

for build in "$@"; do
    server="$build/couplet"
    if [ -n "$VALGRIND" ]; then
        # the server itself runs under valgrind too: the integration tests start it through COUPLET_BIN
        server="$(pwd)/build/valgrind-couplet"
        printf '#!/bin/sh\nexec %s %s "$@"\n' "$VALGRIND" "$(pwd)/$build/couplet" >"$server"
        chmod +x "$server"
        export COUPLET_BIN="$server"
    fi
    for t in "$build"/test_*; do
        [ -x "$t" ] || continue
        run "$t" $VALGRIND "$t"
    done
    run "$build/scs_runner --self-test" $VALGRIND "$build/scs_runner" --self-test
    run "$build specs (strict)" "$build/scs_runner" --strict --couplet "$server" specs/*.scs
    if [ -d "$SHARED_SPECS" ] && ls "$SHARED_SPECS"/*.scs >/dev/null 2>&1; then
        run "$build shared specs" "$build/scs_runner" --couplet "$server" "$SHARED_SPECS"/*.scs
    fi
done
run "install" sh tests/install_check.sh "$1"
# docs/TOUR.md names functions: each must still exist
run "tour" sh tests/tour_check.sh
# kill -9 and torn-tail test of the room message archive (builds its own driver with $CC)
run "archive crash" timeout 120 sh tests/archive_crash.sh
# a real client library against the plain build (Debian's python3-slixmpp; .ci/run installs it)
if [ -n "$VALGRIND" ]; then
    :   # a real client adds nothing to a valgrind run
elif /usr/bin/python3 -c 'import slixmpp' 2>/dev/null; then
    run "slixmpp real client" timeout 120 /usr/bin/python3 tests/slixmpp_check.py "$1/couplet"
else
    echo "== slixmpp real client: python3-slixmpp is not installed, check not run"
fi
# the interoperability matrix (INTEROP.md): client programs from Debian packages, each against a fresh
# plain server; a client that is not installed is reported as not run
if [ -z "$VALGRIND" ]; then
    run "interop matrix" timeout 300 sh tests/interop.sh "$1/couplet"
fi
echo "$total_pass passed, $total_fail failed"
[ "$total_fail" -eq 0 ]
