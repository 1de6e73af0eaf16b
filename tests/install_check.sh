#!/bin/sh
# install_check.sh - `make install` into scratch directories: every file where it belongs with its mode, the
# installed binary runs, the manual page renders without a warning and documents every configuration key,
# the systemd unit names the installed binary and passes `systemd-analyze verify`. A tool that is missing
# makes its step "not run". Usage: sh tests/install_check.sh [BUILD]. Last line: "install: N passed, M failed".
cd "$(dirname "$0")/.." || exit 2
build=${1:-build}
pass=0
fail=0
dest=$(mktemp -d) || exit 2
prefix=$(mktemp -d) || exit 2
trap 'rm -rf "$dest" "$prefix"' EXIT

# check WHAT CMD...: one check, its output shown only when it fails
check() {
    what=$1
    shift
    if out=$("$@" 2>&1); then
        pass=$((pass + 1))
    else
        fail=$((fail + 1))
        echo "FAIL install: $what"
        [ -n "$out" ] && echo "$out" | head -n 20
    fi
}
# quiet CMD...: succeeds when CMD succeeds and prints nothing (renderers' warnings count as failures)
quiet() {
    o=$("$@" 2>&1 >/dev/null) && [ -z "$o" ] || { echo "$o"; return 1; }
}
has_mode() { [ -f "$1" ] && [ "$(stat -c %a "$1")" = "$2" ]; }

check "make install DESTDIR=$dest" make -s BUILD="$build" install DESTDIR="$dest"
root=$dest/usr/local
check "sbin/couplet, mode 755" has_mode "$root/sbin/couplet" 755
check "man8/couplet.8, mode 644" has_mode "$root/share/man/man8/couplet.8" 644
check "doc/couplet/couplet.conf.example, mode 644" has_mode "$root/share/doc/couplet/couplet.conf.example" 644
check "systemd/system/couplet.service, mode 644" has_mode "$root/lib/systemd/system/couplet.service" 644
check "the installed binary runs" "$root/sbin/couplet" -c "$root/share/doc/couplet/couplet.conf.example" check
check "the unit starts the installed binary" grep -qx \
    'ExecStart=/usr/local/sbin/couplet -c /etc/couplet/couplet.conf' "$root/lib/systemd/system/couplet.service"
for line in 'User=couplet' 'NoNewPrivileges=yes' 'CapabilityBoundingSet=' 'ProtectSystem=strict' \
            'ReadWritePaths=/var/lib/couplet' 'PrivateTmp=yes' 'ProtectHome=yes'; do
    check "the unit has $line" grep -qx "$line" "$root/lib/systemd/system/couplet.service"
done
check "the unit says how to allow ports below 1024" grep -q 'CAP_NET_BIND_SERVICE' \
    "$root/lib/systemd/system/couplet.service"

# every key of the example configuration is documented in the manual page
man8=$root/share/man/man8/couplet.8
missing=
for key in $(sed -n 's/^\([a-z_0-9]*\) = .*/\1/p' couplet.conf.example); do
    grep -Eq "^\.BR? (.*[^a-z_])?$key([^a-z_0-9]|\$)" "$man8" || missing="$missing $key"
done
check "every configuration key is in the manual page (missing:$missing)" [ -z "$missing" ]

ran=0
if command -v groff >/dev/null; then
    check "groff -man -ww renders the page without a warning" quiet groff -man -Tutf8 -ww -z "$man8"
    ran=1
fi
if command -v mandoc >/dev/null; then
    check "mandoc -T lint finds nothing" quiet mandoc -T lint -W warning "$man8"
    ran=1
fi
if command -v man >/dev/null; then
    check "man -l renders the page" quiet env MANWIDTH=80 man -l "$man8"
    ran=1
fi
[ "$ran" = 1 ] || echo "install: no groff, mandoc or man here: the manual page was not rendered (not run)"

# with a real PREFIX the unit's paths exist, so systemd-analyze can check all of it (the man page included)
check "make install PREFIX=$prefix" make -s BUILD="$build" install PREFIX="$prefix"
check "the unit follows PREFIX" grep -qx "ExecStart=$prefix/sbin/couplet -c /etc/couplet/couplet.conf" \
    "$prefix/lib/systemd/system/couplet.service"
if command -v systemd-analyze >/dev/null; then
    check "systemd-analyze verify couplet.service" quiet env MANPATH="$prefix/share/man" \
        systemd-analyze verify "$prefix/lib/systemd/system/couplet.service"
else
    echo "install: systemd-analyze is not installed: the unit was not verified (not run)"
fi
echo "install: $pass passed, $fail failed"
[ "$fail" -eq 0 ]
