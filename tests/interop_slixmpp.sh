#!/bin/sh
# interop_slixmpp.sh COUPLET [INTEROP_STROPHE]: the interoperability matrix's column for slixmpp (Debian's
# python3-slixmpp), through tests/interop_peer.py; the other side is the libstrophe program if built.
IL_CLIENT=slixmpp
. "$(dirname "$0")/interop_lib.sh"
il_init "$1" "$2"
if ! "$IL_PY" -c 'import slixmpp' 2>/dev/null; then
    echo "slixmpp: not installed, check not run"
    echo "interop $IL_CLIENT done"
    exit 0
fi
IL_VERSION=$("$IL_PY" -c 'import slixmpp; print(slixmpp.__version__)')
il_check_line_client slixmpp
il_finish
