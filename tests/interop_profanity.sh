#!/bin/sh
# interop_profanity.sh COUPLET [INTEROP_STROPHE]: the interoperability matrix's column for Profanity
# (Debian's profanity, on libstrophe), driven headlessly inside tmux: commands are typed with send-keys and
# what it shows is read with capture-pane. It runs with a HOME of its own (accounts file, configuration,
# logs), so nothing of the user's is read or written. Its certificate check uses OpenSSL's default store,
# which SSL_CERT_FILE points at the server's self-signed certificate. The other side is a line client.
IL_CLIENT=profanity
. "$(dirname "$0")/interop_lib.sh"
il_init "$1" "$2"
for tool in profanity tmux; do
    if ! command -v $tool >/dev/null 2>&1; then
        echo "profanity: not installed, check not run ($tool is missing)"
        echo "interop $IL_CLIENT done"
        exit 0
    fi
done
IL_VERSION=$(profanity --version 2>/dev/null | sed -n 's/^Profanity, version \([^ ]*\).*/\1/p' | head -n 1)
[ -n "$IL_VERSION" ] || IL_VERSION=unknown
export HOME="$T/home"
mkdir -p "$HOME/.local/share/profanity" "$HOME/.config/profanity"
IL_TMUX="$T/tmux.sock"

# prof_start NAME PORT TLS_POLICY: profanity as alice in a new tmux session NAME, debug log in $T/NAME.log
prof_start() {
    cat >"$HOME/.local/share/profanity/accounts" <<ACCOUNTS
[alice]
enabled=true
jid=alice@localhost
server=127.0.0.1
port=$2
password=$PASSWORD
resource=profanity
tls.policy=$3
ACCOUNTS
    tmux -S "$IL_TMUX" new-session -d -s "$1" -x 200 -y 50 \
        "SSL_CERT_FILE='$CERT' exec profanity -a alice -l DEBUG -f '$T/$1.log'" || return 1
    PANE="$T/$1.pane"
    SESSION=$1
    prof_wait "logged in successfully|[Ll]ogin failed|[Cc]onnection.*failed|[Cc]ertificate" 15 &&
        prof_wait "logged in successfully" 0
}

# prof_type TEXT: types a line into profanity and presses Enter
prof_type() {
    tmux -S "$IL_TMUX" send-keys -t "$SESSION" -l "$1" && tmux -S "$IL_TMUX" send-keys -t "$SESSION" Enter
}

# prof_wait EXTENDED_REGEX SECONDS [TITLE_REGEX]: waits until the visible window shows a match (and its
# title line, the first, matches TITLE_REGEX); the window's text is left in $PANE
prof_wait() {
    end=$(( $(date +%s) + $2 ))
    while :; do
        tmux -S "$IL_TMUX" capture-pane -p -J -t "$SESSION" -S -200 >"$PANE" 2>/dev/null
        grep -Eq -- "$1" "$PANE" && { [ -z "$3" ] || head -n 1 "$PANE" | grep -Eq -- "$3"; } && return 0
        [ "$(date +%s)" -ge "$end" ] && return 1
        sleep 0.2
    done
}

# prof_quit: /quit, and the session's end
prof_quit() {
    prof_type "/quit"
    il_tmux_wait_gone 5
}

other=$(il_other_kind)
il_start_with_bob "$other" rooms || { il_finish; exit 1; }

# STARTTLS, the certificate checked (tls.policy force)
il_mark
prof_start starttls "$PORT" force
login=$?
il_step "login STARTTLS" "$(il_ok $login)" "profanity did not log in" "$PANE" "$T/starttls.log"
mech=$(sed -n 's/.*SENT: <auth mechanism="\([^"]*\)".*/\1/p' "$T/starttls.log" | head -n 1)
case "$login:$mech" in
0:SCRAM-*) il_step "sasl ($mech)" pass ;;
*) il_step "sasl (${mech:-none})" fail "expected a successful SCRAM authentication" "$T/starttls.log" ;;
esac
session_steps() {
    # its login sequence settles before the first command (the IQ answers are in its log)
    sleep 1

    il_mark
    prof_type "/msg bob@localhost hello from profanity"
    il_line_expect bob "^msg alice@localhost/profanity hello from profanity\$"
    il_step "message send" "$(il_ok $?)" "bob did not get the message" "$T/bob.out" "$T/starttls.log"
    il_mark
    il_line_send bob "msg alice@localhost hello back"
    prof_wait "bob@localhost[^ ]*: hello back" 5 "^ *bob@localhost"
    il_step "message receive" "$(il_ok $?)" "profanity's chat window does not show bob's message" "$PANE" "$T/starttls.log"

    il_mark
    prof_type "/join garden@conference.localhost nick Prof"
    prof_wait "You have joined the room as Prof" 5 "^ *garden " && il_line_expect bob "^presence garden@conference.localhost/Prof available"
    il_step "room join" "$(il_ok $?)" "profanity did not show the join, or bob did not see Prof" "$PANE" "$T/bob.out" "$T/starttls.log"
    il_mark
    prof_type "hello room from profanity"
    il_line_expect bob "^gc garden@conference.localhost/Prof hello room from profanity\$"
    il_step "groupchat send" "$(il_ok $?)" "bob did not get the groupchat message" "$T/bob.out" "$T/starttls.log"
    il_mark
    il_line_send bob "gc garden@conference.localhost good morning Prof"
    prof_wait "Bob: good morning Prof" 5 "^ *garden "
    il_step "groupchat receive" "$(il_ok $?)" "profanity's room window does not show bob's message" "$PANE" "$T/starttls.log"

    il_mark
    prof_type "/join vault@conference.localhost nick Prof password sesame"
    prof_wait "You have joined the room as Prof" 5 "^ *vault " && il_line_expect bob "^presence vault@conference.localhost/Prof available"
    il_step "password room join" "$(il_ok $?)" "profanity could not join the protected room" "$PANE" "$T/starttls.log"

    il_mark
    prof_quit
    grep -q "SENT: </stream:stream>" "$T/starttls.log" && il_logout_seen "alice@localhost/profanity"
    il_step "logout" "$(il_ok $?)" "no closing handshake after /quit" "$T/starttls.log"
    il_login_iqs "alice@localhost/profanity" trace "$T/starttls.log"
}
if [ $login -eq 0 ]; then
    session_steps
else
    prof_quit
    il_skip "no session: the login failed" "message send" "message receive" "room join" "groupchat send" \
        "groupchat receive" "password room join" "logout"
fi

# direct TLS (tls.policy legacy: TLS from the first byte)
il_mark
prof_start directtls "$TLSPORT" legacy
r=$?
prof_quit
[ $r -eq 0 ] && il_logout_seen "alice@localhost/profanity"
il_step "login direct TLS" "$(il_ok $?)" "profanity did not log in (or out) on the direct TLS port" "$PANE" "$T/directtls.log"
il_line_quit bob >/dev/null 2>&1

# shared roster: profanity's roster panel lists bob as online without anyone having added anyone
if il_shared_roster_supported; then
    il_start_server "roster = shared" || { il_step "shared roster" fail "the server did not start"; il_finish; exit 1; }
    il_mark
    prof_start shared "$PORT" force && il_line_start srbob "$other" bob@localhost &&
        prof_wait "bob@localhost.* is online" 5
    il_step "shared roster" "$(il_ok $?)" "profanity's roster panel does not show bob online" "$PANE" "$T/shared.log"
    prof_quit
    il_line_quit srbob >/dev/null 2>&1
fi
il_finish
