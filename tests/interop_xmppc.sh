#!/bin/sh
# interop_xmppc.sh COUPLET [INTEROP_STROPHE]: the interoperability matrix's column for xmppc (Debian's
# xmppc, on libstrophe). xmppc takes no host or port: it dials the JID's domain on 5222 (or what DNS SRV
# records say). tests/interop_portmap.c, preloaded, sends its loopback connect() on 5222 to the test's free
# port instead; the bytes it sends are its own. Its certificate check uses OpenSSL's default store, which
# SSL_CERT_FILE points at the server's self-signed certificate. The other side is a line client.
IL_CLIENT=xmppc
. "$(dirname "$0")/interop_lib.sh"
il_init "$1" "$2"
if ! command -v xmppc >/dev/null 2>&1; then
    echo "xmppc: not installed, check not run"
    echo "interop $IL_CLIENT done"
    exit 0
fi
IL_VERSION=$(xmppc --help 2>&1 | sed -n 's/^xmppc \([0-9][^ ]*\).*/\1/p' | head -n 1)
[ -n "$IL_VERSION" ] || IL_VERSION=unknown
if ! cc -shared -fPIC -o "$T/portmap.so" "$IL_ROOT/tests/interop_portmap.c" -ldl 2>"$T/portmap.err"; then
    echo "xmppc: the port redirection shim does not build (no C compiler?), check not run"
    cat "$T/portmap.err"
    echo "interop $IL_CLIENT done"
    exit 0
fi
# xmppc insists on a configuration file even with --jid and --pwd
export HOME="$T/home"
mkdir -p "$HOME/.config"
printf '[default]\njid=alice@localhost\npwd=%s\n' "$PASSWORD" >"$HOME/.config/xmppc.conf"

# xc [xmppc arguments...]: alice's xmppc against this server
xc() {
    # RES_OPTIONS: libstrophe first asks DNS for SRV records of localhost; a slow resolver must not stall it
    SSL_CERT_FILE="$CERT" INTEROP_PORTMAP="5222:$PORT" LD_PRELOAD="$T/portmap.so" RES_OPTIONS="timeout:1 attempts:1" \
        timeout 20 xmppc -j alice@localhost -p "$PASSWORD" "$@"
}

other=$(il_other_kind)
il_start_with_bob "$other" || { il_finish; exit 1; }

# receiving: the stanza monitor prints what arrives (line-buffered: it runs until it is stopped)
il_mark
# (started directly, not through xc, so that $! is timeout's, which passes the kill on)
SSL_CERT_FILE="$CERT" INTEROP_PORTMAP="5222:$PORT" LD_PRELOAD="$T/portmap.so" RES_OPTIONS="timeout:1 attempts:1" \
    timeout 30 stdbuf -oL xmppc -j alice@localhost -p "$PASSWORD" -v -v -v -v -m monitor stanza \
    >"$T/xmppc-monitor.out" 2>"$T/xmppc-monitor.trace" &
mpid=$!
IL_PIDS="$IL_PIDS $mpid"
# sending: message mode logs in, sleeps 10 s after binding, sends, closes its stream; -v -v -v -v
# is libstrophe's debug log (every stanza) on stderr
SSL_CERT_FILE="$CERT" INTEROP_PORTMAP="5222:$PORT" LD_PRELOAD="$T/portmap.so" RES_OPTIONS="timeout:1 attempts:1" \
    timeout 30 xmppc -j alice@localhost -p "$PASSWORD" -v -v -v -v -m message chat bob@localhost "hello from xmppc" \
    >"$T/xmppc-send.out" 2>"$T/xmppc-send.trace" &
spid=$!
IL_PIDS="$IL_PIDS $spid"
# bound, or refused: libstrophe reports either in its log
il_wait_for "$T/xmppc-send.trace" "Bind successful|auth failed|[Aa]uthentication failed|Connection failed|disconnect" 10
grep -q "Bind successful" "$T/xmppc-send.trace"
login=$?
il_step "login STARTTLS" "$(il_ok $login)" "no resource bound" "$T/xmppc-send.trace" "$T/xmppc-send.out"
mech=$(sed -n 's/.*SENT: <auth mechanism="\([^"]*\)".*/\1/p' "$T/xmppc-send.trace" | head -n 1)
case "$login:$mech" in
0:SCRAM-*) il_step "sasl ($mech)" pass ;;
*) il_step "sasl (${mech:-none})" fail "expected a successful SCRAM authentication" "$T/xmppc-send.trace" ;;
esac
if [ $login -eq 0 ]; then
    il_wait_for "$T/xmppc-monitor.out" "<presence" 10
    il_line_send bob "msg alice@localhost hello monitor"
    il_wait_for "$T/xmppc-monitor.out" "<body>hello monitor</body>" 5
    r=$?
    il_line_expect bob "^msg alice@localhost/[^ ]+ hello from xmppc\$" 16
    il_step "message send" "$(il_ok $?)" "bob did not get xmppc's message" "$T/bob.out" "$T/xmppc-send.trace"
    il_step "message receive" "$(il_ok $r)" "the stanza monitor did not show bob's message" "$T/xmppc-monitor.out" "$T/xmppc-monitor.trace"
    sendjid=$(sed -n 's/.*<jid>\(alice@localhost[^<]*\)<.*/\1/p' "$T/xmppc-send.trace" | head -n 1)
    il_wait_for "$T/xmppc-send.trace" "RECV: </stream:stream>" 5 && grep -q "SENT: </stream:stream>" "$T/xmppc-send.trace" &&
        il_logout_seen "$sendjid"
    il_step "logout" "$(il_ok $?)" "no closing handshake" "$T/xmppc-send.trace"
else
    il_skip "no session: the login failed" "message send" "message receive" "logout"
fi
kill "$mpid" 2>/dev/null
echo "interop $IL_CLIENT $IL_VERSION login: (message mode)"
il_login_iqs "$(sed -n 's/.*<jid>\(alice@localhost[^<]*\)<.*/\1/p' "$T/xmppc-send.trace" | head -n 1)" trace "$T/xmppc-send.trace"
echo "interop $IL_CLIENT $IL_VERSION login: (monitor mode)"
il_login_iqs "$(sed -n 's/.*<jid>\(alice@localhost[^<]*\)<.*/\1/p' "$T/xmppc-monitor.trace" | head -n 1)" trace "$T/xmppc-monitor.trace"
il_step "login direct TLS" unsupported "xmppc has no host, port or direct TLS option; only DNS SRV records could point it there"
for s in "room join" "groupchat send" "groupchat receive" "password room join"; do
    il_step "$s" unsupported "xmppc $IL_VERSION has no multi-user chat mode"
done
wait "$spid" 2>/dev/null
il_line_quit bob >/dev/null 2>&1

# shared roster: "-m roster list" prints the roster; xmppc has no way to show presences
if il_shared_roster_supported; then
    il_start_server "roster = shared" || { il_step "shared roster" fail "the server did not start"; il_finish; exit 1; }
    il_mark
    il_line_start srbob "$other" bob@localhost
    xc -m roster list >"$T/xmppc-roster.out" 2>&1
    grep -q "bob@localhost" "$T/xmppc-roster.out"
    il_step "shared roster (roster list only: xmppc shows no presence)" "$(il_ok $?)" "bob@localhost is not in the roster xmppc lists" "$T/xmppc-roster.out"
    il_line_quit srbob >/dev/null 2>&1
fi
il_finish
