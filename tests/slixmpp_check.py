#!/usr/bin/python3
"""slixmpp_check.py - Couplet as a real client library sees it: Debian's python3-slixmpp logs two accounts in
over STARTTLS with SCRAM-SHA-1 against the self-signed certificate, exchanges messages, pings the server, and
uses rooms as today's clients do (a locked new room made instant, a password room configured by submitting
the whole form, one nick from two devices, MUC self-ping); a third login goes over direct TLS (XEP-0368).
Then the server is restarted and the room's archive is read with MAM (XEP-0313), and killed with SIGKILL
while messages are being archived: every message the room reflected must be in the archive after the next
start. Prints one line per check and "N passed, M failed".

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
        self.register_plugin("xep_0313")
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
    await rooms_today(romeo, juliet, port)
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


async def drain(q):
    while not q.empty():
        q.get_nowait()


async def rooms_today(romeo, juliet, port):
    """What current clients do with rooms: instant rooms, whole-form configuration, several devices, self-ping."""
    room = "capulet@conference.localhost"
    muc_r, muc_j = romeo["xep_0045"], juliet["xep_0045"]
    try:
        joined = await muc_r.join_muc_wait(room, "Romeo", timeout=5)
        codes = joined[0]["muc"]["status_codes"]
        check(201 in codes and 110 in codes, "a new room says 201 (created, awaiting configuration)", codes)
    except Exception as e:
        check(False, "romeo creates a second room", e)
        return
    try:
        await muc_j.join_muc_wait(room, "Juliet", timeout=5)
        check(False, "the locked room refuses juliet", "joined")
    except slixmpp.exceptions.PresenceError as e:
        check(e.condition == "item-not-found", "the new room is locked: juliet gets item-not-found", e.condition)
    except Exception as e:
        check(False, "the locked room refuses juliet", e)
    try:
        await muc_r.set_room_config(room, romeo["xep_0004"].make_form(ftype="submit"), timeout=5)
        await muc_j.join_muc_wait(room, "Juliet", timeout=5)
        check(True, "an empty submitted form makes it an instant room, and juliet joins")
    except Exception as e:
        check(False, "the instant room opens", e)
        return
    # one nick from two devices: one occupant, both devices get the room's messages
    phone = Bot("juliet@localhost/phone", "password", "SCRAM-SHA-1")
    phone["feature_mechanisms"].unencrypted_plain = False
    phone.connect(("127.0.0.1", port))
    try:
        await asyncio.wait_for(phone.ready.wait(), 10)
        await drain(romeo.presences)
        await phone["xep_0045"].join_muc_wait(room, "Juliet", timeout=5)
        check(True, "juliet's phone joins under the same nick")
        try:
            p = await presence_from(romeo, room + "/Juliet", 0.7)
            check(False, "romeo sees one juliet, not a second join", p)
        except asyncio.TimeoutError:
            check(True, "romeo sees one juliet, not a second join")
        await drain(juliet.room_messages)
        await drain(phone.room_messages)
        romeo.send_message(mto=room, mbody="to both devices", mtype="groupchat")
        got = []
        for bot in (juliet, phone):
            try:
                while True:
                    m = await asyncio.wait_for(bot.room_messages.get(), 5)
                    if m["body"]:
                        got.append(m["body"])
                        break
            except asyncio.TimeoutError:
                got.append(None)
        check(got == ["to both devices"] * 2, "a groupchat message reaches both of juliet's devices", got)
        try:
            await phone["xep_0199"].ping(jid=room + "/Juliet", timeout=5)
            check(True, "MUC self-ping (XEP-0410) from a joined device is answered by the room")
        except Exception as e:
            check(False, "MUC self-ping from a joined device", e)
        phone["xep_0045"].leave_muc(room, "Juliet")
        await asyncio.sleep(0.3)
        try:
            await phone["xep_0199"].ping(jid=room + "/Juliet", timeout=5)
            check(False, "self-ping from a device that left", "answered")
        except slixmpp.exceptions.IqError as e:
            check(e.condition == "not-acceptable", "self-ping from a device that left: not-acceptable", e.condition)
    except Exception as e:
        check(False, "juliet's second device", e)
    finally:
        phone.disconnect()
    # a password and persistence set by submitting the whole form back, the protection box left unchanged
    room = "montague@conference.localhost"
    try:
        await muc_r.join_muc_wait(room, "Romeo", timeout=5)
        form = await muc_r.get_room_config(room, timeout=5)
        fields = form.get_fields()
        check(fields["muc#roomconfig_passwordprotectedroom"]["value"] in (False, "0"),
              "the form shows the room unprotected", fields["muc#roomconfig_passwordprotectedroom"]["value"])
        fields["muc#roomconfig_roomsecret"]["value"] = "ring"
        fields["muc#roomconfig_persistentroom"]["value"] = True
        await muc_r.set_room_config(room, form, timeout=5)
        check(True, "romeo submits the whole form with a new secret")
    except Exception as e:
        check(False, "romeo configures the montague room with the whole form", e)
        return
    try:
        await muc_j.join_muc_wait(room, "Juliet", timeout=5)
        check(False, "the room is protected by the secret typed in the form", "joined")
    except slixmpp.exceptions.PresenceError as e:
        check(e.condition == "not-authorized", "the room is protected by the secret typed in the form", e.condition)
    await drain(romeo.room_messages)
    for i in range(3):
        romeo.send_message(mto=room, mbody="archived %d" % i, mtype="groupchat")
    got = []
    try:
        while len(got) < 3:
            m = await asyncio.wait_for(romeo.room_messages.get(), 5)
            if m["body"]:
                got.append(m["body"])
    except asyncio.TimeoutError:
        pass
    check(got == ["archived 0", "archived 1", "archived 2"], "three messages in the persistent room come back", got)


async def mam_bodies(bot, room):
    """the bodies of everything in the room's archive, oldest first, with RSM pages of 100"""
    bodies, after = [], None
    for _ in range(20):
        rsm = {"max": 100}
        if after:
            rsm["after"] = after
        iq = await bot["xep_0313"].retrieve(jid=room, rsm=rsm, timeout=10)
        res = iq["mam"]["results"]
        bodies += [m["mam_result"]["forwarded"]["stanza"]["body"] for m in res]
        after = iq["mam_fin"]["rsm"]["last"]
        if iq["mam_fin"]["complete"] in (True, "true") or not res:
            break
    return bodies


async def archive_after_restart(port, kill_and_restart):
    """The montague room's archive after a clean restart, and after SIGKILL in the middle of a burst."""
    room = "montague@conference.localhost"
    romeo = Bot("romeo@localhost/orchard", "password", "SCRAM-SHA-1")
    romeo["feature_mechanisms"].unencrypted_plain = False
    romeo.connect(("127.0.0.1", port))
    try:
        await asyncio.wait_for(romeo.ready.wait(), 10)
        await romeo["xep_0045"].join_muc_wait(room, "Romeo", timeout=5)
        bodies = await mam_bodies(romeo, room)
        check(bodies[-3:] == ["archived 0", "archived 1", "archived 2"],
              "after a restart, MAM (XEP-0313) returns the room's messages in order", bodies)
        await drain(romeo.room_messages)
        for i in range(200):
            romeo.send_message(mto=room, mbody="burst %d" % i, mtype="groupchat")
        reflected = []
        try:
            while len(reflected) < 40:
                m = await asyncio.wait_for(romeo.room_messages.get(), 5)
                if m["body"]:
                    reflected.append(m["body"])
        except asyncio.TimeoutError:
            pass
        kill_and_restart()
        await asyncio.sleep(0.2)
        while not romeo.room_messages.empty():      # what arrived before the kill also counts
            m = romeo.room_messages.get_nowait()
            if m["body"]:
                reflected.append(m["body"])
        romeo.abort()
    except Exception as e:
        check(False, "the burst before SIGKILL", e)
        romeo.abort()
        return
    again = Bot("romeo@localhost/again", "password", "SCRAM-SHA-1")
    again["feature_mechanisms"].unencrypted_plain = False
    again.connect(("127.0.0.1", port))
    try:
        await asyncio.wait_for(again.ready.wait(), 10)
        await again["xep_0045"].join_muc_wait(room, "Romeo", timeout=5)
        bodies = await mam_bodies(again, room)
        missing = [b for b in reflected if b not in bodies]
        check(len(reflected) >= 40 and not missing,
              "after SIGKILL mid-burst, all %d reflected messages are in the archive" % len(reflected), missing[:5])
        burst = [b for b in bodies if b.startswith("burst ")]
        check(burst == ["burst %d" % i for i in range(len(burst))],
              "the archive holds the burst in order, without holes (%d of 200 stored)" % len(burst), burst[:5])
    except Exception as e:
        check(False, "MAM after SIGKILL", e)
    finally:
        again.disconnect()
        await asyncio.sleep(0.3)


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

    def start():
        proc = subprocess.Popen([couplet, "-c", conf], stderr=log)
        for _ in range(100):
            try:
                socket.create_connection(("127.0.0.1", port), 0.2).close()
                break
            except OSError:
                time.sleep(0.05)
        return proc

    def stop(proc):
        proc.send_signal(signal.SIGTERM)
        try:
            return proc.wait(5)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()
            return "killed"

    server = start()
    try:
        asyncio.run(asyncio.wait_for(scenario(port, tls_port), 60))
    except asyncio.TimeoutError:
        check(False, "the slixmpp scenario finishes in time", "timeout")
    code = stop(server)
    check(code == 0, "the server exits 0 after SIGTERM", code)
    state = {"server": start()}

    def kill_and_restart():
        state["server"].kill()          # SIGKILL: no flush, no goodbye
        state["server"].wait()
        state["server"] = start()

    try:
        asyncio.run(asyncio.wait_for(archive_after_restart(port, kill_and_restart), 60))
    except asyncio.TimeoutError:
        check(False, "the archive checks finish in time", "timeout")
    finally:
        stop(state["server"])
        shutil.rmtree(tmp, ignore_errors=True)
    print("%d passed, %d failed" % (passed, failed))
    sys.exit(1 if failed else 0)


if __name__ == "__main__":
    main()
