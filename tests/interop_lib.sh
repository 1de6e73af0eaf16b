# interop_lib.sh - what the interoperability checks share (sourced by tests/interop_CLIENT.sh, POSIX sh):
# a fresh Couplet per client (own data_dir, free loopback ports, log_level = debug, accounts alice, bob and
# carol), one report line per step, bounded waits, and the "line clients" (tests/interop_strophe.c on
# libstrophe, tests/interop_peer.py on slixmpp) that play the other side of a conversation.
#
# A check script sets IL_CLIENT and IL_VERSION, calls il_start_server, runs its steps through il_step and
# ends with il_finish. Every helper is bounded in time; il_cleanup (on EXIT) stops what the check started.

IL_ROOT=$(cd "$(dirname "$0")/.." && pwd)
IL_PASS=0
IL_FAIL=0
IL_UNSUPPORTED=0
IL_PIDS=""
IL_TMUX=""
IL_PY=/usr/bin/python3
PASSWORD=pw

# il_init COUPLET_BINARY STROPHE_PROGRAM_OR_EMPTY: the temporary directory and the cleanup trap
il_init() {
    COUPLET=$1
    IL_STROPHE=$2
    case "$COUPLET" in /*) ;; *) COUPLET="$(pwd)/$COUPLET" ;; esac
    case "$IL_STROPHE" in ""|/*) ;; *) IL_STROPHE="$(pwd)/$IL_STROPHE" ;; esac
    [ -n "$IL_STROPHE" ] && [ ! -x "$IL_STROPHE" ] && IL_STROPHE=""
    T=$(mktemp -d "${TMPDIR:-/tmp}/couplet-interop-$IL_CLIENT-XXXXXX") || exit 2
    trap il_cleanup EXIT
    trap 'exit 1' INT TERM HUP PIPE
}

il_cleanup() {
    for p in $IL_PIDS; do kill "$p" 2>/dev/null; done
    [ -n "$IL_TMUX" ] && tmux -S "$IL_TMUX" kill-server 2>/dev/null
    [ -n "$SERVER_PID" ] && kill "$SERVER_PID" 2>/dev/null
    sleep 0.2
    for p in $IL_PIDS $SERVER_PID; do kill -9 "$p" 2>/dev/null; done
    [ -n "$INTEROP_KEEP" ] || rm -rf "$T"
}

# il_free_ports N: N distinct free loopback ports, space separated
il_free_ports() {
    python3 -c '
import socket, sys
socks = []
for _ in range(int(sys.argv[1])):
    s = socket.socket(); s.bind(("127.0.0.1", 0)); socks.append(s)
print(" ".join(str(s.getsockname()[1]) for s in socks))' "$1"
}

# il_start_server [EXTRA_CONFIG_LINE...]: a fresh server (new data_dir and ports); sets PORT, TLSPORT,
# CONF, SLOG (its debug log) and SERVER_PID. Returns 1 if it does not come up within 10 s.
il_start_server() {
    [ -n "$SERVER_PID" ] && il_stop_server
    IL_SERVERS=$((${IL_SERVERS:-0} + 1))
    S="$T/server$IL_SERVERS"
    mkdir -p "$S"
    set -- $(il_free_ports 2) "$@"
    PORT=$1
    TLSPORT=$2
    shift 2
    CONF="$S/couplet.conf"
    # INTEROP_BREAK breaks the setup on purpose, to show that the matrix can fail (INTEROP.md):
    # no-direct-tls leaves the direct TLS port closed; wrong-password gives alice (the client under test)
    # another password than the one her client uses, while bob (the other side) can still log in
    tlsport=$TLSPORT
    [ "$INTEROP_BREAK" = no-direct-tls ] && tlsport=0
    {
        echo "c2s_port = $PORT"
        echo "c2s_tls_port = $tlsport"
        echo "data_dir = $S/data"
        echo "log_level = debug"
        echo "defer_accept = 0"
        for line in "$@"; do echo "$line"; done
    } >"$CONF"
    for u in alice bob carol; do
        account_password=$PASSWORD
        [ "$INTEROP_BREAK" = wrong-password ] && [ $u = alice ] && account_password="not-$PASSWORD"
        echo "$account_password" | "$COUPLET" -c "$CONF" adduser "$u@localhost" >>"$S/adduser.log" 2>&1 || {
            echo "interop $IL_CLIENT: could not create $u@localhost:"; cat "$S/adduser.log"; return 1; }
    done
    SLOG="$S/server.log"
    "$COUPLET" -c "$CONF" 2>"$SLOG" &
    SERVER_PID=$!
    CERT="$S/data/cert.pem"
    il_wait_for "$SLOG" "serving localhost" 10 || {
        echo "interop $IL_CLIENT: the server did not start:"; tail -n 20 "$SLOG"; return 1; }
    return 0
}

il_stop_server() {
    [ -n "$SERVER_PID" ] || return 0
    kill "$SERVER_PID" 2>/dev/null
    i=0
    while kill -0 "$SERVER_PID" 2>/dev/null && [ $i -lt 50 ]; do sleep 0.1; i=$((i + 1)); done
    kill -9 "$SERVER_PID" 2>/dev/null
    wait "$SERVER_PID" 2>/dev/null
    SERVER_PID=""
}

# il_wait_for FILE EXTENDED_REGEX SECONDS: 0 once a line of FILE matches, 1 after SECONDS
il_wait_for() {
    end=$(( $(date +%s) + $3 ))
    while :; do
        grep -Eq -- "$2" "$1" 2>/dev/null && return 0
        [ "$(date +%s)" -ge "$end" ] && return 1
        sleep 0.1
    done
}

# il_mark: remember where the server log is, so a failing step shows only what happened since
il_mark() {
    IL_MARK=$(wc -l <"$SLOG" 2>/dev/null || echo 0)
}

# il_log_wait EXTENDED_REGEX SECONDS: like il_wait_for on the server log, counting only lines since il_mark
il_log_wait() {
    end=$(( $(date +%s) + $2 ))
    while :; do
        tail -n +"$((${IL_MARK:-0} + 1))" "$SLOG" 2>/dev/null | grep -Eq -- "$1" && return 0
        [ "$(date +%s)" -ge "$end" ] && return 1
        sleep 0.1
    done
}

# il_step NAME pass|fail|unsupported [WHY] [FILE...]: one report line; a failure also shows WHY, the
# server's debug log since il_mark and the tail of each FILE (the client's own trace or output)
il_step() {
    st_name=$1
    st_result=$2
    st_why=$3
    shift 2
    [ $# -gt 0 ] && shift
    case "$st_result" in
    pass)
        IL_PASS=$((IL_PASS + 1))
        echo "interop $IL_CLIENT $IL_VERSION $st_name: pass"
        ;;
    unsupported)
        IL_UNSUPPORTED=$((IL_UNSUPPORTED + 1))
        echo "interop $IL_CLIENT $IL_VERSION $st_name: not supported by client"
        [ -n "$st_why" ] && echo "    ($st_why)"
        ;;
    *)
        IL_FAIL=$((IL_FAIL + 1))
        echo "interop $IL_CLIENT $IL_VERSION $st_name: FAIL"
        [ -n "$st_why" ] && echo "    $st_why"
        if [ -n "$SLOG" ] && [ -f "$SLOG" ]; then
            echo "    --- server debug log since the step began:"
            tail -n +"$((${IL_MARK:-0} + 1))" "$SLOG" | tail -n 40 | cut -c1-400 | sed 's/^/    | /'
        fi
        for f in "$@"; do
            [ -f "$f" ] || continue
            echo "    --- $(basename "$f") (last lines):"
            grep -v '^[[:space:]]*$' "$f" | tail -n 25 | cut -c1-400 | sed 's/^/    | /'
        done
        ;;
    esac
}

# il_skip WHY STEP...: steps that cannot run (no session to run them in); shown as not run, not counted
il_skip() {
    sk_why=$1
    shift
    for sk_step in "$@"; do echo "interop $IL_CLIENT $IL_VERSION $sk_step: not run ($sk_why)"; done
}

# il_ok STATUS: pass for 0, fail otherwise, for il_step
il_ok() { if [ "$1" -eq 0 ]; then echo pass; else echo fail; fi; }

# il_logout_seen JID_REGEX [SECONDS]: the server took the client's </stream:stream> and closed the
# stream of that session itself: it wrote its own </stream:stream> to it ("-> #N PEER JID </stream:stream>"
# in a debug log that records stanzas), or it ended the connection as "closed" rather than because the
# client dropped it ("peer closed", a reset); no stream error went to it (that would be the server's own
# close). Both forms of the server's close log are understood: "JID closed: REASON" and
# "#N PEER JID logged out: REASON".
il_logout_seen() {
    il_log_wait "(DEBUG $1 closed: closed|$1 logged out: closed|DEBUG -> #[0-9]+ [^ ]+ $1 </stream:stream>)\$" "${2:-5}" &&
        ! tail -n +"$((${IL_MARK:-0} + 1))" "$SLOG" | grep -Eq "stream error .* to $1|$1 stream error"
}

# il_bound_seen JID_REGEX [SECONDS]: the server's log shows a resource bound for that JID since il_mark
il_bound_seen() {
    il_log_wait "bound $1|$1 bound" "${2:-5}"
}

il_finish() {
    echo "interop $IL_CLIENT $IL_VERSION total: $IL_PASS passed, $IL_FAIL failed, $IL_UNSUPPORTED not supported by client"
    echo "interop $IL_CLIENT done"
    [ "$IL_FAIL" -eq 0 ]
}

# ---- line clients: the other side of a conversation -------------------------------------------------
# il_line_cmd KIND: the command for a line client, KIND strophe or slixmpp
il_line_cmd() {
    case "$1" in
    strophe) echo "$IL_STROPHE" ;;
    slixmpp) echo "$IL_PY $IL_ROOT/tests/interop_peer.py" ;;
    esac
}

# il_other_kind: the line client that plays the other side (libstrophe's if built, else slixmpp's)
il_other_kind() {
    if [ -n "$IL_STROPHE" ]; then echo strophe; else echo slixmpp; fi
}

# il_line_start NAME KIND JID [--tls] [other options]: a line client reading commands from a FIFO
# ($T/NAME.in, held open by a sleeping writer) and writing events to $T/NAME.out; its libstrophe or
# slixmpp trace goes to $T/NAME.trace. Waits up to 15 s for "online" (or "loginfail"); 1 if not online.
# (POSIX sh has no local variables: the helpers' own use an ls_ prefix, so callers' survive.)
il_line_start() {
    ls_name=$1
    ls_kind=$2
    ls_jid=$3
    shift 3
    ls_port=$PORT
    for ls_a in "$@"; do [ "$ls_a" = "--tls" ] && ls_port=$TLSPORT; done
    rm -f "$T/$ls_name.in" "$T/$ls_name.out"
    mkfifo "$T/$ls_name.in"
    ls_ca=""
    [ "$ls_kind" = strophe ] && ls_ca="--cafile $CERT"
    # the FIFO is opened for writing by a sleeping holder, so the client sees no EOF between our commands
    sleep 120 >"$T/$ls_name.in" &
    eval "IL_HOLD_$ls_name=$!"
    IL_PIDS="$IL_PIDS $!"
    $(il_line_cmd "$ls_kind") --timeout 120 --trace "$T/$ls_name.trace" $ls_ca "$@" "$ls_jid" "$PASSWORD" 127.0.0.1 "$ls_port" \
        <"$T/$ls_name.in" >"$T/$ls_name.out" 2>"$T/$ls_name.err" &
    eval "IL_PID_$ls_name=$!"
    IL_PIDS="$IL_PIDS $!"
    il_wait_for "$T/$ls_name.out" "^(online|loginfail|timeout)" 15 && grep -q "^online" "$T/$ls_name.out"
}

# il_line_send NAME COMMAND...: one command line to a line client
il_line_send() {
    ls_name=$1
    shift
    echo "$*" >>"$T/$ls_name.in.log"
    # a short-lived writer (the holder keeps the FIFO open between commands); bounded in case the
    # client has already gone and nobody reads
    timeout 3 sh -c 'printf "%s\n" "$1" >"$2"' sh "$*" "$T/$ls_name.in"
}

# il_line_expect NAME EXTENDED_REGEX [SECONDS]: waits for an event line of the line client
il_line_expect() {
    il_wait_for "$T/$1.out" "$2" "${3:-5}"
}

# il_line_quit NAME: the client closes its stream; 0 if it reports a clean close
il_line_quit() {
    il_line_send "$1" quit
    il_line_expect "$1" "^(closed|timeout)" 6
    eval "kill \$IL_HOLD_$1 2>/dev/null"
    grep -q "^closed clean" "$T/$1.out"
}

# ---- login IQs ----------------------------------------------------------------------------------------
# il_login_iqs JID_REGEX FORMAT TRACE: one informational line per IQ the client sent after resource binding
# (and the server's answer); not counted as a step. Read from the server's debug log when it records
# stanzas ("<- #N ..." and "-> #N ..." lines), else from the client's own trace (FORMAT: trace or recv)
il_login_iqs() {
    if grep -Eq "DEBUG <- #[0-9]+ [^ ]+ $1 " "$SLOG" 2>/dev/null; then
        "$IL_PY" "$IL_ROOT/tests/interop_loginiqs.py" server "$SLOG" "$1"
    else
        "$IL_PY" "$IL_ROOT/tests/interop_loginiqs.py" "$2" "$3"
    fi 2>&1 | sed "s/^/interop $IL_CLIENT $IL_VERSION login: /"
}

# ---- the other side ---------------------------------------------------------------------------------
# il_start_with_bob KIND [rooms]: a fresh server and bob on line client KIND, online; with "rooms", bob also
# makes garden@ (open) and vault@ (password "sesame") for the room steps. 1 (step failed) if either is not up.
il_start_with_bob() {
    il_start_server || { il_step "server start" fail "see above"; return 1; }
    il_mark
    il_line_start bob "$1" bob@localhost || { il_step "other side ($1) logs in" fail "" "$T/bob.out" "$T/bob.err"; return 1; }
    il_line_expect bob "^roster" 5
    [ "$2" = rooms ] || return 0
    il_line_send bob "join garden@conference.localhost Bob"
    il_line_send bob "join vault@conference.localhost Keeper"
    il_line_send bob "secret vault@conference.localhost sesame"
    il_line_expect bob "^configured vault@" 5 || il_step "helper creates a password-protected room" fail "" "$T/bob.out" "$T/bob.trace"
    # a new room is locked until its owner configures it: bob accepts garden's defaults (an instant room)
    il_line_expect bob "^joined garden@" 5 || il_step "helper creates an instant room" fail "" "$T/bob.out" "$T/bob.trace"
    return 0
}

# il_tmux_wait_gone SECONDS: wait (bounded) until the client's tmux session ($SESSION) has ended
il_tmux_wait_gone() {
    wg_end=$(( $(date +%s) + $1 ))
    while tmux -S "$IL_TMUX" has-session -t "$SESSION" 2>/dev/null && [ "$(date +%s)" -lt "$wg_end" ]; do sleep 0.2; done
}

# ---- the matrix for a line client (interop_strophe, interop_peer.py) ---------------------------------
# il_check_line_client KIND FORMAT: KIND (strophe or slixmpp) is the client under test as alice; the
# other side is bob on the other library when it is available
il_check_line_client() {
    lc_kind=$1
    lc_other=slixmpp
    [ "$lc_kind" = slixmpp ] && [ -n "$IL_STROPHE" ] && lc_other=strophe
    [ "$lc_kind" = strophe ] && ! "$IL_PY" -c 'import slixmpp' 2>/dev/null && lc_other=strophe
    il_start_with_bob "$lc_other" rooms || return 1

    il_mark
    il_line_start alice "$lc_kind" alice@localhost
    il_step "login STARTTLS" "$(il_ok $?)" "no online event" "$T/alice.out" "$T/alice.err" "$T/alice.trace"
    if ! grep -q "^online" "$T/alice.out"; then
        il_step "sasl" fail "no successful authentication"
        il_skip "no session: the login failed" "message send" "message receive" "room join" "groupchat send" \
            "groupchat receive" "password room join" "logout"
        il_line_start alicetls "$lc_kind" alice@localhost --tls && il_line_quit alicetls
        il_step "login direct TLS" "$(il_ok $?)" "no online event or no clean close on the direct TLS port" "$T/alicetls.out" "$T/alicetls.trace"
        return 1
    fi
    mech=$(sed -n 's/^online .* mech=\([^ ]*\).*/\1/p' "$T/alice.out")
    tls=$(sed -n 's/^online .* tls=\([^ ]*\).*/\1/p' "$T/alice.out")
    case "$mech" in SCRAM-*) r=pass ;; *) r=fail ;; esac
    [ "$tls" = yes ] || r=fail
    il_step "sasl ($mech, TLS $tls)" $r "expected SCRAM over TLS"
    il_line_expect alice "^roster" 5
    il_login_iqs "alice@localhost/[^ ]+" trace "$T/alice.trace"

    il_mark
    il_line_send alice "msg bob@localhost hello from $IL_CLIENT"
    il_line_expect bob "^msg alice@localhost/[^ ]+ hello from $IL_CLIENT\$"
    il_step "message send" "$(il_ok $?)" "bob did not get the message" "$T/bob.out" "$T/alice.trace"
    il_mark
    il_line_send bob "msg alice@localhost hello back"
    il_line_expect alice "^msg bob@localhost/[^ ]+ hello back\$"
    il_step "message receive" "$(il_ok $?)" "alice did not get bob's message" "$T/alice.out" "$T/alice.trace"

    il_mark
    il_line_send alice "join garden@conference.localhost Alice"
    il_line_expect alice "^joined garden@conference.localhost" && il_line_expect bob "^presence garden@conference.localhost/Alice available"
    il_step "room join" "$(il_ok $?)" "no self-presence (110) for alice, or bob did not see her join" "$T/alice.out" "$T/bob.out"
    il_mark
    il_line_send alice "gc garden@conference.localhost good morning room"
    il_line_expect bob "^gc garden@conference.localhost/Alice good morning room\$"
    il_step "groupchat send" "$(il_ok $?)" "bob did not get alice's groupchat message" "$T/bob.out" "$T/alice.trace"
    il_mark
    il_line_send bob "gc garden@conference.localhost good morning Alice"
    il_line_expect alice "^gc garden@conference.localhost/Bob good morning Alice\$"
    il_step "groupchat receive" "$(il_ok $?)" "alice did not get bob's groupchat message" "$T/alice.out" "$T/alice.trace"

    il_mark
    il_line_send alice "join vault@conference.localhost Alice sesame"
    il_line_expect alice "^(joined|joinerror) vault@conference.localhost" && grep -q "^joined vault@" "$T/alice.out"
    il_step "password room join" "$(il_ok $?)" "alice could not join the protected room with its password" "$T/alice.out" "$T/alice.trace"

    il_mark
    aljid=$(sed -n 's/^online \([^ ]*\) .*/\1/p' "$T/alice.out")
    il_line_quit alice && il_logout_seen "$aljid"
    il_step "logout" "$(il_ok $?)" "no clean close: the client's </stream:stream> was not answered with the server's" "$T/alice.out" "$T/alice.trace"

    il_mark
    il_line_start alicetls "$lc_kind" alice@localhost --tls && il_line_quit alicetls
    il_step "login direct TLS" "$(il_ok $?)" "no online event or no clean close on the direct TLS port" "$T/alicetls.out" "$T/alicetls.err" "$T/alicetls.trace"
    il_line_quit bob >/dev/null 2>&1

    il_check_shared_roster_line "$lc_kind" "$lc_other"
}

# il_shared_roster_supported: the server under test accepts "roster = shared"; if not, says so
il_shared_roster_supported() {
    printf 'roster = shared\n' >"$T/roster-probe.conf"
    "$COUPLET" -c "$T/roster-probe.conf" check >/dev/null 2>&1 && return 0
    echo "interop $IL_CLIENT $IL_VERSION shared roster: not run (this server has no roster = shared)"
    return 1
}

# il_check_shared_roster_line KIND OTHER: with roster = shared, alice (KIND) sees bob (OTHER) in her roster
# and receives his available presence without either adding the other
il_check_shared_roster_line() {
    il_shared_roster_supported || return 0
    il_start_server "roster = shared" || { il_step "shared roster" fail "the server did not start with roster = shared"; return 1; }
    il_mark
    il_line_start sralice "$1" alice@localhost && il_line_expect sralice "^roster" 5 &&
        il_line_start srbob "$2" bob@localhost &&
        il_line_expect sralice "^presence bob@localhost/[^ ]+ available" 5 &&
        grep -Eq "^roster( .*)? bob@localhost( |\$)" "$T/sralice.out"
    il_step "shared roster" "$(il_ok $?)" "alice's roster lacks bob@localhost or his presence did not reach her" "$T/sralice.out" "$T/srbob.out" "$T/sralice.trace"
    il_line_quit srbob >/dev/null 2>&1
    il_line_quit sralice >/dev/null 2>&1
}
