#!/usr/bin/env python3
"""Self-test for tests/onvif/sim.py: a tiny ONVIF client (standard library only).

    python3 tests/onvif/check.py [--sim tests/onvif/sim.py] [-v]

Starts the simulator twice on free loopback ports (once with a skewed clock), drives
every operation with WS-Security and with HTTP digest, checks the failure paths, the
WS-Discovery answer, the limits and the JSON log, then stops it with SIGTERM and
expects exit status 0. Prints "ok: N checks" and exits 0 when everything passed.
"""

import argparse
import base64
import hashlib
import http.client
import json
import os
import re
import signal
import socket
import subprocess
import sys
import tempfile
import time
import uuid
import xml.etree.ElementTree as ET
from datetime import datetime, timezone

NS = {
    "env": "http://www.w3.org/2003/05/soap-envelope",
    "wsa": "http://schemas.xmlsoap.org/ws/2004/08/addressing",
    "d": "http://schemas.xmlsoap.org/ws/2005/04/discovery",
    "tt": "http://www.onvif.org/ver10/schema",
    "tds": "http://www.onvif.org/ver10/device/wsdl",
    "trt": "http://www.onvif.org/ver10/media/wsdl",
    "tr2": "http://www.onvif.org/ver20/media/wsdl",
    "tptz": "http://www.onvif.org/ver20/ptz/wsdl",
}
USER, PASSWORD = "onvif", "pa:ss w0rd"
MAIN, SUB = "rtsp://127.0.0.1:8554/h264", "rtsp://127.0.0.1:8554/h264only"
VERBOSE = False
CHECKS = 0


def ok(cond, what):
    global CHECKS
    if not cond:
        raise SystemExit("FAIL: " + what)
    CHECKS += 1
    if VERBOSE:
        print("ok   " + what)


def free_port(kind):
    s = socket.socket(socket.AF_INET, kind)
    s.bind(("127.0.0.1", 0))
    p = s.getsockname()[1]
    s.close()
    return p


# ------------------------------------------------------------------ client side
def wsse_header(user, password, offset=0.0, nonce=None, created=None):
    nonce = nonce if nonce is not None else os.urandom(16)
    if created is None:
        t = datetime.fromtimestamp(time.time() + offset, tz=timezone.utc)
        created = t.strftime("%Y-%m-%dT%H:%M:%S.") + "%03dZ" % (t.microsecond // 1000)
    digest = base64.b64encode(hashlib.sha1(nonce + created.encode() + password.encode()).digest())
    return (
        '<wsse:Security s:mustUnderstand="1" '
        'xmlns:wsse="http://docs.oasis-open.org/wss/2004/01/oasis-200401-wss-wssecurity-secext-1.0.xsd" '
        'xmlns:wsu="http://docs.oasis-open.org/wss/2004/01/oasis-200401-wss-wssecurity-utility-1.0.xsd">'
        '<wsse:UsernameToken><wsse:Username>%s</wsse:Username>'
        '<wsse:Password Type="http://docs.oasis-open.org/wss/2004/01/oasis-200401-wss-username-token-profile-1.0#PasswordDigest">%s</wsse:Password>'
        '<wsse:Nonce EncodingType="http://docs.oasis-open.org/wss/2004/01/oasis-200401-wss-soap-message-security-1.0#Base64Binary">%s</wsse:Nonce>'
        '<wsu:Created>%s</wsu:Created></wsse:UsernameToken></wsse:Security>'
        % (user, digest.decode(), base64.b64encode(nonce).decode(), created))


def envelope(body, security=""):
    return (
        '<?xml version="1.0" encoding="UTF-8"?>'
        '<s:Envelope xmlns:s="http://www.w3.org/2003/05/soap-envelope" '
        'xmlns:tds="http://www.onvif.org/ver10/device/wsdl" '
        'xmlns:trt="http://www.onvif.org/ver10/media/wsdl" '
        'xmlns:tr2="http://www.onvif.org/ver20/media/wsdl" '
        'xmlns:tptz="http://www.onvif.org/ver20/ptz/wsdl" '
        'xmlns:tt="http://www.onvif.org/ver10/schema">'
        '%s<s:Body>%s</s:Body></s:Envelope>'
        % ("<s:Header>%s</s:Header>" % security if security else "", body))


def post(port, path, data, headers=None):
    c = http.client.HTTPConnection("127.0.0.1", port, timeout=5)
    h = {"Content-Type": "application/soap+xml; charset=utf-8"}
    h.update(headers or {})
    c.request("POST", path, body=data, headers=h)
    r = c.getresponse()
    body = r.read()
    c.close()
    hd = dict((k.lower(), v) for k, v in r.getheaders())
    hd["www-authenticate*"] = r.msg.get_all("WWW-Authenticate") or []
    return r.status, hd, body


def digest_authorization(challenge, user, password, method, uri, nc=1):
    """RFC 2617 / RFC 7616 response to one WWW-Authenticate: Digest challenge (qop=auth)."""
    p = dict((m.group(1).lower(), m.group(2) if m.group(2) is not None else m.group(3))
             for m in re.finditer(r'(\w+)=(?:"([^"]*)"|([^,\s]+))', challenge))
    alg = p.get("algorithm", "MD5").upper()
    H = lambda x: hashlib.new({"MD5": "md5", "SHA-256": "sha256"}[alg], x.encode()).hexdigest()
    ha1 = H("%s:%s:%s" % (user, p["realm"], password))
    ha2 = H("%s:%s" % (method, uri))
    cnonce = os.urandom(8).hex()
    ncs = "%08x" % nc
    resp = H("%s:%s:%s:%s:auth:%s" % (ha1, p["nonce"], ncs, cnonce, ha2))
    return ('Digest username="%s", realm="%s", nonce="%s", uri="%s", algorithm=%s, qop=auth, '
            'nc=%s, cnonce="%s", response="%s", opaque="%s"'
            % (user, p["realm"], p["nonce"], uri, alg, ncs, cnonce, resp, p.get("opaque", "")))


class Client:
    def __init__(self, port, auth="wsse", user=USER, password=PASSWORD, offset=0.0, pick=0):
        self.port, self.auth, self.user, self.password, self.offset = port, auth, user, password, offset
        self.pick = pick   # which WWW-Authenticate challenge to answer

    def call(self, path, body):
        """Returns (status, parsed root or None, headers)."""
        if self.auth == "wsse":
            st, hd, raw = post(self.port, path, envelope(body, wsse_header(
                self.user, self.password, self.offset)))
        elif self.auth == "digest":
            data = envelope(body)
            st, hd, raw = post(self.port, path, data)
            if st == 401:
                auth = digest_authorization(hd["www-authenticate*"][self.pick], self.user,
                                            self.password, "POST", path)
                st, hd, raw = post(self.port, path, data, {"Authorization": auth})
        else:
            st, hd, raw = post(self.port, path, envelope(body))
        root = ET.fromstring(raw) if raw.strip().startswith(b"<") else None
        return st, root, hd


def subcodes(root):
    return [v.text for v in root.iterfind(".//env:Subcode/env:Value", NS)]


def device_time_offset(port):
    st, root, _ = Client(port, auth="none").call(
        "/onvif/device_service", "<tds:GetSystemDateAndTime/>")
    ok(st == 200, "GetSystemDateAndTime without credentials -> 200")
    u = root.find(".//tds:SystemDateAndTime/tt:UTCDateTime", NS)
    g = lambda p: int(u.find(p, NS).text)
    dev = datetime(g("tt:Date/tt:Year"), g("tt:Date/tt:Month"), g("tt:Date/tt:Day"),
                   g("tt:Time/tt:Hour"), g("tt:Time/tt:Minute"), g("tt:Time/tt:Second"),
                   tzinfo=timezone.utc).timestamp()
    return dev - time.time()


# ------------------------------------------------------------------ simulator process
RUNNING = []


def kill_leftovers():
    for p in RUNNING:
        if p.poll() is None:
            p.kill()
            p.wait()


class Sim:
    def __init__(self, sim_path, extra=()):
        self.http = free_port(socket.SOCK_STREAM)
        self.disc = free_port(socket.SOCK_DGRAM)
        fd, self.log = tempfile.mkstemp(prefix="onvif-sim-", suffix=".jsonl")
        os.close(fd)
        cmd = [sys.executable, sim_path, "--http-port", str(self.http), "--discovery-port",
               str(self.disc), "--user", USER, "--password", PASSWORD, "--rtsp-main", MAIN,
               "--rtsp-sub", SUB, "--name", "Front Door", "--log", self.log] + list(extra)
        self.proc = subprocess.Popen(cmd, stdout=subprocess.PIPE, text=True)
        RUNNING.append(self.proc)
        line = self.proc.stdout.readline()
        ok(line == "ready\n", "simulator prints ready (%s)" % " ".join(extra))

    def log_lines(self):
        with open(self.log) as f:
            return [json.loads(l) for l in f if l.strip()]

    def stop(self):
        self.proc.send_signal(signal.SIGTERM)
        t0 = time.time()
        rc = self.proc.wait(timeout=10)
        ok(rc == 0, "SIGTERM -> exit status 0 (%.2f s)" % (time.time() - t0))
        os.unlink(self.log)


# ------------------------------------------------------------------ checks
def check_discovery(sim):
    def probe(types, msg_id):
        t = ('<d:Types>%s</d:Types>' % types) if types is not None else ""
        return (
            '<?xml version="1.0" encoding="UTF-8"?>'
            '<s:Envelope xmlns:s="http://www.w3.org/2003/05/soap-envelope" '
            'xmlns:a="http://schemas.xmlsoap.org/ws/2004/08/addressing" '
            'xmlns:d="http://schemas.xmlsoap.org/ws/2005/04/discovery" '
            'xmlns:dn="http://www.onvif.org/ver10/network/wsdl">'
            '<s:Header><a:MessageID>%s</a:MessageID>'
            '<a:To s:mustUnderstand="1">urn:schemas-xmlsoap-org:ws:2005:04:discovery</a:To>'
            '<a:Action s:mustUnderstand="1">http://schemas.xmlsoap.org/ws/2005/04/discovery/Probe</a:Action>'
            '</s:Header><s:Body><d:Probe>%s</d:Probe></s:Body></s:Envelope>' % (msg_id, t)).encode()

    s = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    s.settimeout(1.0)
    for types in ("dn:NetworkVideoTransmitter", None):
        mid = "urn:uuid:%s" % uuid.uuid4()
        s.sendto(probe(types, mid), ("127.0.0.1", sim.disc))
        data, _ = s.recvfrom(65535)
        root = ET.fromstring(data)
        ok(root.findtext(".//wsa:RelatesTo", namespaces=NS) == mid,
           "ProbeMatches RelatesTo = probe MessageID (Types=%s)" % types)
        pm = root.find(".//d:ProbeMatches/d:ProbeMatch", NS)
        xaddrs = pm.findtext("d:XAddrs", namespaces=NS).split()
        ok(xaddrs[-1] == "http://127.0.0.1:%d/onvif/device_service" % sim.http, "XAddrs")
        scopes = pm.findtext("d:Scopes", namespaces=NS).split()
        ok("onvif://www.onvif.org/name/Front%20Door" in scopes, "name scope")
        ok(pm.findtext("wsa:EndpointReference/wsa:Address", namespaces=NS).startswith("urn:uuid:"),
           "EndpointReference urn:uuid")
    # a type the device does not have, garbage, and a probe without MessageID: no answer
    s.sendto(probe("dn:NetworkVideoDisplay", "urn:uuid:%s" % uuid.uuid4()), ("127.0.0.1", sim.disc))
    s.sendto(b"\x00garbage<<<", ("127.0.0.1", sim.disc))
    s.sendto(probe(None, "").replace(b"<a:MessageID></a:MessageID>", b""), ("127.0.0.1", sim.disc))
    s.settimeout(0.5)
    try:
        s.recvfrom(65535)
        ok(False, "no answer to non-matching / malformed probes")
    except socket.timeout:
        ok(True, "no answer to non-matching / malformed probes")
    s.close()


def check_device(sim):
    w = Client(sim.http, "wsse")
    st, root, _ = w.call("/onvif/device_service", "<tds:GetDeviceInformation/>")
    ok(st == 200, "GetDeviceInformation (WS-Security) -> 200")
    info = root.find(".//tds:GetDeviceInformationResponse", NS)
    for f in ("Manufacturer", "Model", "FirmwareVersion", "SerialNumber", "HardwareId"):
        ok(info.findtext("tds:" + f, namespaces=NS), "DeviceInformation/" + f)

    st, root, _ = Client(sim.http, "digest").call("/onvif/device_service", "<tds:GetDeviceInformation/>")
    ok(st == 200, "GetDeviceInformation (HTTP digest) -> 200")

    st, root, _ = w.call("/onvif/device_service",
                         "<tds:GetCapabilities><tds:Category>All</tds:Category></tds:GetCapabilities>")
    ok(st == 200, "GetCapabilities All")
    caps = root.find(".//tds:Capabilities", NS)
    ok(caps.findtext("tt:Media/tt:XAddr", namespaces=NS) ==
       "http://127.0.0.1:%d/onvif/media_service" % sim.http, "Capabilities Media XAddr")
    ok(caps.findtext("tt:PTZ/tt:XAddr", namespaces=NS) ==
       "http://127.0.0.1:%d/onvif/ptz_service" % sim.http, "Capabilities PTZ XAddr")

    st, root, _ = w.call("/onvif/device_service",
                         "<tds:GetServices><tds:IncludeCapability>false</tds:IncludeCapability></tds:GetServices>")
    svc = dict((s.findtext("tds:Namespace", namespaces=NS), s.findtext("tds:XAddr", namespaces=NS))
               for s in root.iterfind(".//tds:Service", NS))
    ok(svc.get(NS["trt"], "").endswith("/onvif/media_service") and
       svc.get(NS["tptz"], "").endswith("/onvif/ptz_service"), "GetServices media/ptz XAddrs")


def check_media(sim):
    w = Client(sim.http, "wsse")
    st, root, _ = w.call("/onvif/media_service", "<trt:GetProfiles/>")
    ok(st == 200, "GetProfiles")
    got = []
    for p in root.iterfind(".//trt:GetProfilesResponse/trt:Profiles", NS):
        vec = p.find("tt:VideoEncoderConfiguration", NS)
        got.append((p.get("token"), p.findtext("tt:Name", namespaces=NS),
                    vec.findtext("tt:Encoding", namespaces=NS),
                    vec.findtext("tt:Resolution/tt:Width", namespaces=NS),
                    vec.findtext("tt:Resolution/tt:Height", namespaces=NS),
                    p.find("tt:PTZConfiguration", NS) is not None))
    ok(got == [("main", "MainStream", "H264", "1920", "1080", True),
               ("sub", "SubStream", "H264", "640", "360", True)], "profiles %r" % got)
    for tok, url in (("main", MAIN), ("sub", SUB)):
        st, root, _ = w.call("/onvif/media_service",
                             "<trt:GetStreamUri><trt:StreamSetup><tt:Stream>RTP-Unicast</tt:Stream>"
                             "<tt:Transport><tt:Protocol>RTSP</tt:Protocol></tt:Transport>"
                             "</trt:StreamSetup><trt:ProfileToken>%s</trt:ProfileToken>"
                             "</trt:GetStreamUri>" % tok)
        ok(root.findtext(".//trt:GetStreamUriResponse/trt:MediaUri/tt:Uri", namespaces=NS) == url,
           "GetStreamUri %s" % tok)
    st, root, _ = w.call("/onvif/media_service",
                         "<trt:GetStreamUri><trt:StreamSetup><tt:Stream>RTP-Unicast</tt:Stream>"
                         "<tt:Transport><tt:Protocol>RTSP</tt:Protocol></tt:Transport>"
                         "</trt:StreamSetup><trt:ProfileToken>nope</trt:ProfileToken></trt:GetStreamUri>")
    ok(st == 400 and subcodes(root) == ["ter:InvalidArgVal", "ter:NoProfile"], "unknown profile -> NoProfile")
    # Media2
    st, root, _ = w.call("/onvif/media2_service", "<tr2:GetProfiles><tr2:Type>All</tr2:Type></tr2:GetProfiles>")
    enc = [(p.get("token"), p.findtext("tr2:Configurations/tr2:VideoEncoder/tt:Encoding", namespaces=NS))
           for p in root.iterfind(".//tr2:Profiles", NS)]
    ok(enc == [("main", "H264"), ("sub", "H264")], "Media2 GetProfiles")
    st, root, _ = w.call("/onvif/media2_service", "<tr2:GetStreamUri><tr2:Protocol>RTSP</tr2:Protocol>"
                         "<tr2:ProfileToken>sub</tr2:ProfileToken></tr2:GetStreamUri>")
    ok(root.findtext(".//tr2:GetStreamUriResponse/tr2:Uri", namespaces=NS) == SUB, "Media2 GetStreamUri")


def check_ptz(sim):
    w = Client(sim.http, "wsse")
    ptz = "/onvif/ptz_service"
    calls = [
        "<tptz:ContinuousMove><tptz:ProfileToken>main</tptz:ProfileToken><tptz:Velocity>"
        '<tt:PanTilt x="0.5" y="0"/><tt:Zoom x="0"/></tptz:Velocity></tptz:ContinuousMove>',
        "<tptz:Stop><tptz:ProfileToken>main</tptz:ProfileToken><tptz:PanTilt>true</tptz:PanTilt>"
        "<tptz:Zoom>true</tptz:Zoom></tptz:Stop>",
        "<tptz:GotoPreset><tptz:ProfileToken>main</tptz:ProfileToken><tptz:PresetToken>2</tptz:PresetToken></tptz:GotoPreset>",
        "<tptz:GotoHomePosition><tptz:ProfileToken>sub</tptz:ProfileToken></tptz:GotoHomePosition>",
    ]
    for c in calls:
        st, root, _ = w.call(ptz, c)
        ok(st == 200, "PTZ %s" % c[6:c.index(">")])
    st, root, _ = w.call(ptz, "<tptz:GetPresets><tptz:ProfileToken>main</tptz:ProfileToken></tptz:GetPresets>")
    pres = [(p.get("token"), p.findtext("tt:Name", namespaces=NS)) for p in root.iterfind(".//tptz:Preset", NS)]
    ok([t for t, _ in pres] == ["1", "2"], "GetPresets %r" % pres)
    st, root, _ = w.call(ptz, "<tptz:SetPreset><tptz:ProfileToken>main</tptz:ProfileToken>"
                              "<tptz:PresetName>Lobby</tptz:PresetName></tptz:SetPreset>")
    new = root.findtext(".//tptz:SetPresetResponse/tptz:PresetToken", namespaces=NS)
    ok(new == "3", "SetPreset -> new token 3")
    st, root, _ = w.call(ptz, "<tptz:RemovePreset><tptz:ProfileToken>main</tptz:ProfileToken>"
                              "<tptz:PresetToken>3</tptz:PresetToken></tptz:RemovePreset>")
    ok(st == 200, "RemovePreset")
    st, root, _ = w.call(ptz, "<tptz:GotoPreset><tptz:ProfileToken>main</tptz:ProfileToken>"
                              "<tptz:PresetToken>99</tptz:PresetToken></tptz:GotoPreset>")
    ok(st == 400 and subcodes(root) == ["ter:InvalidArgVal", "ter:NoToken"], "GotoPreset 99 -> NoToken")
    st, root, _ = w.call(ptz, "<tptz:AbsoluteMove><tptz:ProfileToken>main</tptz:ProfileToken></tptz:AbsoluteMove>")
    ok(st == 500 and subcodes(root) == ["ter:ActionNotSupported"], "unknown action -> ActionNotSupported")


def check_auth_failures(sim):
    dev = "/onvif/device_service"
    body = "<tds:GetDeviceInformation/>"
    st, root, hd = Client(sim.http, "none").call(dev, body)
    ok(st == 401 and hd.get("www-authenticate", "").startswith("Digest "), "no credentials -> 401 Digest")
    st, root, _ = Client(sim.http, "wsse", password="wrong").call(dev, body)
    ok(st == 400 and subcodes(root) == ["ter:NotAuthorized"], "wrong WS-Security password -> 400 NotAuthorized")
    st, root, _ = Client(sim.http, "wsse", offset=-600).call(dev, body)
    ok(st == 400 and subcodes(root) == ["ter:NotAuthorized"], "Created 10 min old -> 400 NotAuthorized")
    st, root, _ = Client(sim.http, "wsse", user="admin").call(dev, body)
    ok(st == 400, "unknown WS-Security user -> 400")
    hdr = wsse_header(USER, PASSWORD)
    st1, _, _ = post(sim.http, dev, envelope(body, hdr))
    st2, _, _ = post(sim.http, dev, envelope(body, hdr))
    ok(st1 == 200 and st2 == 400, "replayed UsernameToken -> 400")
    st, root, _ = Client(sim.http, "digest", password="wrong").call(dev, body)
    ok(st == 401, "wrong digest password -> 401")
    # the official test vector (ONVIF Application Programmer's Guide)
    n = base64.b64decode("LKqI6G/AikKCQrN0zqZFlg==")
    d = base64.b64encode(hashlib.sha1(n + b"2010-09-16T07:50:45Z" + b"userpassword").digest()).decode()
    ok(d == "tuOSpGlFlIXsozq4HFNeeGeFLEI=", "PasswordDigest test vector")


def check_limits(sim):
    dev = "/onvif/device_service"
    big = envelope("<tds:GetSystemDateAndTime/>" + "<!--" + "x" * (70 * 1024) + "-->")
    st, _, _ = post(sim.http, dev, big)
    ok(st == 413, "body > 64 KiB -> 413")
    st, root, _ = post(sim.http, dev, "<s:Envelope")
    ok(st == 400, "malformed XML -> 400")
    c = http.client.HTTPConnection("127.0.0.1", sim.http, timeout=5)
    c.request("GET", dev)
    ok(c.getresponse().status == 405, "GET -> 405")
    c.close()
    held = []
    for _ in range(16):
        s = socket.create_connection(("127.0.0.1", sim.http))
        held.append(s)
    time.sleep(0.3)
    s = socket.create_connection(("127.0.0.1", sim.http))
    s.settimeout(3)
    ok(s.recv(100).startswith(b"HTTP/1.1 503"), "17th concurrent connection -> 503")
    s.close()
    for s in held:
        s.close()
    time.sleep(0.3)
    st, _, _ = post(sim.http, dev, envelope("<tds:GetSystemDateAndTime/>"))
    ok(st == 200, "serves again after the idle connections close")


def check_log(sim):
    ops = [e for e in sim.log_lines() if e["op"] != "auth_failed"]
    want = [
        {"op": "ContinuousMove", "profile": "main", "pan": 0.5, "tilt": 0.0, "zoom": 0.0},
        {"op": "Stop", "profile": "main", "pan_tilt": True, "zoom": True},
        {"op": "GotoPreset", "profile": "main", "preset": "2"},
        {"op": "GotoHomePosition", "profile": "sub"},
        {"op": "GetPresets", "profile": "main"},
        {"op": "SetPreset", "profile": "main", "preset": "3", "name": "Lobby"},
        {"op": "RemovePreset", "profile": "main", "preset": "3"},
        {"op": "GotoPreset", "fault": "ter:NoToken", "profile": "main"},
    ]
    ok(ops == want, "PTZ log lines %r" % ops)
    fails = [e for e in sim.log_lines() if e["op"] == "auth_failed"]
    ok(len(fails) >= 6, "auth_failed lines (%d)" % len(fails))


def check_skew(sim_path):
    sim = Sim(sim_path, ["--clock-offset", "3600", "--auth", "wsse"])
    dev = "/onvif/device_service"
    st, root, hd = Client(sim.http, "none").call(dev, "<tds:GetDeviceInformation/>")
    ok(st == 400 and "www-authenticate" not in hd, "--auth wsse: no credentials -> 400, no challenge")
    st, _, _ = Client(sim.http, "wsse").call(dev, "<tds:GetDeviceInformation/>")
    ok(st == 400, "device clock +1 h: Created from the local clock -> 400")
    off = device_time_offset(sim.http)
    ok(abs(off - 3600) < 5, "offset from GetSystemDateAndTime = %.1f s" % off)
    st, _, _ = Client(sim.http, "wsse", offset=off).call(dev, "<tds:GetDeviceInformation/>")
    ok(st == 200, "Created = local clock + offset -> 200")
    sim.stop()


def check_digest_only(sim_path):
    sim = Sim(sim_path, ["--auth", "digest", "--digest-alg", "SHA-256,MD5"])
    dev = "/onvif/device_service"
    body = "<tds:GetDeviceInformation/>"
    st, _, hd = Client(sim.http, "none").call(dev, body)
    algs = [re.search(r"algorithm=([\w-]+)", c).group(1) for c in hd["www-authenticate*"]]
    ok(st == 401 and algs == ["SHA-256", "MD5"], "--digest-alg SHA-256,MD5: two challenges %r" % algs)
    for i, alg in enumerate(algs):
        st, _, _ = Client(sim.http, "digest", pick=i).call(dev, body)
        ok(st == 200, "HTTP digest %s -> 200" % alg)
    st, _, hd = Client(sim.http, "wsse").call(dev, body)
    ok(st == 401 and hd["www-authenticate*"], "--auth digest: WS-Security alone -> 401 challenge")
    # the digest uri must be the request path
    st, hd, _ = post(sim.http, dev, envelope(body))
    auth = digest_authorization(hd["www-authenticate*"][1], USER, PASSWORD, "POST", "/onvif/other")
    st, _, _ = post(sim.http, dev, envelope(body), {"Authorization": auth})
    ok(st == 401, "digest uri != request path -> 401")
    sim.stop()


def main():
    global VERBOSE
    ap = argparse.ArgumentParser()
    ap.add_argument("--sim", default=os.path.join(os.path.dirname(os.path.abspath(__file__)), "sim.py"))
    ap.add_argument("-v", "--verbose", action="store_true")
    a = ap.parse_args()
    VERBOSE = a.verbose
    import atexit
    atexit.register(kill_leftovers)
    sim = Sim(a.sim)
    try:
        device_time_offset(sim.http)
        check_discovery(sim)
        check_device(sim)
        check_media(sim)
        check_ptz(sim)
        check_auth_failures(sim)
        check_limits(sim)
        check_log(sim)
    finally:
        if sim.proc.poll() is None:
            sim.stop()
    check_skew(a.sim)
    check_digest_only(a.sim)
    print("ok: %d checks" % CHECKS)


if __name__ == "__main__":
    main()
