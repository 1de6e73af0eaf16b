#!/bin/sh
# interop_strophe.sh COUPLET [INTEROP_STROPHE]: the interoperability matrix's column for libstrophe
# (Debian's libstrophe-dev), through tests/interop_strophe.c; the other side is slixmpp (tests/interop_peer.py).
IL_CLIENT=libstrophe
. "$(dirname "$0")/interop_lib.sh"
il_init "$1" "$2"
if [ -z "$IL_STROPHE" ]; then
    echo "libstrophe: not installed, check not run (no interop_strophe program: libstrophe-dev missing?)"
    echo "interop $IL_CLIENT done"
    exit 0
fi
IL_VERSION=$(dpkg-query -W -f='${Version}' libstrophe0 2>/dev/null | sed 's/-.*//')
[ -n "$IL_VERSION" ] || IL_VERSION=$(pkg-config --modversion libstrophe 2>/dev/null || echo unknown)
il_check_line_client strophe
il_finish
