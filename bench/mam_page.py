#!/usr/bin/python3
"""mam_page.py - what a room's archive costs: fills a persistent room with N messages (each reflected before the
next is counted), then pages through the whole archive with MAM (XEP-0313) and RSM pages of PAGE, timing the
walk and the server's CPU. A separate process on loopback, against a running server (bench/mam_page.sh starts
one on a free port with a temporary data directory).

usage: mam_page.py PORT SERVER_PID ARCHIVE_PATH [N] [PAGE]
Prints one line: RESULT messages=N fill_s= fill_server_cpu_s= fill_server_us_per_msg= archive_bytes=
bytes_per_msg= page=PAGE pages= walk_ms= walk_server_cpu_ms= walked=
"""
import base64
import os
import re
import socket
import sys
import time

ROOM = "bench@conference.localhost"
HDR = ("<?xml version='1.0'?><stream:stream to='localhost' xmlns='jabber:client' "
       "xmlns:stream='http://etherx.jabber.org/streams' version='1.0'>")


def cpu_s(pid):
    with open("/proc/%d/stat" % pid) as f:
        parts = f.read().rsplit(")", 1)[1].split()
    return (int(parts[11]) + int(parts[12])) / os.sysconf("SC_CLK_TCK")


class Conn:
    def __init__(self, port):
        self.s = socket.create_connection(("127.0.0.1", port), 5)
        self.s.settimeout(30)
        self.buf = b""

    def send(self, text):
        self.s.sendall(text.encode())

    def until(self, pattern):
        """reads until pattern (a regex on bytes) matches; returns the match, consumes up to its end"""
        rx = re.compile(pattern, re.S)
        deadline = time.monotonic() + 20
        while True:
            m = rx.search(self.buf)
            if m:
                self.buf = self.buf[m.end():]
                return m
            if time.monotonic() > deadline:
                raise TimeoutError("%r; last bytes: %r" % (pattern, self.buf[-300:]))
            data = self.s.recv(1 << 20)
            if not data:
                raise ConnectionError("closed while waiting for %r" % pattern)
            self.buf += data


def login(port, user):
    c = Conn(port)
    c.send(HDR)
    c.until(rb"</stream:features>")
    c.send("<auth xmlns='urn:ietf:params:xml:ns:xmpp-sasl' mechanism='PLAIN'>%s</auth>"
           % base64.b64encode(("\0%s\0password" % user).encode()).decode())
    c.until(rb"<success")
    c.send(HDR)
    c.until(rb"</stream:features>")
    c.send("<iq type='set' id='b'><bind xmlns='urn:ietf:params:xml:ns:xmpp-bind'/></iq>")
    c.until(rb"id='b'[^>]*type='result'|type='result'[^>]*id='b'")
    return c


def main():
    port, pid, path = int(sys.argv[1]), int(sys.argv[2]), sys.argv[3]
    n = int(sys.argv[4]) if len(sys.argv) > 4 else 10000
    page = int(sys.argv[5]) if len(sys.argv) > 5 else 50
    c = login(port, "user0")
    c.send("<presence to='%s/bench'><x xmlns='http://jabber.org/protocol/muc'><history maxstanzas='0'/></x></presence>" % ROOM)
    c.until(rb"code='110'")
    c.send("<iq type='set' id='cfg' to='%s'><query xmlns='http://jabber.org/protocol/muc#owner'>"
           "<x xmlns='jabber:x:data' type='submit'><field var='muc#roomconfig_persistentroom'><value>1</value></field>"
           "</x></query></iq>" % ROOM)
    c.until(rb"id='cfg'")
    body = "x" * 100
    t0, c0 = time.monotonic(), cpu_s(pid)
    window = 64
    sent = got = 0
    while got < n:
        while sent < n and sent - got < window:
            c.send("<message type='groupchat' to='%s' id='m%d'><body>%d %s</body></message>" % (ROOM, sent, sent, body))
            sent += 1
        c.until(rb"</message>")
        got += 1
    fill_s, fill_cpu = time.monotonic() - t0, cpu_s(pid) - c0
    size = os.path.getsize(path)
    t0, c0 = time.monotonic(), cpu_s(pid)
    after, pages, walked = None, 0, 0
    while pages < n // max(page, 1) + 10:
        rsm = "<max>%d</max>" % page + ("<after>%s</after>" % after if after else "")
        c.send("<iq type='set' id='q%d' to='%s'><query xmlns='urn:xmpp:mam:2' queryid='w%d'>"
               "<set xmlns='http://jabber.org/protocol/rsm'>%s</set></query></iq>" % (pages, ROOM, pages, rsm))
        m = c.until(rb"\A(.*?)<iq[^>]*id='q%d'[^>]*>(.*?)</iq>" % pages)
        walked += m.group(1).count(b"<result xmlns='urn:xmpp:mam:2'")
        pages += 1
        last = re.search(rb"<last>([^<]+)</last>", m.group(2))
        if b"complete='true'" in m.group(2) or not last:
            break
        after = last.group(1).decode()
    walk_s, walk_cpu = time.monotonic() - t0, cpu_s(pid) - c0
    print("RESULT messages=%d fill_s=%.3f fill_server_cpu_s=%.3f fill_server_us_per_msg=%.1f archive_bytes=%d "
          "bytes_per_msg=%.1f page=%d pages=%d walk_ms=%.1f walk_server_cpu_ms=%.1f walked=%d"
          % (n, fill_s, fill_cpu, fill_cpu * 1e6 / n, size, size / n, page, pages, walk_s * 1e3, walk_cpu * 1e3,
             walked))
    sys.exit(0 if walked == n else 1)


if __name__ == "__main__":
    main()
