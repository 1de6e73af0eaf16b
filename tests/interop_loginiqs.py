#!/usr/bin/python3
"""interop_loginiqs.py - what a client asked the server right after logging in, for the interoperability
matrix (tests/interop.sh, INTEROP.md): read from the server's debug log where it records stanzas, else from
the client's own XML trace.

usage: interop_loginiqs.py FORMAT TRACE [JID_REGEX]
  FORMAT  server: Couplet's debug log, which records each stanza of a connection as "<- #N PEER NAME XML"
                  (received) and "-> #N PEER NAME XML" (sent); the connection is the first whose NAME (its
                  full JID once bound) matches JID_REGEX
          trace:  lines holding "SENT: <stanza>" / "SEND: <stanza>" and "RECV: <stanza>" (libstrophe's log as
                  xmppc -v, profanity -l DEBUG and interop_strophe write it; slixmpp's debug log)
          loudmouth: mcabber's trace (tracelog_level 3): "LM-NET: SEND:" / "LM-NET: RECV [n]:", then the XML
          recv:   the raw stream a client received, without what it sent (go-sendxmpp -d)
Prints one line per IQ sent between resource binding and the client's first message or directed presence
(its login sequence), with the server's answer, then the initial presence.
"""
import re
import sys
import xml.etree.ElementTree as ET

STANZAS = "urn:ietf:params:xml:ns:xmpp-stanzas"


def parse(text):
    # a stanza as the trace shows it; the stream's prefixes are declared for the parser's sake
    text = text.strip()
    text = re.sub(r"^<(iq|message|presence)\b", r'<\1 xmlns:stream="http://etherx.jabber.org/streams"', text)
    try:
        return ET.fromstring(text)
    except ET.ParseError:
        return None


def local(tag):
    return tag.split("}", 1)[-1]


def ns_of(tag):
    return tag[1:].split("}", 1)[0] if tag.startswith("{") else ""


def describe_payload(el):
    kids = list(el)
    if not kids:
        return "(empty)"
    k = kids[0]
    inner = list(k)
    what = "%s %s" % (local(k.tag), ns_of(k.tag))
    if inner and ns_of(inner[0].tag) != ns_of(k.tag):
        what += " / %s %s" % (local(inner[0].tag), ns_of(inner[0].tag))
    elif inner and local(k.tag) == "pubsub":
        node = inner[0].get("node")
        what += " / %s%s" % (local(inner[0].tag), " node=" + node if node else "")
    return what


def answer(el):
    if el is None:
        return "no answer in the trace"
    typ = el.get("type")
    frm = el.get("from")
    text = typ
    if typ == "error":
        err = [c for c in el if local(c.tag) == "error"]
        conds = [local(c.tag) for c in (err[0] if err else []) if ns_of(c.tag) == STANZAS]
        text += " " + (conds[0] if conds else "?")
    elif typ == "result":
        kids = list(el)
        text += " (empty)" if not kids else " " + describe_payload(el).split(" / ")[0]
    return text + (" from=%s" % frm if frm else " (no from)")


def from_trace(lines):
    events = []     # (direction, element)
    for line in lines:
        m = re.search(r"\b(SENT|SEND|RECV): (<.*)$", line)
        if not m:
            continue
        el = parse(m.group(2))
        if el is not None:
            events.append(("out" if m.group(1) != "RECV" else "in", el))
    return events


def from_server_log(lines, jid_regex):
    conns = {}      # id -> [(direction, element)]
    wanted = None
    pattern = re.compile(r"DEBUG (<-|->) #(\d+) (\S+) (\S+) (<.*)$")
    for line in lines:
        m = pattern.search(line)
        if not m:
            continue
        cid = m.group(2)
        if wanted is None and re.fullmatch(jid_regex, m.group(4)):
            wanted = cid
        el = parse(re.sub(r" \[\.\.\.\]$", "", m.group(5)))
        if el is not None:
            # the client's view: what the server received is what the client sent
            conns.setdefault(cid, []).append(("out" if m.group(1) == "<-" else "in", el))
    return conns.get(wanted, [])


def stanzas_in(text):
    """the stanzas in a piece of a stream (several, or with stream headers around them)"""
    text = re.sub(r"<\?xml[^>]*\?>|<stream:stream\b[^>]*>|</stream:stream>|<stream:features>.*?</stream:features>",
                  "", text, flags=re.S)
    parser = ET.XMLPullParser(events=("start", "end"))
    parser.feed("<w xmlns='jabber:client' xmlns:stream='http://etherx.jabber.org/streams'>")
    found, depth = [], 0
    try:
        parser.feed(text)
        for ev, el in parser.read_events():
            depth += 1 if ev == "start" else -1
            if ev == "end" and depth == 1 and local(el.tag) in ("iq", "message", "presence"):
                found.append(el)
    except ET.ParseError:
        pass
    return found


def from_loudmouth(lines):
    # mcabber's trace: "LM-NET: SEND:" or "LM-NET: RECV [n]:", then the XML on "LM-NET: " lines
    events, direction = [], None
    for line in lines:
        m = re.search(r"LM-NET: (SEND:|RECV \[\d+\]:|'?(<.*))$", line)
        if not m:
            continue
        if m.group(1) == "SEND:":
            direction = "out"
        elif m.group(1).startswith("RECV"):
            direction = "in"
        elif direction:
            events.extend((direction, el) for el in stanzas_in(m.group(2).rstrip("'")))
    return events


def from_recv_stream(text):
    return [("in", el) for el in stanzas_in(text)]


def main():
    if len(sys.argv) not in (3, 4) or (sys.argv[1] == "server") != (len(sys.argv) == 4):
        sys.exit(__doc__)
    fmt, path = sys.argv[1], sys.argv[2]
    try:
        with open(path, errors="replace") as f:
            data = f.read()
    except OSError as e:
        print("no trace: %s" % e)
        return
    if fmt == "server":
        events = from_server_log(data.splitlines(), sys.argv[3])
        print("(from the server's debug log)")
    elif fmt == "trace":
        events = from_trace(data.splitlines())
        print("(from the client's own trace)")
    elif fmt == "loudmouth":
        events = from_loudmouth(data.splitlines())
        print("(from the client's own trace)")
    else:
        events = from_recv_stream(data)
        print("(from what the client received, its -d output)")
    bound = None
    for i, (d, el) in enumerate(events):
        if local(el.tag) == "iq" and any(local(c.tag) == "bind" for c in el) and el.get("type") == "result":
            bound = i
            break
    if bound is None:
        print("no resource binding in the trace")
        return
    answers = {}
    for d, el in events[bound + 1:]:
        if d == "in" and local(el.tag) == "iq" and el.get("type") in ("result", "error"):
            answers.setdefault(el.get("id"), el)
    if fmt == "recv":
        # only what came back is known: every IQ is answered, so the answers show what was asked
        got = [el for d, el in events[bound + 1:] if local(el.tag) == "iq" and el.get("type") in ("result", "error")]
        if not got:
            print("sends no IQ after binding (no IQ answer besides the bind result in its -d trace)")
        for el in got:
            print("an IQ answered: %s" % answer(el))
        return
    count = 0
    presence = None
    for d, el in events[bound + 1:]:
        if d != "out":
            continue
        name = local(el.tag)
        if name == "message" or (name == "presence" and el.get("to")):
            break
        if name == "presence" and presence is None:
            presence = el
        if name != "iq":
            continue
        count += 1
        to = el.get("to") or "own account (no to)"
        print("iq %s to %s: %s -> %s" % (el.get("type"), to, describe_payload(el), answer(answers.get(el.get("id")))))
    if not count:
        print("sends no IQ after binding")
    if presence is not None:
        kids = ", ".join(("%s %s" % (local(c.tag), ns_of(c.tag).replace("jabber:client", ""))).strip()
                         for c in presence)
        print("initial presence%s" % (" with " + kids if kids else " (empty)"))


if __name__ == "__main__":
    main()
