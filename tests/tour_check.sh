#!/bin/sh
# tests/tour_check.sh - docs/TOUR.md names functions as `name()`; each must still be defined in a source
# file at the top level of the repository, so the tour cannot describe code that is gone.
cd "$(dirname "$0")/.." || exit 2
doc=${1:-docs/TOUR.md}
pass=0
fail=0
for f in $(grep -o '`[A-Za-z_][A-Za-z0-9_]*()`' "$doc" | tr -d '`()' | sort -u); do
    # a definition starts at the beginning of a line: a return type, then the name and its parameters
    if grep -Eq "^[A-Za-z_][A-Za-z0-9_ ]*[ *]$f\(" ./*.c; then
        pass=$((pass + 1))
    else
        echo "FAIL tour: $doc names $f(), which no top-level .c file defines"
        fail=$((fail + 1))
    fi
done
if [ "$pass" -eq 0 ]; then
    echo "FAIL tour: no function names found in $doc"
    fail=$((fail + 1))
fi
echo "tour: $pass passed, $fail failed"
[ "$fail" -eq 0 ]
