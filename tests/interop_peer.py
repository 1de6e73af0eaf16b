#!/usr/bin/python3
"""interop_peer.py - a slixmpp (Debian's python3-slixmpp) client for the interoperability matrix
(tests/interop.sh, INTEROP.md), driven by one command per line on stdin and reporting one event per line
on stdout. It speaks the same line protocol as tests/interop_strophe.c (see there for the commands and
events), so either can be the client under test or the other side of a conversation.

usage: interop_peer.py [--tls] [--mech MECH] [--timeout SECONDS] [--trace FILE] JID PASSWORD HOST PORT
"""
import asyncio
import logging
import os
import ssl
import sys

import slixmpp

NS_MUC_USER = "http://jabber.org/protocol/muc#user"


def event(*words):
    sys.stdout.write(" ".join(str(w).replace("\n", " ").replace("\r", " ") for w in words) + "\n")
    sys.stdout.flush()


def condition(stanza):
    try:
        return stanza["error"]["condition"] or "unknown"
    except Exception:
        return "unknown"


class Peer(slixmpp.ClientXMPP):
    def __init__(self, jid, password, mech):
        super().__init__(jid, password, sasl_mech=mech)
        # the server's certificate is self-signed; this check is about XMPP, not about PKI
        self.ssl_context.check_hostname = False
        self.ssl_context.verify_mode = ssl.CERT_NONE
        self["feature_mechanisms"].unencrypted_plain = False
        for plugin in ("xep_0030", "xep_0045", "xep_0004", "xep_0199"):
            self.register_plugin(plugin)
        self.online = False
        self.quitting = False
        self.clean = False
        self.done = asyncio.Event()
        self.add_event_handler("session_start", self.on_start)
        self.add_event_handler("failed_auth", lambda _: self.fail("auth failed"))
        self.add_event_handler("connection_failed", lambda e: self.fail("connection failed: %s" % e))
        self.add_event_handler("disconnected", self.on_disconnected)
        self.add_event_handler("message", self.on_message)
        self.add_event_handler("groupchat_message", self.on_groupchat)
        self.add_event_handler("presence", self.on_presence)

    def fail(self, why):
        if not self.online:
            event("loginfail", why)
            self.done.set()

    async def on_start(self, _):
        self.online = True
        mech = self["feature_mechanisms"].mech
        tls = self.transport.get_extra_info("ssl_object") if self.transport else None
        event("online", self.boundjid.full, "mech=%s" % (mech.name if mech else "unknown"),
              "tls=%s" % ("yes" if tls else "no"))
        # what a small client does at login: ask for the roster, then say it is available
        await self.roster_get()
        self.send_presence()

    async def roster_get(self):
        try:
            result = await self.get_roster(timeout=5)
            items = result["roster"]["items"] if result is not None else {}
            event("roster", *sorted(str(j) for j in items))
        except slixmpp.exceptions.IqError as e:
            event("rostererror", condition(e.iq))
        except slixmpp.exceptions.IqTimeout:
            event("rostererror", "timeout")

    def on_disconnected(self, reason):
        if self.online:
            self.clean = self.quitting and reason == "End of stream"
            event("closed", "clean" if self.clean else "abrupt")
        else:
            event("loginfail", "disconnected: %s" % reason)
        self.done.set()

    def on_message(self, msg):
        if msg["type"] == "groupchat":
            return      # on_groupchat reports those
        if msg["type"] == "error":
            event("msgerror", msg["from"], condition(msg))
        elif msg["body"]:
            event("msg", msg["from"], msg["body"])

    def on_groupchat(self, msg):
        if msg["body"]:
            event("gc", msg["from"], msg["body"])

    def on_presence(self, pres):
        frm = pres["from"]
        if pres["type"] == "error":
            event("joinerror", frm.bare, condition(pres))
            return
        x = pres.xml.find("{%s}x" % NS_MUC_USER)
        if x is not None and pres["type"] != "unavailable":
            codes = [s.get("code") for s in x.findall("{%s}status" % NS_MUC_USER)]
            if "110" in codes and "201" in codes:
                # a new room is locked until its owner configures it: take the defaults (an instant room)
                asyncio.ensure_future(self.instant(frm.bare))
                return
            if "110" in codes:
                event("joined", frm.bare)
                return
        event("presence", frm.full, pres["type"] if pres["type"] in ("unavailable", "subscribe", "subscribed",
                                                                     "unsubscribe", "unsubscribed") else "available")

    def join(self, room, nick, password):
        pres = self.make_presence(pto="%s/%s" % (room, nick))
        x = slixmpp.xmlstream.ET.SubElement(pres.xml, "{http://jabber.org/protocol/muc}x")
        if password:
            slixmpp.xmlstream.ET.SubElement(x, "{http://jabber.org/protocol/muc}password").text = password
        pres.send()

    async def instant(self, room):
        try:
            await self["xep_0045"].set_room_config(room, self["xep_0004"].make_form(ftype="submit"), timeout=5)
            event("joined", room)
        except (slixmpp.exceptions.IqError, slixmpp.exceptions.IqTimeout) as e:
            event("joinerror", room, "instant room: %s" % e)

    async def secret(self, room, password):
        form = self["xep_0004"].make_form(ftype="submit")
        form.add_field(var="FORM_TYPE", value="http://jabber.org/protocol/muc#roomconfig", ftype="hidden")
        form.add_field(var="muc#roomconfig_roomsecret", value=password)
        form.add_field(var="muc#roomconfig_passwordprotectedroom", value="1")
        try:
            await self["xep_0045"].set_room_config(room, form, timeout=5)
            event("configured", room)
        except slixmpp.exceptions.IqError as e:
            event("configerror", room, condition(e.iq))
        except slixmpp.exceptions.IqTimeout:
            event("configerror", room, "timeout")

    async def command(self, line):
        words = line.strip().split(" ")
        cmd, args = words[0], words[1:]
        if not cmd or cmd.startswith("#"):
            return
        if cmd in ("msg", "gc") and len(args) >= 1:
            self.send_message(mto=args[0], mbody=" ".join(args[1:]), mtype="groupchat" if cmd == "gc" else "chat")
        elif cmd == "join" and len(args) >= 2:
            self.join(args[0], args[1], args[2] if len(args) > 2 else None)
        elif cmd == "secret" and len(args) == 2:
            await self.secret(args[0], args[1])
        elif cmd == "roster":
            await self.roster_get()
        elif cmd == "sleep" and args:
            await asyncio.sleep(float(args[0]))
        elif cmd == "quit":
            self.quitting = True
            self.disconnect(wait=3)
        else:
            event("badcommand", cmd)


async def run(jid, password, mech, host, port, direct_tls, timeout):
    peer = Peer(jid, password, mech)
    loop = asyncio.get_running_loop()
    lines = asyncio.Queue()
    pending = bytearray()

    def readable():
        # raw reads: a buffered readline() could hold back lines the fd no longer signals
        data = os.read(sys.stdin.fileno(), 4096)
        if not data:
            loop.remove_reader(sys.stdin.fileno())
            lines.put_nowait("")
            return
        pending.extend(data)
        while b"\n" in pending:
            line, _, rest = bytes(pending).partition(b"\n")
            pending[:] = rest
            lines.put_nowait(line.decode("utf-8", "replace") + "\n")

    loop.add_reader(sys.stdin.fileno(), readable)
    peer.connect((host, port), use_ssl=direct_tls, force_starttls=not direct_tls)

    async def commands():
        while not peer.online:
            await asyncio.sleep(0.02)
        while not peer.quitting:
            line = await lines.get()
            if line == "":         # stdin closed: the session ends
                line = "quit"
            await peer.command(line)

    task = asyncio.ensure_future(commands())
    try:
        await asyncio.wait_for(peer.done.wait(), timeout)
    except asyncio.TimeoutError:
        event("timeout")
    task.cancel()
    return peer.clean


def main():
    args = sys.argv[1:]
    direct_tls, mech, timeout, trace = False, None, 30.0, None
    while args and args[0].startswith("--"):
        opt = args.pop(0)
        if opt == "--tls":
            direct_tls = True
        elif opt == "--mech":
            mech = args.pop(0)
        elif opt == "--timeout":
            timeout = float(args.pop(0))
        elif opt == "--trace":
            trace = args.pop(0)
        else:
            sys.exit(__doc__)
    if len(args) != 4:
        sys.exit(__doc__)
    if trace:
        # slixmpp logs every stanza it sends and receives at debug level ("SEND: ...", "RECV: ...")
        logging.basicConfig(filename=trace, level=logging.DEBUG, format="%(name)s %(message)s")
    clean = asyncio.run(run(args[0], args[1], mech, args[2], int(args[3]), direct_tls, timeout))
    sys.exit(0 if clean else 1)


if __name__ == "__main__":
    main()
