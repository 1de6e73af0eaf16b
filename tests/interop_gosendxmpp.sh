#!/bin/sh
# interop_gosendxmpp.sh COUPLET [INTEROP_STROPHE]: the interoperability matrix's column for go-sendxmpp
# (Debian's go-sendxmpp, on the go-xmpp library): it sends one message per run (to a user, or to a room
# with -c, with --muc-password for a protected one) and listens with -l. The other side is a line client.
IL_CLIENT=go-sendxmpp
. "$(dirname "$0")/interop_lib.sh"
il_init "$1" "$2"
if ! command -v go-sendxmpp >/dev/null 2>&1; then
    echo "go-sendxmpp: not installed, check not run"
    echo "interop $IL_CLIENT done"
    exit 0
fi
# the Debian package's version (the binary itself says 0.5.7-dev for 0.5.6+git20221206)
IL_VERSION=$(dpkg-query -W -f='${Version}' go-sendxmpp 2>/dev/null | sed 's/-[^-]*$//')
[ -n "$IL_VERSION" ] || IL_VERSION=$(go-sendxmpp --version 2>/dev/null | sed -n 's/^go-sendxmpp \([^ ]*\).*/\1/p' | head -n 1)
# its configuration file would be read from ~/.config: a HOME of its own keeps the user's out
export HOME="$T/home"
mkdir -p "$HOME"

# gsx [go-sendxmpp options...]: alice's go-sendxmpp against this server; -n: the certificate is self-signed
gsx() {
    timeout 20 go-sendxmpp -n -u alice@localhost -p "$PASSWORD" "$@"
}

other=$(il_other_kind)
il_start_with_bob "$other" rooms || { il_finish; exit 1; }

# STARTTLS: login and a message to bob; -d prints what it receives (the server's side of the stream)
il_mark
echo "hello over starttls" | gsx -d -j "127.0.0.1:$PORT" bob@localhost >"$T/gsx-starttls.out" 2>&1
rc=$?
[ $rc -eq 0 ] && il_bound_seen "alice@localhost/go-sendxmpp[^ ]*"
login=$?
il_step "login STARTTLS" "$(il_ok $login)" "go-sendxmpp exited $rc" "$T/gsx-starttls.out"
# go-xmpp offers PLAIN, DIGEST-MD5 and X-OAUTH2, no SCRAM: PLAIN over TLS is all it can do with Couplet.
# The mechanism is in the server's log where it records stanzas; otherwise it shows in what the client
# received (its -d output): PLAIN gets <success/> with no <challenge/> before it.
mech=$(sed -n "s/.*DEBUG <- #[0-9]* [^ ]* [^ ]* <auth .*mechanism='\([^']*\)'.*/\1/p" "$SLOG" | head -n 1)
if [ -z "$mech" ] && grep -q "<success" "$T/gsx-starttls.out"; then
    mech=PLAIN
    grep -q "<challenge" "$T/gsx-starttls.out" && mech="a challenge-response mechanism"
fi
case "$login:$mech" in
0:SCRAM-*) il_step "sasl ($mech)" pass ;;
0:PLAIN) il_step "sasl (PLAIN over TLS; go-xmpp has no SCRAM)" pass ;;
*) il_step "sasl (${mech:-none})" fail "expected a successful SCRAM (or PLAIN over TLS) authentication" "$T/gsx-starttls.out" ;;
esac
if [ $login -eq 0 ]; then
    il_line_expect bob "^msg alice@localhost/[^ ]+ hello over starttls\$"
    il_step "message send" "$(il_ok $?)" "bob did not get the message" "$T/bob.out" "$T/gsx-starttls.out"
else
    il_skip "no session: the login failed" "message send"
fi
il_login_iqs "alice@localhost/go-sendxmpp[^ ]*" recv "$T/gsx-starttls.out"
# direct TLS (XEP-0368): -t
il_mark
echo "hello over direct tls" | gsx -t -j "127.0.0.1:$TLSPORT" bob@localhost >"$T/gsx-tls.out" 2>&1
rc=$?
[ $rc -eq 0 ] && il_line_expect bob "^msg alice@localhost/[^ ]+ hello over direct tls\$"
il_step "login direct TLS" "$(il_ok $?)" "go-sendxmpp -t exited $rc or bob got nothing" "$T/gsx-tls.out" "$T/bob.out"

if [ $login -eq 0 ]; then
    # receiving: -l prints each message it gets
    il_mark
    # started directly (not through gsx) so that $! is timeout's, which passes the kill on
    timeout 20 go-sendxmpp -n -u alice@localhost -p "$PASSWORD" -l -j "127.0.0.1:$PORT" >"$T/gsx-listen.out" 2>&1 &
    lpid=$!
    IL_PIDS="$IL_PIDS $lpid"
    il_bound_seen "alice@localhost/go-sendxmpp[^ ]*" 10
    sleep 0.5
    il_line_send bob "msg alice@localhost hello listener"
    il_wait_for "$T/gsx-listen.out" "bob@localhost[^ ]*: hello listener" 5
    il_step "message receive" "$(il_ok $?)" "go-sendxmpp -l printed nothing for bob's message" "$T/gsx-listen.out"
    kill "$lpid" 2>/dev/null

    # a room: -c joins it, sends, leaves
    il_mark
    echo "good morning room" | gsx -c -a Gopher -j "127.0.0.1:$PORT" garden@conference.localhost >"$T/gsx-room.out" 2>&1
    rc=$?
    il_line_expect bob "^presence garden@conference.localhost/Gopher available"
    il_step "room join" "$(il_ok $?)" "bob did not see Gopher join (go-sendxmpp exited $rc)" "$T/gsx-room.out" "$T/bob.out"
    il_line_expect bob "^gc garden@conference.localhost/Gopher good morning room\$"
    il_step "groupchat send" "$(il_ok $?)" "bob did not get the groupchat message" "$T/gsx-room.out" "$T/bob.out"

    # -l -c: listens in the room
    il_mark
    timeout 20 go-sendxmpp -n -u alice@localhost -p "$PASSWORD" -l -c -a Listener -j "127.0.0.1:$PORT" \
        garden@conference.localhost >"$T/gsx-roomlisten.out" 2>&1 &
    lpid=$!
    IL_PIDS="$IL_PIDS $lpid"
    il_line_expect bob "^presence garden@conference.localhost/Listener available" 10
    il_line_send bob "gc garden@conference.localhost good morning Gopher"
    il_wait_for "$T/gsx-roomlisten.out" "garden@conference.localhost/Bob: good morning Gopher" 5
    il_step "groupchat receive" "$(il_ok $?)" "go-sendxmpp -l -c printed nothing for bob's groupchat message" "$T/gsx-roomlisten.out" "$T/bob.out"
    kill "$lpid" 2>/dev/null

    # the protected room, with --muc-password
    il_mark
    echo "let me in" | gsx -c -a Gopher --muc-password sesame -j "127.0.0.1:$PORT" vault@conference.localhost >"$T/gsx-vault.out" 2>&1
    rc=$?
    il_line_expect bob "^gc vault@conference.localhost/Gopher let me in\$"
    il_step "password room join" "$(il_ok $?)" "bob did not get Gopher's message in the protected room (exit $rc)" "$T/gsx-vault.out" "$T/bob.out"
else
    il_skip "no session: the login failed" "message receive" "room join" "groupchat send" "groupchat receive" \
        "password room join"
fi
il_line_quit bob >/dev/null 2>&1

# go-xmpp closes the TCP connection without a closing </stream:stream> (there is none in its code): the
# server logs "peer closed" rather than answering a close. Every go-sendxmpp session counts (the whole log).
IL_MARK=0
if [ $login -ne 0 ]; then
    il_skip "no session: the login failed" "logout"
elif il_logout_seen "alice@localhost/go-sendxmpp[^ ]*" 0; then
    il_step "logout" pass
else
    il_step "logout" unsupported "go-xmpp drops the connection without </stream:stream>; the server logged: $(grep -E 'alice@localhost/go-sendxmpp[^ ]*( closed| logged out)' "$SLOG" | tail -n 1 | sed 's/^[^ ]* //')"
fi

# shared roster: go-sendxmpp has no roster or presence output
if il_shared_roster_supported; then
    il_step "shared roster" unsupported "go-sendxmpp neither fetches nor shows a roster or presences"
fi
il_finish
