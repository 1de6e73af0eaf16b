#!/usr/bin/python3
"""slixmpp_check.py - Couplet as a real client library sees it: Debian's python3-slixmpp logs two accounts in
over STARTTLS with SCRAM-SHA-1 against the self-signed certificate, exchanges messages, pings the server, and
uses a password-protected room; a third login goes over direct TLS (XEP-0368). Prints one line per check and
"N passed, M failed".

usage: slixmpp_check.py PATH_TO_COUPLET
"""
import asyncio
import os
import shutil
import signal
import socket
import ssl
import subprocess
import sys
import tempfile
import time

import slixmpp

passed = failed = 0


def check(ok, what, got=""):
    global passed, failed
    if ok:
        passed += 1
        print("PASS " + what)
    else:
        failed += 1
        print("FAIL %s: got %r" % (what, got))


def free_port():
    s = socket.socket()
    s.bind(("127.0.0.1", 0))
    port = s.getsockname()[1]
    s.close()
    return port


class Bot(slixmpp.ClientXMPP):
    def __init__(self, jid, password, mech):
        super().__init__(jid, password, sasl_mech=mech)
        self.ssl_context.check_hostname = False
        self.ssl_context.verify_mode = ssl.CERT_NONE
        self.inbox = asyncio.Queue()
        self.mechanism = None
        self.register_plugin("xep_0199")
        self.register_plugin("xep_0030")
        self.register_plugin("xep_0045")
        self.register_plugin("xep_0004")
        self.add_event_handler("message", lambda m: self.inbox.put_nowait(m))
        self.room_messages = asyncio.Queue()
        self.add_event_handler("groupchat_message", lambda m: self.room_messages.put_nowait(m))
        self.presences = asyncio.Queue()
        self.add_event_handler("groupchat_presence", lambda p: self.presences.put_nowait(p))
        self.ready = asyncio.Event()
        self.add_event_handler("session_start", self.on_start)
        self.add_event_handler("auth_success", self.on_auth)

    def on_auth(self, stanza):
        self.mechanism = self["feature_mechanisms"].mech.name if self["feature_mechanisms"].mech else None

    async def on_start(self, event):
        self.send_presence()
        self.ready.set()


async def scenario(port, tls_port):
    romeo = Bot("romeo@localhost/orchard", "password", "SCRAM-SHA-1")
    juliet = Bot("juliet@localhost/balcony", "password", "SCRAM-SHA-256")
    for bot in (romeo, juliet):
        bot["feature_mechanisms"].unencrypted_plain = False
        bot.connect(("127.0.0.1", port))
    try:
        await asyncio.wait_for(asyncio.gather(romeo.ready.wait(), juliet.ready.wait()), 10)
    except asyncio.TimeoutError:
        check(False, "both clients log in over STARTTLS", "timeout")
        return
    tls = romeo.transport.get_extra_info("ssl_object") if romeo.transport else None
    check(tls is not None and tls.version() in ("TLSv1.2", "TLSv1.3"), "the stream is encrypted with TLS 1.2+",
          tls.version() if tls else None)
    check(romeo.mechanism == "SCRAM-SHA-1", "romeo logged in with SCRAM-SHA-1", romeo.mechanism)
    check(juliet.mechanism == "SCRAM-SHA-256", "juliet logged in with SCRAM-SHA-256", juliet.mechanism)
    check(str(romeo.boundjid) == "romeo@localhost/orchard", "romeo bound his resource", str(romeo.boundjid))

    romeo.send_message(mto="juliet@localhost/balcony", mbody="But soft, what light", mtype="chat")
    try:
        msg = await asyncio.wait_for(juliet.inbox.get(), 5)
        check(msg["body"] == "But soft, what light" and str(msg["from"]) == "romeo@localhost/orchard",
              "juliet receives romeo's message from his full JID", (msg["body"], str(msg["from"])))
    except asyncio.TimeoutError:
        check(False, "juliet receives romeo's message", "timeout")

    juliet.send_message(mto="romeo@localhost", mbody="Wherefore art thou", mtype="chat")
    try:
        msg = await asyncio.wait_for(romeo.inbox.get(), 5)
        check(msg["body"] == "Wherefore art thou", "romeo receives a message sent to his bare JID", msg["body"])
    except asyncio.TimeoutError:
        check(False, "romeo receives a message sent to his bare JID", "timeout")

    try:
        rtt = await romeo["xep_0199"].ping(jid="localhost", timeout=5)
        check(rtt is not None, "the server answers a XEP-0199 ping")
    except Exception as e:
        check(False, "the server answers a XEP-0199 ping", e)

    try:
        info = await romeo["xep_0030"].get_info(jid="localhost", timeout=5)
        feats = info["disco_info"]["features"]
        check("urn:xmpp:ping" in feats, "disco#info on the server lists ping", feats)
    except Exception as e:
        check(False, "disco#info on the server", e)

    await rooms(romeo, juliet)
    for bot in (romeo, juliet):
        bot.disconnect()
    await asyncio.sleep(0.5)
    await direct_tls(tls_port)


async def direct_tls(tls_port):
    """XEP-0368: TLS from the first byte on the direct TLS port, then SASL and binding as usual."""
    nurse = Bot("nurse@localhost/direct", "password", "SCRAM-SHA-256")
    nurse["feature_mechanisms"].unencrypted_plain = False
    nurse.connect(("127.0.0.1", tls_port), use_ssl=True)
    try:
        await asyncio.wait_for(nurse.ready.wait(), 10)
    except asyncio.TimeoutError:
        check(False, "a client logs in over direct TLS", "timeout")
        nurse.abort()
        return
    tls = nurse.transport.get_extra_info("ssl_object") if nurse.transport else None
    check(tls is not None and tls.version() in ("TLSv1.2", "TLSv1.3") and nurse.mechanism == "SCRAM-SHA-256",
          "a client logs in over direct TLS (XEP-0368) with SCRAM-SHA-256",
          (tls.version() if tls else None, nurse.mechanism))
    check(str(nurse.boundjid) == "nurse@localhost/direct", "it binds its resource over direct TLS",
          str(nurse.boundjid))
    ended = asyncio.Event()
    reasons = []
    nurse.add_event_handler("disconnected", lambda reason: (reasons.append(reason), ended.set()))
    nurse.disconnect(wait=3)
    try:
        await asyncio.wait_for(ended.wait(), 5)
        check(reasons == ["End of stream"], "the server answers its </stream:stream> with its own", reasons)
    except asyncio.TimeoutError:
        check(False, "the direct TLS stream closes", "timeout")


async def presence_from(bot, jid, timeout=5):
    """the next presence from jid, skipping others"""
    end = time.monotonic() + timeout
    while True:
        p = await asyncio.wait_for(bot.presences.get(), max(0.01, end - time.monotonic()))
        if str(p["from"]) == jid:
            return p


async def rooms(romeo, juliet):
    """XEP-0045 as a user does it: a password-protected room, a second account joins, chat, kick, ban."""
    room = "verona@conference.localhost"
    muc_r, muc_j = romeo["xep_0045"], juliet["xep_0045"]
    try:
        await muc_r.join_muc_wait(room, "Romeo", timeout=5)
        check(True, "romeo creates a room")
    except Exception as e:
        check(False, "romeo creates a room", e)
        return
    form = romeo["xep_0004"].make_form(ftype="submit")
    form.add_field(var="FORM_TYPE", value="http://jabber.org/protocol/muc#roomconfig", ftype="hidden")
    form.add_field(var="muc#roomconfig_roomsecret", value="cauldronburn")
    try:
        await muc_r.set_room_config(room, form, timeout=5)
        check(True, "romeo sets a room password with the config form")
    except Exception as e:
        check(False, "romeo sets a room password with the config form", e)
    try:
        await muc_j.join_muc_wait(room, "Juliet", timeout=5)
        check(False, "juliet is refused without the password", "joined")
    except slixmpp.exceptions.PresenceError as e:
        check(e.condition == "not-authorized", "juliet is refused without the password (not-authorized)", e.condition)
    except Exception as e:
        check(False, "juliet is refused without the password", e)
    try:
        joined = await muc_j.join_muc_wait(room, "Juliet", password="cauldronburn", timeout=5)
        nicks = [p["from"].resource for p in joined[2]]
        check("Romeo" in nicks, "juliet joins with the password and sees Romeo", nicks)
    except Exception as e:
        check(False, "juliet joins with the password", e)
        return
    while not juliet.room_messages.empty():
        juliet.room_messages.get_nowait()
    romeo.send_message(mto=room, mbody="Good morrow", mtype="groupchat")
    try:
        while True:
            m = await asyncio.wait_for(juliet.room_messages.get(), 5)
            if m["body"]:
                break
        check(m["body"] == "Good morrow" and str(m["from"]) == room + "/Romeo",
              "juliet receives romeo's groupchat message from room/Romeo", (m["body"], str(m["from"])))
    except asyncio.TimeoutError:
        check(False, "juliet receives romeo's groupchat message", "timeout")
    while not juliet.presences.empty():
        juliet.presences.get_nowait()
    try:
        await muc_r.set_role(room, "Juliet", "none", reason="begone", timeout=5)
        p = await presence_from(juliet, room + "/Juliet")
        codes = p["muc"]["status_codes"]
        check(p["type"] == "unavailable" and 307 in codes, "romeo kicks juliet: she gets unavailable with 307",
              (p["type"], codes))
    except Exception as e:
        check(False, "romeo kicks juliet", e)
    try:
        await muc_j.join_muc_wait(room, "Juliet", password="cauldronburn", timeout=5)
        while not juliet.presences.empty():
            juliet.presences.get_nowait()
        await muc_r.set_affiliation(room, "outcast", jid="juliet@localhost", reason="banished", timeout=5)
        p = await presence_from(juliet, room + "/Juliet")
        codes = p["muc"]["status_codes"]
        check(p["type"] == "unavailable" and 301 in codes, "romeo bans juliet: she gets unavailable with 301",
              (p["type"], codes))
    except Exception as e:
        check(False, "romeo bans juliet", e)
    try:
        await muc_j.join_muc_wait(room, "Juliet", password="cauldronburn", timeout=5)
        check(False, "a banned juliet cannot rejoin", "joined")
    except slixmpp.exceptions.PresenceError as e:
        check(e.condition == "forbidden", "a banned juliet cannot rejoin (forbidden)", e.condition)
    except Exception as e:
        check(False, "a banned juliet cannot rejoin", e)


def main():
    couplet = os.path.abspath(sys.argv[1])
    tmp = tempfile.mkdtemp(prefix="couplet-slixmpp-")
    port = free_port()
    tls_port = free_port()
    while tls_port == port:
        tls_port = free_port()
    conf = os.path.join(tmp, "couplet.conf")
    with open(conf, "w") as f:
        f.write("c2s_port = %d\nc2s_tls_port = %d\ndata_dir = %s/data\nlog_level = warn\n" % (port, tls_port, tmp))
    for user in ("romeo", "juliet", "nurse"):
        subprocess.run([couplet, "-c", conf, "adduser", user + "@localhost"], input=b"password\n", check=True)
    log = open(os.path.join(tmp, "server.log"), "w")
    server = subprocess.Popen([couplet, "-c", conf], stderr=log)
    try:
        for _ in range(100):
            try:
                socket.create_connection(("127.0.0.1", port), 0.2).close()
                break
            except OSError:
                time.sleep(0.05)
        asyncio.run(asyncio.wait_for(scenario(port, tls_port), 40))
    except asyncio.TimeoutError:
        check(False, "the slixmpp scenario finishes in time", "timeout")
    finally:
        server.send_signal(signal.SIGTERM)
        try:
            code = server.wait(5)
        except subprocess.TimeoutExpired:
            server.kill()
            code = "killed"
        check(code == 0, "the server exits 0 after SIGTERM", code)
        shutil.rmtree(tmp, ignore_errors=True)
    print("%d passed, %d failed" % (passed, failed))
    sys.exit(1 if failed else 0)


if __name__ == "__main__":
    main()
