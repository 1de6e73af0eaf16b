#!/bin/sh
# interop.sh COUPLET_OR_BUILD_DIR [CLIENT...]: the interoperability matrix (INTEROP.md). Each client
# program or library nobody here wrote (Debian packages) is driven against a fresh Couplet of its own:
# login over STARTTLS and direct TLS, the SASL mechanism, a message both ways, a room, groupchat both ways,
# a password-protected room, a clean logout, and (when the server has it) the shared roster.
# Every step prints "interop CLIENT VERSION STEP: pass|FAIL|not supported by client"; a missing client
# prints "CLIENT: not installed, check not run" and counts as nothing. The last line is
# "interop: N passed, M failed". CLIENT is one of: slixmpp libstrophe go-sendxmpp xmppc profanity mcabber
# (all of them by default). The libstrophe program is built with `make BUILD=DIR DIR/interop_strophe`.
cd "$(dirname "$0")/.." || exit 2
if [ $# -lt 1 ]; then
    echo "usage: sh tests/interop.sh COUPLET_OR_BUILD_DIR [CLIENT...]" >&2
    exit 2
fi
if [ -d "$1" ]; then
    build=${1%/}
    couplet="$build/couplet"
else
    couplet=$1
    build=$(dirname "$1")
fi
shift
if [ ! -x "$couplet" ]; then
    echo "interop: no server binary at $couplet"
    echo "interop: 0 passed, 1 failed"
    exit 1
fi
strophe="$build/interop_strophe"
if [ ! -x "$strophe" ] && command -v make >/dev/null 2>&1; then
    make -s BUILD="$build" "$strophe" >/dev/null 2>&1
fi
[ -x "$strophe" ] || strophe=""

clients=${*:-slixmpp libstrophe go-sendxmpp xmppc profanity mcabber}
out=$(mktemp -d "${TMPDIR:-/tmp}/couplet-interop-XXXXXX") || exit 2
trap 'rm -rf "$out"' EXIT
pass=0
fail=0
for c in $clients; do
    case "$c" in
    slixmpp) script=tests/interop_slixmpp.sh ;;
    libstrophe) script=tests/interop_strophe.sh ;;
    go-sendxmpp) script=tests/interop_gosendxmpp.sh ;;
    xmppc) script=tests/interop_xmppc.sh ;;
    profanity) script=tests/interop_profanity.sh ;;
    mcabber) script=tests/interop_mcabber.sh ;;
    *) echo "interop: unknown client $c"; fail=$((fail + 1)); continue ;;
    esac
    # each check bounds its own waits; this bounds the check as a whole
    timeout -k 5 90 sh "$script" "$couplet" "$strophe" 2>&1 | tee "$out/$c"
    p=$(grep -c '^interop .*: pass$' "$out/$c")
    f=$(grep -c '^interop .*: FAIL$' "$out/$c")
    if ! grep -q "^interop $c done\$" "$out/$c"; then
        echo "interop $c: FAIL (the check ended before it finished: killed after 90 s, or crashed)"
        f=$((f + 1))
    fi
    pass=$((pass + p))
    fail=$((fail + f))
done

# the matrix: one row per client, one column per step
echo "interop matrix (P pass, F FAIL, - not supported by client, . not run):"
for c in $clients; do cat "$out/$c" 2>/dev/null; done | awk '
BEGIN {
    ns = split("login STARTTLS|login direct TLS|sasl|message send|message receive|room join|groupchat send|groupchat receive|password room join|logout|shared roster", steps, "|")
    for (j = 1; j <= ns; j++) sseen[steps[j]] = 1
    width = 6
}
/^interop .*: (pass|FAIL|not supported by client)$/ {
    line = $0; sub(/^interop /, "", line)
    split(line, w, " "); client = w[1] " " w[2]
    step = line; sub(/^[^ ]+ [^ ]+ /, "", step); sub(/: (pass|FAIL|not supported by client)$/, "", step)
    sub(/ \(.*$/, "", step)
    r = line ~ /: pass$/ ? "P" : line ~ /: FAIL$/ ? "F" : "-"
    if (!(client in seen)) { seen[client] = 1; clients[++nc] = client; if (length(client) > width) width = length(client) }
    if (!(step in sseen)) { sseen[step] = 1; steps[++ns] = step }
    res[client, step] = r
}
END {
    for (j = 1; j <= ns; j++) printf "  %2d %s\n", j, steps[j]
    printf "  %-" width "s", "client"
    for (j = 1; j <= ns; j++) printf " %2d", j
    printf "\n"
    for (i = 1; i <= nc; i++) {
        printf "  %-" width "s", clients[i]
        for (j = 1; j <= ns; j++) printf "  %s", ((clients[i], steps[j]) in res) ? res[clients[i], steps[j]] : "."
        printf "\n"
    }
}'
echo "interop: $pass passed, $fail failed"
[ "$fail" -eq 0 ]
