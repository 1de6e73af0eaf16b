#!/usr/bin/env python3
"""Writes the seed corpora in fuzz/corpus/<harness>/ (run from the repository root). The seeds follow
each harness's input layout (see the comment at the top of fuzz/fuzz_<harness>.c)."""
import base64, os

ROOT = os.path.join(os.path.dirname(os.path.abspath(__file__)), "corpus")
HDR = ("<?xml version='1.0'?><stream:stream to='localhost' xmlns='jabber:client' "
       "xmlns:stream='http://etherx.jabber.org/streams' version='1.0'>")
SASL = "urn:ietf:params:xml:ns:xmpp-sasl"
MUC = "http://jabber.org/protocol/muc"
ROOM = "garden@conference.localhost"


def write(harness, name, data):
    d = os.path.join(ROOT, harness)
    os.makedirs(d, exist_ok=True)
    if isinstance(data, str):
        data = data.encode()
    with open(os.path.join(d, name), "wb") as f:
        f.write(data)


# ---- xml: flags, split offsets, stream ----
stanzas = [
    "<message to='juliet@localhost' type='chat' id='m1'><body>Wherefore art thou &amp; &lt;why&gt;?</body>"
    "<active xmlns='http://jabber.org/protocol/chatstates'/></message>",
    "<iq type='get' id='p1'><ping xmlns='urn:xmpp:ping'/></iq>",
    "<presence xml:lang='en'><show>away</show><status>gone &#x263A; &#65;</status><priority>5</priority></presence>",
    "<iq type='set' id='b'><bind xmlns='urn:ietf:params:xml:ns:xmpp-bind'><resource>balcony</resource></bind></iq>",
    "<a:x xmlns:a='urn:a' xmlns:b='urn:b' b:attr='1' attr=\"two\"><a:y><![CDATA[<raw> & ]]>text</a:y><z xmlns=''/></a:x>",
    "<message><body>line\r\nbreak\ttab</body><x xmlns='jabber:x:data' type='submit'><field var='a'><value>1</value></field></x></message>",
    "<stream:features/><stream:error><not-well-formed xmlns='urn:ietf:params:xml:ns:xmpp-streams'/></stream:error>",
]
for i, st in enumerate(stanzas):
    write("xml", "stanza%d" % i, bytes([0x03, 40, 120, 200]) + (HDR + st).encode())
write("xml", "whole_stream", bytes([0x0a, 10, 90]) + (HDR + "".join(stanzas) + "</stream:stream>").encode())
write("xml", "decl_only", bytes([0]) + b"<?xml version='1.0' encoding='UTF-8'?>\n<stream:stream xmlns:stream='http://etherx.jabber.org/streams'/>")
write("xml", "restricted", bytes([0x01, 128]) + (HDR + "<!-- c --><?pi x?><!DOCTYPE x>").encode())
write("xml", "utf8", bytes([0x12, 77, 99]) + (HDR + "<message><body>\u00e9\u263a\U0001F600 caf\u00e9</body></message>").encode())
write("xml", "deep", bytes([0x01, 50]) + (HDR + "<a>" * 12 + "x" + "</a>" * 12).encode())
write("xml", "many_attrs", bytes([0x00]) + (HDR + "<m " + " ".join("a%d='%d'" % (i, i) for i in range(10)) + "/>").encode())

# ---- jid: output-buffer size byte, then the JID ----
for i, j in enumerate(["romeo@localhost", "romeo@localhost/balcony", "localhost", "Juliet@Capulet.Example./Orchard",
                       "garden@conference.localhost/Romeo de Montague", "a@[::1]/r", "a@[192.0.2.1]",
                       "x@y/z@w/v", "caf\u00e9@\u00e9xample.com/\u263a", "@localhost", "a@/r", "a@b/", "a\x01@b",
                       "averylonglocalpart" * 8 + "@d", "d/" + "r" * 60]):
    write("jid", "jid%d" % i, bytes([i * 7 + 3]) + j.encode())

# ---- sasl: flags, separator, messages separated by it ----
SEP = 0x7c  # '|'
def sasl(name, flags, *msgs):
    write("sasl", name, bytes([flags, SEP]) + b"|".join(m if isinstance(m, bytes) else m.encode() for m in msgs))
sasl("plain_ok", 2, b"\0romeo\0secret")
sasl("plain_authz", 2, b"romeo@localhost\0romeo\0secret")
sasl("plain_bad", 2, b"\0juliet\0wrong")
sasl("scram256_first", 0, "n,,n=romeo,r=fyko+d2lbbFgONRv9qkxdawL")
sasl("scram1_first", 1, "n,,n=juliet,r=abcdefghijklmnop")
sasl("scram256_full", 0, "n,,n=romeo,r=fyko+d2lbbFgONRv9qkxdawL",
     "c=biws,r=fyko+d2lbbFgONRv9qkxdawLsnonce,p=dHzbZapWIk4jUhN+Ute9ytag9zjfMHgsqmmiz7AndVQ=")
sasl("scram256_complete", 8, "n,,n=romeo,r=fyko+d2lbbFgONRv9qkxdawL", "")
sasl("scram1_complete_authz", 9, "n,a=romeo,n=romeo,r=0123456789abcdef", "")
sasl("scram_saslname", 8, "y,,n=ro=2Cme=3Do,r=xyz,ext=1", "foo=bar")
sasl("scram_unknown", 0, "n,,n=nobody,r=nonce", "c=biws,r=noncexyz,p=AAAA")
sasl("raw_b64", 4 | 2, base64.b64encode(b"\0romeo\0secret"))
sasl("raw_bad", 4, "AAA=|====|ab=c")
sasl("empty_first", 0, "", "n,,n=romeo,r=abc")
sasl("small_out", 0x10, "n,,n=romeo,r=abc")
sasl("mid_out", 0x28, "n,,n=romeo,r=abc", "")
sasl("bogus_mech", 3, "x")

# ---- stream: flags, prefixes, records (ctl, len, bytes) ----
def rec(conn, data, op=0, hi=0):
    data = data.encode() if isinstance(data, str) else data
    out = b""
    while True:
        part, data = data[:255], data[255:]
        out += bytes([conn | (op << 2) | hi, len(part)]) + part
        if not data:
            return out
        op = 0  # continuation chunks are plain deliveries

def stream(name, f0, f1, *recs):
    write("stream", name, bytes([f0, f1]) + b"".join(recs))

def b64(s):
    return base64.b64encode(s.encode() if isinstance(s, str) else s).decode()

TWO = 1 << 3          # two connections
THREE = 2 << 3
BOTH_BOUND = 3 | (3 << 2)
ALL_BOUND = BOTH_BOUND | (3 << 4)

stream("raw_login", 0, 0,
       rec(0, HDR),
       rec(0, "<auth xmlns='%s' mechanism='PLAIN'>%s</auth>" % (SASL, b64("\0romeo\0secret"))),
       rec(0, HDR),
       rec(0, "<iq type='set' id='b1'><bind xmlns='urn:ietf:params:xml:ns:xmpp-bind'/></iq>"),
       rec(0, "<iq type='set' id='s1'><session xmlns='urn:ietf:params:xml:ns:xmpp-session'/></iq>"),
       rec(0, "<iq type='get' id='r1'><query xmlns='jabber:iq:roster'/></iq><presence><priority>1</priority></presence>"),
       rec(0, "</stream:stream>"))
stream("starttls", 1, 0,
       rec(0, HDR), rec(0, "<starttls xmlns='urn:ietf:params:xml:ns:xmpp-tls'/>"), rec(0, HDR),
       rec(0, "<auth xmlns='%s' mechanism='SCRAM-SHA-256'>%s</auth>" % (SASL, b64("n,,n=romeo,r=abcdefgh"))),
       rec(0, "<response xmlns='%s'>%s</response>" % (SASL, b64("c=biws,r=abcdefghXXXX,p=AAAA"))),
       rec(0, "<abort xmlns='%s'/>" % SASL))
stream("starttls_fail", 3, 1, rec(0, "<starttls xmlns='urn:ietf:params:xml:ns:xmpp-tls'/>" + HDR))
stream("bad_header", 0, 0, rec(0, "<stream:stream to='example.org' xmlns='jabber:client' "
                                  "xmlns:stream='http://etherx.jabber.org/streams' version='0.9'>"))
stream("timeout", 0, 1, rec(0, " ", op=4))
stream("chat", TWO, BOTH_BOUND,
       rec(0, "<message to='juliet@localhost' type='chat' id='c1'><body>Hi</body></message>"),
       rec(1, "<message to='romeo@localhost/r0' type='chat'><body>Hello</body></message>"),
       rec(0, "<message to='nobody@localhost'><body>?</body></message>"),
       rec(1, "<presence to='romeo@localhost'/><presence type='unavailable' to='romeo@localhost'/>"),
       rec(0, "<iq type='get' id='v' to='localhost'><query xmlns='jabber:iq:version'/></iq>"
              "<iq type='get' id='t' to='localhost'><time xmlns='urn:xmpp:time'/></iq>"
              "<iq type='get' id='u' to='localhost'><query xmlns='jabber:iq:last'/></iq>"
              "<iq type='get' id='d' to='localhost'><query xmlns='http://jabber.org/protocol/disco#info'/></iq>"
              "<iq type='get' id='e' to='localhost'><query xmlns='http://jabber.org/protocol/disco#items'/></iq>"),
       rec(1, "<iq type='get' id='x' to='romeo@localhost/r0'><ping xmlns='urn:xmpp:ping'/></iq>"),
       rec(0, "<iq type='result' id='x' to='juliet@localhost/r1'/>"),
       rec(0, "<iq type='get' id='q'><foo xmlns='urn:unknown'/></iq>", op=4),
       rec(1, "", op=5))
stream("conflict", THREE, ALL_BOUND | 0x40, rec(2, "<message to='romeo@localhost/phone'><body>x</body></message>"))
stream("overflow", TWO, BOTH_BOUND,
       rec(1, "<presence/>", op=6, hi=0x80),
       *[rec(0, "<message to='juliet@localhost'><body>" + "A" * 200 + "</body></message>") for _ in range(6)])

join = "<presence to='%s/%%s'><x xmlns='%s'><history maxstanzas='2'/></x></presence>" % (ROOM, MUC)
stream("muc", TWO, BOTH_BOUND,
       rec(0, join % "Romeo"),
       rec(0, "<iq type='get' id='cf' to='%s'><query xmlns='%s#owner'/></iq>" % (ROOM, MUC)),
       rec(0, "<iq type='set' id='cs' to='%s'><query xmlns='%s#owner'><x xmlns='jabber:x:data' type='submit'>"
              "<field var='FORM_TYPE'><value>http://jabber.org/protocol/muc#roomconfig</value></field>"
              "<field var='muc#roomconfig_persistentroom'><value>1</value></field>"
              "<field var='muc#roomconfig_roomname'><value>Garden</value></field>"
              "<field var='muc#roomconfig_historylength'><value>4</value></field>"
              "<field var='muc#roomconfig_whois'><value>anyone</value></field>"
              "<field var='muc#roomconfig_moderatedroom'><value>1</value></field>"
              "</x></query></iq>" % (ROOM, MUC)),
       rec(0, "<message type='groupchat' to='%s'><body>one</body></message>"
              "<message type='groupchat' to='%s'><subject>Topic</subject></message>" % (ROOM, ROOM)),
       rec(1, join % "Juliet"),
       rec(1, "<message type='chat' to='%s/Romeo'><body>psst</body></message>" % ROOM),
       rec(0, "<iq type='set' id='v1' to='%s'><query xmlns='%s#admin'><item nick='Juliet' role='visitor'>"
              "<reason>quiet</reason></item></query></iq>" % (ROOM, MUC)),
       rec(0, "<iq type='set' id='a1' to='%s'><query xmlns='%s#admin'><item jid='juliet@localhost' "
              "affiliation='member'/></query></iq>" % (ROOM, MUC)),
       rec(0, "<iq type='get' id='a2' to='%s'><query xmlns='%s#admin'><item affiliation='member'/></query></iq>" % (ROOM, MUC)),
       rec(1, "<presence to='%s/Jules'/>" % ROOM),
       rec(0, "<message to='%s'><x xmlns='%s#user'><invite to='nobody@localhost'><reason>come</reason></invite></x></message>" % (ROOM, MUC)),
       rec(0, "<iq type='get' id='di' to='%s'><query xmlns='http://jabber.org/protocol/disco#info'/></iq>"
              "<iq type='get' id='dj' to='conference.localhost'><query xmlns='http://jabber.org/protocol/disco#items'/></iq>" % ROOM),
       rec(0, "<iq type='set' id='k1' to='%s'><query xmlns='%s#admin'><item nick='Jules' role='none'/></query></iq>" % (ROOM, MUC)),
       rec(0, "<presence type='unavailable' to='%s/Romeo'/>" % ROOM))
stream("muc_destroy", TWO, BOTH_BOUND,
       rec(1, join % "J"),
       rec(1, "<iq type='set' id='i' to='%s'><query xmlns='%s#owner'><x xmlns='jabber:x:data' type='submit'/></query></iq>" % (ROOM, MUC)),
       rec(0, join % "R"),
       rec(1, "<iq type='set' id='d' to='%s'><query xmlns='%s#owner'><destroy jid='other@conference.localhost'>"
              "<reason>bye</reason></destroy></query></iq>" % (ROOM, MUC)),
       rec(0, "<presence to='%s/R'><x xmlns='%s'><password>pw</password></x></presence>" % (ROOM, MUC)))
stream("muc_shutdown", TWO | 0x80, BOTH_BOUND,
       rec(0, join % "Romeo"),
       rec(0, "<iq type='set' id='cs' to='%s'><query xmlns='%s#owner'><x xmlns='jabber:x:data' type='submit'>"
              "<field var='muc#roomconfig_persistentroom'><value>1</value></field></x></query></iq>" % (ROOM, MUC)),
       rec(1, join % "Juliet"))
stream("sighup", 0x40, 3, rec(0, "<presence/>"))
# a persistent room's archive (MAM, RSM), a voice request, bounces and odd nicks
MAM = "urn:xmpp:mam:2"
RSM = "http://jabber.org/protocol/rsm"
stream("muc_mam", TWO, BOTH_BOUND,
       rec(0, join % "Romeo"),
       rec(0, "<iq type='set' id='cs' to='%s'><query xmlns='%s#owner'><x xmlns='jabber:x:data' type='submit'>"
              "<field var='muc#roomconfig_persistentroom'><value>1</value></field>"
              "<field var='muc#roomconfig_moderatedroom'><value>1</value></field>"
              "<field var='muc#roomconfig_passwordprotectedroom'><value>0</value></field>"
              "<field var='muc#roomconfig_roomsecret'><value></value></field></x></query></iq>" % (ROOM, MUC)),
       rec(0, "<message type='groupchat' to='%s'><body>one</body><stanza-id xmlns='urn:xmpp:sid:0' id='x' by='%s'/>"
              "<occupant-id xmlns='urn:xmpp:occupant-id:0' id='forged'/></message>" % (ROOM, ROOM)),
       rec(1, "<presence to='%s/Ｊｕｌ'><x xmlns='%s'/></presence>" % (ROOM, MUC)),
       rec(1, "<message to='%s'><x xmlns='jabber:x:data' type='submit'><field var='FORM_TYPE'>"
              "<value>%s#request</value></field><field var='muc#role'><value>participant</value></field></x></message>" % (ROOM, MUC)),
       rec(0, "<message to='%s'><x xmlns='jabber:x:data' type='submit'><field var='FORM_TYPE'><value>%s#request</value>"
              "</field><field var='muc#role'><value>participant</value></field><field var='muc#roomnick'><value>Jul</value>"
              "</field><field var='muc#request_allow'><value>true</value></field></x></message>" % (ROOM, MUC)),
       rec(0, "<iq type='get' id='m0' to='%s'><query xmlns='%s'/></iq>" % (ROOM, MAM)),
       rec(0, "<iq type='set' id='m1' to='%s'><query xmlns='%s' queryid='f1'><x xmlns='jabber:x:data' type='submit'>"
              "<field var='FORM_TYPE'><value>%s</value></field><field var='start'><value>2010-06-07T00:00:00Z</value>"
              "</field><field var='with'><value>%s/Romeo</value></field></x><set xmlns='%s'><max>1</max><before/></set>"
              "</query></iq>" % (ROOM, MAM, MAM, ROOM, RSM)),
       rec(0, "<iq type='set' id='m2' to='%s'><query xmlns='%s'><set xmlns='%s'><max>99999999999</max>"
              "<after>0000000000000001</after></set></query></iq>" % (ROOM, MAM, RSM)),
       rec(1, "<message type='error' to='%s/Romeo'><error type='cancel'><service-unavailable "
              "xmlns='urn:ietf:params:xml:ns:xmpp-stanzas'/></error></message>" % ROOM),
       rec(1, "<iq type='set' id='u' to='%s'><query xmlns='jabber:iq:register'><remove/></query></iq>" % ROOM))
