#!/usr/bin/env python3
"""A simulated ONVIF device (Profile S subset) for gmv's integration tests.

Standard library only. See tests/onvif/README.md for the behaviour and
src/proto/onvif.rs (gmv's side) for the wire forms.

    python3 tests/onvif/sim.py --http-port P --discovery-port D --user U --password PW \
        --rtsp-main URL --rtsp-sub URL [--bind 127.0.0.1] [--name NAME] [--log FILE] \
        [--multicast] [--auth both|wsse|digest] [--clock-offset SECONDS] [--extra-xaddr URL]...

Prints "ready" on stdout once both sockets are bound, runs until SIGTERM/SIGINT,
then exits 0.
"""

import argparse
import base64
import binascii
import hashlib
import hmac
import ipaddress
import json
import os
import re
import signal
import socket
import struct
import sys
import threading
import time
import uuid
import xml.etree.ElementTree as ET
from collections import OrderedDict
from datetime import datetime, timedelta, timezone
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from urllib.parse import quote
from xml.sax.saxutils import escape, quoteattr

# ---------------------------------------------------------------- namespaces
SOAP12 = "http://www.w3.org/2003/05/soap-envelope"
SOAP11 = "http://schemas.xmlsoap.org/soap/envelope/"
WSA = "http://schemas.xmlsoap.org/ws/2004/08/addressing"
WSD = "http://schemas.xmlsoap.org/ws/2005/04/discovery"
WSSE = "http://docs.oasis-open.org/wss/2004/01/oasis-200401-wss-wssecurity-secext-1.0.xsd"
WSU = "http://docs.oasis-open.org/wss/2004/01/oasis-200401-wss-wssecurity-utility-1.0.xsd"
PW_DIGEST = ("http://docs.oasis-open.org/wss/2004/01/"
             "oasis-200401-wss-username-token-profile-1.0#PasswordDigest")
TT = "http://www.onvif.org/ver10/schema"
TDS = "http://www.onvif.org/ver10/device/wsdl"
TRT = "http://www.onvif.org/ver10/media/wsdl"
TR2 = "http://www.onvif.org/ver20/media/wsdl"
TPTZ = "http://www.onvif.org/ver20/ptz/wsdl"
TER = "http://www.onvif.org/ver10/error"
DN = "http://www.onvif.org/ver10/network/wsdl"

WSD_PROBE_ACTION = WSD + "/Probe"
WSD_MATCHES_ACTION = WSD + "/ProbeMatches"
WSA_ANONYMOUS = WSA + "/role/anonymous"
MATCH_RFC3986 = WSD + "/rfc3986"
MATCH_STRCMP0 = WSD + "/strcmp0"
MULTICAST_GROUP = "239.255.255.250"

GENERIC_PT_VELOCITY = "http://www.onvif.org/ver10/tptz/PanTiltSpaces/VelocityGenericSpace"
GENERIC_Z_VELOCITY = "http://www.onvif.org/ver10/tptz/ZoomSpaces/VelocityGenericSpace"
GENERIC_PT_SPEED = "http://www.onvif.org/ver10/tptz/PanTiltSpaces/GenericSpeedSpace"
GENERIC_Z_SPEED = "http://www.onvif.org/ver10/tptz/ZoomSpaces/ZoomGenericSpeedSpace"

# ---------------------------------------------------------------- limits
MAX_BODY = 64 * 1024           # request bodies above this are refused (413)
MAX_CONNECTIONS = 16           # concurrent HTTP connections; the 17th gets 503
SOCKET_TIMEOUT = 10.0          # per-connection read timeout, seconds
MAX_DATAGRAM = 64 * 1024
TIME_WINDOW = 300              # WS-Security Created must be within +-5 min
DIGEST_NONCE_TTL = 300         # HTTP digest nonces are valid for 5 min
REPLAY_CACHE = 4096            # remembered (Nonce, Created) pairs
MAX_PRESETS = 64
MAX_PRESET_NAME = 64
MAX_TOKEN = 64

MANUFACTURER = "GMV-Sim"
MODEL = "SimCam-PTZ"
FIRMWARE = "V1.0.0 build 240101"
HARDWARE_ID = "SIM-HW-0001"
REALM = "GMV-Sim ONVIF"

ENV_OPEN = (
    '<?xml version="1.0" encoding="UTF-8"?>\n'
    '<env:Envelope xmlns:env="%s" xmlns:tt="%s" xmlns:tds="%s" xmlns:trt="%s" '
    'xmlns:tr2="%s" xmlns:tptz="%s" xmlns:ter="%s">' % (SOAP12, TT, TDS, TRT, TR2, TPTZ, TER))


def q(name):
    """'{ns}local' helper: q((NS, 'Local'))."""
    return "{%s}%s" % name


def local(tag):
    return tag.rsplit("}", 1)[-1] if isinstance(tag, str) else ""


def ns_of(tag):
    return tag[1:].split("}", 1)[0] if isinstance(tag, str) and tag.startswith("{") else ""


def has_dtd(data):
    low = data[:MAX_BODY + 1].lower()
    return b"<!doctype" in low or b"<!entity" in low


# ---------------------------------------------------------------- faults
class Fault(Exception):
    def __init__(self, code, subcodes, reason, http=None):
        super().__init__(reason)
        self.code = code                 # "env:Sender" / "env:Receiver" / ...
        self.subcodes = list(subcodes)   # ["ter:InvalidArgVal", "ter:NoProfile"]
        self.reason = reason
        self.http = http or (400 if code == "env:Sender" else 500)

    def xml(self):
        inner = ""
        for sc in reversed(self.subcodes):
            inner = "<env:Subcode><env:Value>%s</env:Value>%s</env:Subcode>" % (sc, inner)
        body = ("<env:Fault><env:Code><env:Value>%s</env:Value>%s</env:Code>"
                '<env:Reason><env:Text xml:lang="en">%s</env:Text></env:Reason></env:Fault>'
                % (self.code, inner, escape(self.reason)))
        return envelope(body)


def not_authorized():
    return Fault("env:Sender", ["ter:NotAuthorized"], "Sender not Authorized", http=400)


def invalid_args(msg):
    return Fault("env:Sender", ["ter:InvalidArgs"], msg)


def invalid_val(sub, msg):
    return Fault("env:Sender", ["ter:InvalidArgVal", sub], msg)


def envelope(body):
    return ENV_OPEN + "<env:Body>" + body + "</env:Body></env:Envelope>"


# ---------------------------------------------------------------- helpers
def child(el, ns, name):
    return el.find("{%s}%s" % (ns, name)) if el is not None else None


def text_of(el, ns, name, required=False, what=None):
    c = child(el, ns, name)
    if c is None or c.text is None or not c.text.strip():
        if required:
            raise invalid_args("missing %s" % (what or name))
        return None
    return c.text.strip()


def token_arg(el, ns, name):
    t = text_of(el, ns, name, required=True)
    if len(t) > MAX_TOKEN:
        raise invalid_args("%s too long" % name)
    return t


def parse_bool(s, what):
    if s is None:
        return None
    s = s.strip()
    if s in ("true", "1"):
        return True
    if s in ("false", "0"):
        return False
    raise invalid_args("%s is not a boolean" % what)


def parse_float_attr(el, attr, what):
    v = el.get(attr)
    if v is None:
        raise invalid_args("missing %s@%s" % (what, attr))
    try:
        f = float(v)
    except ValueError:
        raise invalid_args("%s@%s is not a number" % (what, attr))
    if f != f or f in (float("inf"), float("-inf")):
        raise invalid_args("%s@%s is not finite" % (what, attr))
    return f


_CREATED_RE = re.compile(
    r"^(\d{4})-(\d{2})-(\d{2})T(\d{2}):(\d{2}):(\d{2})(\.\d{1,9})?(Z|[+-]\d{2}:\d{2})?$")


def parse_created(s):
    m = _CREATED_RE.match(s)
    if not m:
        return None
    y, mo, d, h, mi, se = (int(x) for x in m.groups()[:6])
    frac = m.group(7)
    micro = int((frac[1:] + "000000")[:6]) if frac else 0
    try:
        dt = datetime(y, mo, d, h, mi, se, micro, tzinfo=timezone.utc)
    except ValueError:
        return None
    tz = m.group(8)
    if tz and tz != "Z":
        sign = 1 if tz[0] == "+" else -1
        dt -= sign * timedelta(hours=int(tz[1:3]), minutes=int(tz[4:6]))
    return dt.timestamp()


_DIGEST_PARAM_RE = re.compile(r'\s*([A-Za-z0-9_-]+)\s*=\s*("((?:[^"\\]|\\.)*)"|[^,\s]*)\s*(,|$)')


def parse_digest_header(value):
    if not value or not value[:7].lower() == "digest ":
        return None
    rest = value[7:]
    params = {}
    pos = 0
    while pos < len(rest):
        m = _DIGEST_PARAM_RE.match(rest, pos)
        if not m or m.end() == pos:
            return None
        key = m.group(1).lower()
        val = m.group(3) if m.group(3) is not None else m.group(2)
        if m.group(3) is not None:
            val = re.sub(r"\\(.)", r"\1", val)
        params[key] = val
        pos = m.end()
    return params


DIGEST_HASHES = {"MD5": hashlib.md5, "SHA-256": hashlib.sha256}


def hhex(alg, s):
    return DIGEST_HASHES[alg](s.encode("utf-8")).hexdigest()


# ---------------------------------------------------------------- device state
class Device:
    def __init__(self, args):
        self.args = args
        self.user = args.user
        self.password = args.password
        self.name = args.name
        self.auth_mode = args.auth
        self.digest_algs = args.digest_alg
        self.clock_offset = args.clock_offset
        host = args.bind if ":" not in args.bind else "[%s]" % args.bind
        self.base = "http://%s:%d" % (host, args.http_port)
        self.device_xaddr = self.base + "/onvif/device_service"
        self.media_xaddr = self.base + "/onvif/media_service"
        self.media2_xaddr = self.base + "/onvif/media2_service"
        self.ptz_xaddr = self.base + "/onvif/ptz_service"
        self.extra_xaddrs = list(args.extra_xaddr or [])
        self.serial = "SIM" + hashlib.sha1(
            ("%s:%d" % (self.name, args.http_port)).encode()).hexdigest()[:12].upper()
        self.endpoint = "urn:uuid:" + str(args.uuid or uuid.uuid5(
            uuid.NAMESPACE_URL, "gmv-onvif-sim:%s:%d" % (self.name, args.http_port)))
        self.instance_id = int(time.time())
        self.msg_no = 0
        self.msg_lock = threading.Lock()
        self.profiles = OrderedDict([
            ("main", dict(name="MainStream", enc="VideoEncoder_main", w=1920, h=1080, fps=25,
                          kbps=4096, gov=50, uri=args.rtsp_main)),
            ("sub", dict(name="SubStream", enc="VideoEncoder_sub", w=640, h=360, fps=25,
                         kbps=512, gov=50, uri=args.rtsp_sub)),
        ])
        self.presets = OrderedDict([("1", "Gate"), ("2", "Parking")])
        self.next_preset = 3
        self.state_lock = threading.Lock()
        self.log_path = args.log
        self.log_lock = threading.Lock()
        if self.log_path:
            open(self.log_path, "a").close()
        self.digest_secret = os.urandom(16)
        self.opaque = binascii.hexlify(os.urandom(8)).decode()
        self.replay = OrderedDict()
        self.replay_lock = threading.Lock()

    # -- misc
    def now(self):
        """The device clock (wall clock + --clock-offset)."""
        return time.time() + self.clock_offset

    def scopes(self):
        return [
            "onvif://www.onvif.org/type/video_encoder",
            "onvif://www.onvif.org/type/ptz",
            "onvif://www.onvif.org/Profile/Streaming",
            "onvif://www.onvif.org/name/" + quote(self.name, safe=""),
            "onvif://www.onvif.org/hardware/" + quote(MODEL, safe=""),
            "onvif://www.onvif.org/location/country/china",
            "onvif://www.onvif.org/location/city/test-lab",
        ]

    def xaddrs(self):
        return self.extra_xaddrs + [self.device_xaddr]

    def next_message_number(self):
        with self.msg_lock:
            self.msg_no += 1
            return self.msg_no

    def log(self, entry):
        if not self.log_path:
            return
        line = json.dumps(entry, separators=(", ", ": ")) + "\n"
        with self.log_lock:
            with open(self.log_path, "a", encoding="utf-8") as f:
                f.write(line)
                f.flush()

    # -- HTTP digest
    def new_digest_nonce(self):
        ts = "%x" % int(time.time())
        mac = hmac.new(self.digest_secret, ts.encode(), hashlib.sha256).hexdigest()[:32]
        return ts + mac

    def digest_nonce_state(self, nonce):
        """'ok', 'stale' or 'bad'."""
        if len(nonce) < 33 or len(nonce) > 64:
            return "bad"
        ts, mac = nonce[:-32], nonce[-32:]
        want = hmac.new(self.digest_secret, ts.encode(), hashlib.sha256).hexdigest()[:32]
        if not hmac.compare_digest(mac, want):
            return "bad"
        try:
            age = time.time() - int(ts, 16)
        except ValueError:
            return "bad"
        if age < -5 or age > DIGEST_NONCE_TTL:
            return "stale"
        return "ok"

    def challenges(self, stale=False):
        """One WWW-Authenticate value per configured algorithm, most preferred first."""
        nonce = self.new_digest_nonce()
        out = []
        for alg in self.digest_algs:
            h = 'Digest realm="%s", qop="auth", nonce="%s", opaque="%s", algorithm=%s' % (
                REALM, nonce, self.opaque, alg)
            if stale:
                h += ", stale=TRUE"
            out.append(h)
        return out

    def check_digest(self, params, method, path):
        """None on success, else a failure reason."""
        for k in ("username", "realm", "nonce", "uri", "response"):
            if k not in params:
                return "digest_malformed"
        if params["username"] != self.user:
            return "digest_unknown_user"
        if params["realm"] != REALM:
            return "digest_bad_realm"
        alg = params.get("algorithm", "MD5").upper()
        if alg not in self.digest_algs:
            return "digest_bad_algorithm"
        if params["uri"] != path:
            return "digest_bad_uri"
        st = self.digest_nonce_state(params["nonce"])
        if st != "ok":
            return "digest_" + st + "_nonce"
        ha1 = hhex(alg, "%s:%s:%s" % (self.user, REALM, self.password))
        ha2 = hhex(alg, "%s:%s" % (method, params["uri"]))
        qop = params.get("qop")
        if qop is None:
            want = hhex(alg, "%s:%s:%s" % (ha1, params["nonce"], ha2))
        elif qop == "auth":
            if "nc" not in params or "cnonce" not in params:
                return "digest_malformed"
            want = hhex(alg, "%s:%s:%s:%s:%s:%s" % (ha1, params["nonce"], params["nc"],
                                                     params["cnonce"], qop, ha2))
        else:
            return "digest_bad_qop"
        if not hmac.compare_digest(want, params["response"].lower()):
            return "digest_bad_response"
        return None

    # -- WS-Security UsernameToken
    def check_wsse(self, security):
        """None on success, else a failure reason."""
        tok = child(security, WSSE, "UsernameToken")
        if tok is None:
            return "wsse_no_usernametoken"
        username = text_of(tok, WSSE, "Username")
        pw_el = child(tok, WSSE, "Password")
        nonce_text = text_of(tok, WSSE, "Nonce")
        created = text_of(tok, WSU, "Created") or text_of(tok, WSSE, "Created")
        if username is None or pw_el is None or pw_el.text is None:
            return "wsse_malformed"
        if pw_el.get("Type", "").strip() != PW_DIGEST:
            return "wsse_not_password_digest"
        if nonce_text is None or created is None:
            return "wsse_malformed"
        try:
            nonce = base64.b64decode(nonce_text, validate=True)
        except (binascii.Error, ValueError):
            return "wsse_bad_nonce"
        if not 1 <= len(nonce) <= 256:
            return "wsse_bad_nonce"
        ts = parse_created(created)
        if ts is None:
            return "wsse_bad_created"
        if abs(ts - self.now()) > TIME_WINDOW:
            return "wsse_time_skew"
        if username != self.user:
            return "wsse_unknown_user"
        want = base64.b64encode(hashlib.sha1(
            nonce + created.encode("utf-8") + self.password.encode("utf-8")).digest()).decode()
        if not hmac.compare_digest(want.encode(), pw_el.text.strip().encode()):
            return "wsse_bad_digest"
        key = (nonce_text, created)
        with self.replay_lock:
            if key in self.replay:
                return "wsse_replay"
            self.replay[key] = True
            while len(self.replay) > REPLAY_CACHE:
                self.replay.popitem(last=False)
        return None

    # -- profiles
    def profile(self, token):
        if token not in self.profiles:
            raise invalid_val("ter:NoProfile", "The requested profile token does not exist")
        return self.profiles[token]


# ---------------------------------------------------------------- XML builders
def ptz_config_xml(prefix):
    return (
        '<%s token="PTZConfig_1"><tt:Name>PTZ</tt:Name><tt:UseCount>2</tt:UseCount>'
        '<tt:NodeToken>PTZNode_1</tt:NodeToken>'
        '<tt:DefaultContinuousPanTiltVelocitySpace>%s</tt:DefaultContinuousPanTiltVelocitySpace>'
        '<tt:DefaultContinuousZoomVelocitySpace>%s</tt:DefaultContinuousZoomVelocitySpace>'
        '<tt:DefaultPTZSpeed><tt:PanTilt x="0.5" y="0.5" space="%s"/>'
        '<tt:Zoom x="0.5" space="%s"/></tt:DefaultPTZSpeed>'
        '<tt:DefaultPTZTimeout>PT5S</tt:DefaultPTZTimeout></%s>'
        % (prefix, GENERIC_PT_VELOCITY, GENERIC_Z_VELOCITY, GENERIC_PT_SPEED, GENERIC_Z_SPEED,
           prefix))


def video_source_xml(prefix):
    return ('<%s token="VideoSourceConfig_1"><tt:Name>VideoSourceConfig</tt:Name>'
            '<tt:UseCount>2</tt:UseCount><tt:SourceToken>VideoSource_1</tt:SourceToken>'
            '<tt:Bounds x="0" y="0" width="1920" height="1080"/></%s>' % (prefix, prefix))


def media1_profile_xml(token, p, elem="trt:Profiles"):
    return (
        '<%s token=%s fixed="true"><tt:Name>%s</tt:Name>%s'
        '<tt:VideoEncoderConfiguration token="%s"><tt:Name>%s</tt:Name><tt:UseCount>1</tt:UseCount>'
        '<tt:Encoding>H264</tt:Encoding>'
        '<tt:Resolution><tt:Width>%d</tt:Width><tt:Height>%d</tt:Height></tt:Resolution>'
        '<tt:Quality>5</tt:Quality>'
        '<tt:RateControl><tt:FrameRateLimit>%d</tt:FrameRateLimit>'
        '<tt:EncodingInterval>1</tt:EncodingInterval><tt:BitrateLimit>%d</tt:BitrateLimit>'
        '</tt:RateControl>'
        '<tt:H264><tt:GovLength>%d</tt:GovLength><tt:H264Profile>Main</tt:H264Profile></tt:H264>'
        '<tt:Multicast><tt:Address><tt:Type>IPv4</tt:Type><tt:IPv4Address>0.0.0.0</tt:IPv4Address>'
        '</tt:Address><tt:Port>0</tt:Port><tt:TTL>0</tt:TTL><tt:AutoStart>false</tt:AutoStart>'
        '</tt:Multicast><tt:SessionTimeout>PT60S</tt:SessionTimeout>'
        '</tt:VideoEncoderConfiguration>%s</%s>'
        % (elem, quoteattr(token), escape(p["name"]), video_source_xml("tt:VideoSourceConfiguration"),
           p["enc"], p["enc"], p["w"], p["h"], p["fps"], p["kbps"], p["gov"],
           ptz_config_xml("tt:PTZConfiguration"), elem))


def media2_profile_xml(token, p, types):
    want_all = "All" in types
    conf = ""
    if want_all or "VideoSource" in types:
        conf += video_source_xml("tr2:VideoSource")
    if want_all or "VideoEncoder" in types:
        conf += (
            '<tr2:VideoEncoder token="%s" GovLength="%d" Profile="Main"><tt:Name>%s</tt:Name>'
            '<tt:UseCount>1</tt:UseCount><tt:Encoding>H264</tt:Encoding>'
            '<tt:Resolution><tt:Width>%d</tt:Width><tt:Height>%d</tt:Height></tt:Resolution>'
            '<tt:RateControl ConstantBitRate="false"><tt:FrameRateLimit>%d</tt:FrameRateLimit>'
            '<tt:BitrateLimit>%d</tt:BitrateLimit></tt:RateControl>'
            '<tt:Quality>5</tt:Quality></tr2:VideoEncoder>'
            % (p["enc"], p["gov"], p["enc"], p["w"], p["h"], p["fps"], p["kbps"]))
    if want_all or "PTZ" in types:
        conf += ptz_config_xml("tr2:PTZ")
    out = '<tr2:Profiles token=%s fixed="true"><tr2:Name>%s</tr2:Name>' % (
        quoteattr(token), escape(p["name"]))
    if conf:
        out += "<tr2:Configurations>%s</tr2:Configurations>" % conf
    return out + "</tr2:Profiles>"


# ---------------------------------------------------------------- operations
class Ops:
    """Each operation gets (device, action element) and returns the body XML."""

    # ---- device service
    @staticmethod
    def get_system_date_and_time(dev, el):
        now = datetime.fromtimestamp(dev.now(), tz=timezone.utc)
        local_dt = now + timedelta(hours=8)

        def dt(tag, d):
            return ('<tt:%s><tt:Time><tt:Hour>%d</tt:Hour><tt:Minute>%d</tt:Minute>'
                    '<tt:Second>%d</tt:Second></tt:Time><tt:Date><tt:Year>%d</tt:Year>'
                    '<tt:Month>%d</tt:Month><tt:Day>%d</tt:Day></tt:Date></tt:%s>'
                    % (tag, d.hour, d.minute, d.second, d.year, d.month, d.day, tag))
        return ('<tds:GetSystemDateAndTimeResponse><tds:SystemDateAndTime>'
                '<tt:DateTimeType>NTP</tt:DateTimeType><tt:DaylightSavings>false</tt:DaylightSavings>'
                '<tt:TimeZone><tt:TZ>CST-8</tt:TZ></tt:TimeZone>%s%s'
                '</tds:SystemDateAndTime></tds:GetSystemDateAndTimeResponse>'
                % (dt("UTCDateTime", now), dt("LocalDateTime", local_dt)))

    @staticmethod
    def get_device_information(dev, el):
        return ('<tds:GetDeviceInformationResponse><tds:Manufacturer>%s</tds:Manufacturer>'
                '<tds:Model>%s</tds:Model><tds:FirmwareVersion>%s</tds:FirmwareVersion>'
                '<tds:SerialNumber>%s</tds:SerialNumber><tds:HardwareId>%s</tds:HardwareId>'
                '</tds:GetDeviceInformationResponse>'
                % (MANUFACTURER, MODEL, escape(FIRMWARE), dev.serial, HARDWARE_ID))

    @staticmethod
    def get_capabilities(dev, el):
        cats = [c.text.strip() for c in el.findall(q((TDS, "Category"))) if c.text and c.text.strip()]
        valid = {"All", "Analytics", "Device", "Events", "Imaging", "Media", "PTZ"}
        for c in cats:
            if c not in valid:
                raise invalid_val("ter:NoSuchService", "unknown capability category")
        if not cats:
            cats = ["All"]
        want = set(cats)
        every = "All" in want
        if not every and not want & {"Device", "Media", "PTZ"}:
            raise Fault("env:Receiver", ["ter:ActionNotSupported", "ter:NoSuchService"],
                        "The requested service is not supported")
        out = "<tds:GetCapabilitiesResponse><tds:Capabilities>"
        if every or "Device" in want:
            out += ('<tt:Device><tt:XAddr>%s</tt:XAddr>'
                    '<tt:Network><tt:IPFilter>false</tt:IPFilter><tt:ZeroConfiguration>false'
                    '</tt:ZeroConfiguration><tt:IPVersion6>false</tt:IPVersion6>'
                    '<tt:DynDNS>false</tt:DynDNS></tt:Network>'
                    '<tt:System><tt:DiscoveryResolve>false</tt:DiscoveryResolve>'
                    '<tt:DiscoveryBye>false</tt:DiscoveryBye><tt:RemoteDiscovery>false'
                    '</tt:RemoteDiscovery><tt:SystemBackup>false</tt:SystemBackup>'
                    '<tt:SystemLogging>false</tt:SystemLogging><tt:FirmwareUpgrade>false'
                    '</tt:FirmwareUpgrade><tt:SupportedVersions><tt:Major>2</tt:Major>'
                    '<tt:Minor>60</tt:Minor></tt:SupportedVersions></tt:System>'
                    '</tt:Device>' % escape(dev.device_xaddr))
        if every or "Media" in want:
            out += ('<tt:Media><tt:XAddr>%s</tt:XAddr><tt:StreamingCapabilities>'
                    '<tt:RTPMulticast>false</tt:RTPMulticast><tt:RTP_TCP>true</tt:RTP_TCP>'
                    '<tt:RTP_RTSP_TCP>true</tt:RTP_RTSP_TCP></tt:StreamingCapabilities>'
                    '</tt:Media>' % escape(dev.media_xaddr))
        if every or "PTZ" in want:
            out += '<tt:PTZ><tt:XAddr>%s</tt:XAddr></tt:PTZ>' % escape(dev.ptz_xaddr)
        return out + "</tds:Capabilities></tds:GetCapabilitiesResponse>"

    @staticmethod
    def get_services(dev, el):
        inc = parse_bool(text_of(el, TDS, "IncludeCapability"), "IncludeCapability") or False
        services = [
            (TDS, dev.device_xaddr, 2, 60,
             '<tds:Capabilities><tds:Network IPFilter="false" ZeroConfiguration="false" '
             'IPVersion6="false" DynDNS="false"/><tds:Security UsernameToken="true" '
             'HttpDigest="true"/><tds:System DiscoveryResolve="false" DiscoveryBye="false" '
             'RemoteDiscovery="false"/></tds:Capabilities>'),
            (TRT, dev.media_xaddr, 2, 60,
             '<trt:Capabilities SnapshotUri="false" Rotation="false"><trt:ProfileCapabilities '
             'MaximumNumberOfProfiles="2"/><trt:StreamingCapabilities RTPMulticast="false" '
             'RTP_TCP="true" RTP_RTSP_TCP="true"/></trt:Capabilities>'),
            (TR2, dev.media2_xaddr, 2, 60,
             '<tr2:Capabilities><tr2:ProfileCapabilities MaximumNumberOfProfiles="2"/>'
             '<tr2:StreamingCapabilities RTSPStreaming="true" RTPMulticast="false" '
             'RTP_RTSP_TCP="true"/></tr2:Capabilities>'),
            (TPTZ, dev.ptz_xaddr, 2, 60, '<tptz:Capabilities/>'),
        ]
        out = "<tds:GetServicesResponse>"
        for ns, xaddr, major, minor, caps in services:
            out += "<tds:Service><tds:Namespace>%s</tds:Namespace><tds:XAddr>%s</tds:XAddr>" % (
                ns, escape(xaddr))
            if inc:
                out += "<tds:Capabilities>%s</tds:Capabilities>" % caps
            out += ("<tds:Version><tt:Major>%d</tt:Major><tt:Minor>%d</tt:Minor></tds:Version>"
                    "</tds:Service>" % (major, minor))
        return out + "</tds:GetServicesResponse>"

    # ---- media ver10
    @staticmethod
    def get_profiles(dev, el):
        return "<trt:GetProfilesResponse>%s</trt:GetProfilesResponse>" % "".join(
            media1_profile_xml(t, p) for t, p in dev.profiles.items())

    @staticmethod
    def get_profile(dev, el):
        tok = token_arg(el, TRT, "ProfileToken")
        p = dev.profile(tok)
        return "<trt:GetProfileResponse>%s</trt:GetProfileResponse>" % media1_profile_xml(
            tok, p, elem="trt:Profile")

    @staticmethod
    def get_stream_uri(dev, el):
        setup = child(el, TRT, "StreamSetup")
        if setup is None:
            raise invalid_args("missing StreamSetup")
        stream = text_of(setup, TT, "Stream", required=True, what="StreamSetup/Stream")
        proto = text_of(child(setup, TT, "Transport"), TT, "Protocol", required=True,
                        what="StreamSetup/Transport/Protocol")
        if stream not in ("RTP-Unicast", "RTP-Multicast") or proto not in ("UDP", "TCP", "RTSP", "HTTP"):
            raise invalid_val("ter:InvalidStreamSetup", "Specification of StreamType or Transport "
                              "part in StreamSetup is not supported")
        tok = token_arg(el, TRT, "ProfileToken")
        p = dev.profile(tok)
        return ('<trt:GetStreamUriResponse><trt:MediaUri><tt:Uri>%s</tt:Uri>'
                '<tt:InvalidAfterConnect>false</tt:InvalidAfterConnect>'
                '<tt:InvalidAfterReboot>false</tt:InvalidAfterReboot>'
                '<tt:Timeout>PT0S</tt:Timeout></trt:MediaUri></trt:GetStreamUriResponse>'
                % escape(p["uri"]))

    # ---- media ver20
    @staticmethod
    def media2_get_profiles(dev, el):
        tok = text_of(el, TR2, "Token")
        types = set(t.text.strip() for t in el.findall(q((TR2, "Type"))) if t.text)
        if tok is not None:
            items = [(tok, dev.profile(tok))]
        else:
            items = list(dev.profiles.items())
        return "<tr2:GetProfilesResponse>%s</tr2:GetProfilesResponse>" % "".join(
            media2_profile_xml(t, p, types) for t, p in items)

    @staticmethod
    def media2_get_stream_uri(dev, el):
        proto = text_of(el, TR2, "Protocol", required=True)
        if proto not in ("RtspUnicast", "RtspMulticast", "RTSP", "RtspOverHttp"):
            raise invalid_val("ter:InvalidStreamSetup", "unsupported Protocol")
        tok = token_arg(el, TR2, "ProfileToken")
        p = dev.profile(tok)
        return "<tr2:GetStreamUriResponse><tr2:Uri>%s</tr2:Uri></tr2:GetStreamUriResponse>" % (
            escape(p["uri"]))

    # ---- PTZ ver20
    @staticmethod
    def continuous_move(dev, el):
        tok = token_arg(el, TPTZ, "ProfileToken")
        dev.profile(tok)
        vel = child(el, TPTZ, "Velocity")
        if vel is None:
            raise invalid_args("missing Velocity")
        pt = child(vel, TT, "PanTilt")
        zm = child(vel, TT, "Zoom")
        pan = tilt = zoom = None
        if pt is not None:
            pan = parse_float_attr(pt, "x", "PanTilt")
            tilt = parse_float_attr(pt, "y", "PanTilt")
            sp = pt.get("space")
            if sp is not None and sp != GENERIC_PT_VELOCITY:
                raise invalid_val("ter:SpaceNotSupported", "PanTilt space not supported")
        if zm is not None:
            zoom = parse_float_attr(zm, "x", "Zoom")
            sp = zm.get("space")
            if sp is not None and sp != GENERIC_Z_VELOCITY:
                raise invalid_val("ter:SpaceNotSupported", "Zoom space not supported")
        for v in (pan, tilt, zoom):
            if v is not None and not -1.0 <= v <= 1.0:
                raise invalid_val("ter:InvalidVelocity", "velocity outside [-1, 1]")
        entry = {"op": "ContinuousMove", "profile": tok, "pan": pan, "tilt": tilt, "zoom": zoom}
        timeout = text_of(el, TPTZ, "Timeout")
        if timeout is not None:
            entry["timeout"] = timeout
        dev.log(entry)
        return "<tptz:ContinuousMoveResponse/>"

    @staticmethod
    def stop(dev, el):
        tok = token_arg(el, TPTZ, "ProfileToken")
        dev.profile(tok)
        pt = parse_bool(text_of(el, TPTZ, "PanTilt"), "PanTilt")
        zm = parse_bool(text_of(el, TPTZ, "Zoom"), "Zoom")
        dev.log({"op": "Stop", "profile": tok,
                 "pan_tilt": True if pt is None else pt, "zoom": True if zm is None else zm})
        return "<tptz:StopResponse/>"

    @staticmethod
    def get_presets(dev, el):
        tok = token_arg(el, TPTZ, "ProfileToken")
        dev.profile(tok)
        with dev.state_lock:
            items = list(dev.presets.items())
        dev.log({"op": "GetPresets", "profile": tok})
        return "<tptz:GetPresetsResponse>%s</tptz:GetPresetsResponse>" % "".join(
            '<tptz:Preset token=%s><tt:Name>%s</tt:Name></tptz:Preset>' % (quoteattr(t), escape(n))
            for t, n in items)

    @staticmethod
    def goto_preset(dev, el):
        tok = token_arg(el, TPTZ, "ProfileToken")
        dev.profile(tok)
        preset = token_arg(el, TPTZ, "PresetToken")
        with dev.state_lock:
            known = preset in dev.presets
        if not known:
            raise invalid_val("ter:NoToken", "The requested preset token does not exist")
        dev.log({"op": "GotoPreset", "profile": tok, "preset": preset})
        return "<tptz:GotoPresetResponse/>"

    @staticmethod
    def set_preset(dev, el):
        tok = token_arg(el, TPTZ, "ProfileToken")
        dev.profile(tok)
        name_el = child(el, TPTZ, "PresetName")
        name = name_el.text.strip() if name_el is not None and name_el.text else None
        preset = text_of(el, TPTZ, "PresetToken")
        if name is not None and (not name or len(name) > MAX_PRESET_NAME):
            raise invalid_val("ter:InvalidPresetName", "invalid PresetName")
        if preset is not None and len(preset) > MAX_TOKEN:
            raise invalid_args("PresetToken too long")
        with dev.state_lock:
            if preset is not None:
                if preset not in dev.presets:
                    raise invalid_val("ter:NoToken", "The requested preset token does not exist")
                if name is not None:
                    dev.presets[preset] = name
                name = dev.presets[preset]
            else:
                if len(dev.presets) >= MAX_PRESETS:
                    raise Fault("env:Receiver", ["ter:Action", "ter:TooManyPresets"],
                                "Maximum number of presets reached")
                preset = str(dev.next_preset)
                dev.next_preset += 1
                if name is None:
                    name = "Preset %s" % preset
                dev.presets[preset] = name
        dev.log({"op": "SetPreset", "profile": tok, "preset": preset, "name": name})
        return "<tptz:SetPresetResponse><tptz:PresetToken>%s</tptz:PresetToken></tptz:SetPresetResponse>" % (
            escape(preset))

    @staticmethod
    def remove_preset(dev, el):
        tok = token_arg(el, TPTZ, "ProfileToken")
        dev.profile(tok)
        preset = token_arg(el, TPTZ, "PresetToken")
        with dev.state_lock:
            if preset not in dev.presets:
                raise invalid_val("ter:NoToken", "The requested preset token does not exist")
            del dev.presets[preset]
        dev.log({"op": "RemovePreset", "profile": tok, "preset": preset})
        return "<tptz:RemovePresetResponse/>"

    @staticmethod
    def goto_home_position(dev, el):
        tok = token_arg(el, TPTZ, "ProfileToken")
        dev.profile(tok)
        dev.log({"op": "GotoHomePosition", "profile": tok})
        return "<tptz:GotoHomePositionResponse/>"


# (namespace, local name) -> (handler, needs auth)
OPERATIONS = {
    (TDS, "GetSystemDateAndTime"): (Ops.get_system_date_and_time, False),
    (TDS, "GetDeviceInformation"): (Ops.get_device_information, True),
    (TDS, "GetCapabilities"): (Ops.get_capabilities, True),
    (TDS, "GetServices"): (Ops.get_services, True),
    (TRT, "GetProfiles"): (Ops.get_profiles, True),
    (TRT, "GetProfile"): (Ops.get_profile, True),
    (TRT, "GetStreamUri"): (Ops.get_stream_uri, True),
    (TR2, "GetProfiles"): (Ops.media2_get_profiles, True),
    (TR2, "GetStreamUri"): (Ops.media2_get_stream_uri, True),
    (TPTZ, "ContinuousMove"): (Ops.continuous_move, True),
    (TPTZ, "Stop"): (Ops.stop, True),
    (TPTZ, "GetPresets"): (Ops.get_presets, True),
    (TPTZ, "GotoPreset"): (Ops.goto_preset, True),
    (TPTZ, "SetPreset"): (Ops.set_preset, True),
    (TPTZ, "RemovePreset"): (Ops.remove_preset, True),
    (TPTZ, "GotoHomePosition"): (Ops.goto_home_position, True),
}


# ---------------------------------------------------------------- HTTP
class SoapHandler(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"
    server_version = "GMV-ONVIF-Sim/1.0"
    timeout = SOCKET_TIMEOUT

    def version_string(self):
        return self.server_version

    def log_message(self, fmt, *args):
        if self.server.verbose:
            sys.stderr.write("sim.py http %s - %s\n" % (self.client_address[0], fmt % args))

    # refuse an oversized body before answering "100 Continue"
    def handle_expect_100(self):
        if self._length_problem() is not None:
            self._send_plain(*self._length_problem())
            return False
        return super().handle_expect_100()

    def _length_problem(self):
        if "chunked" in (self.headers.get("Transfer-Encoding") or "").lower():
            return 411, "Length Required"
        cl = self.headers.get("Content-Length")
        if cl is None:
            return 411, "Length Required"
        try:
            n = int(cl)
        except ValueError:
            return 400, "Bad Content-Length"
        if n < 0:
            return 400, "Bad Content-Length"
        if n > MAX_BODY:
            return 413, "Payload Too Large"
        return None

    def _send_plain(self, code, text, extra=None):
        body = (text + "\n").encode()
        self.send_response(code)
        self.send_header("Content-Type", "text/plain; charset=utf-8")
        self.send_header("Content-Length", str(len(body)))
        for k, v in (extra or []):
            self.send_header(k, v)
        self.send_header("Connection", "close")
        self.end_headers()
        if self.command != "HEAD":
            self.wfile.write(body)
        self.close_connection = True

    def _send_soap(self, code, xml):
        body = xml.encode("utf-8")
        self.send_response(code)
        self.send_header("Content-Type", "application/soap+xml; charset=utf-8")
        self.send_header("Content-Length", str(len(body)))
        self.send_header("Connection", "close")
        self.end_headers()
        self.wfile.write(body)
        self.close_connection = True

    def _not_post(self):
        self._send_plain(405, "Method Not Allowed", [("Allow", "POST")])

    do_GET = do_HEAD = do_PUT = do_DELETE = do_PATCH = do_OPTIONS = _not_post

    def do_POST(self):
        dev = self.server.device
        problem = self._length_problem()
        if problem is not None:
            self._send_plain(*problem)
            return
        n = int(self.headers["Content-Length"])
        ctype = (self.headers.get("Content-Type") or "").lower()
        if "application/soap+xml" not in ctype and "text/xml" not in ctype:
            self._send_plain(415, "Unsupported Media Type")
            return
        data = self.rfile.read(n)
        if len(data) != n:
            self.close_connection = True
            return
        if not data.strip():
            # No SOAP message at all (curl --digest sends an empty POST first): answer on
            # the HTTP level only, with the digest challenge when not yet authenticated.
            if self._authenticate(dev, None, ""):
                self._send_plain(400, "Bad Request: empty body")
            return
        try:
            header, action = self._parse(data)
        except Fault as f:
            self._send_soap(f.http, f.xml())
            return
        key = (ns_of(action.tag), local(action.tag))
        op = OPERATIONS.get(key)
        needs_auth = op[1] if op else True
        if needs_auth and not self._authenticate(dev, header, key[1]):
            return
        if op is None:
            f = Fault("env:Receiver", ["ter:ActionNotSupported"],
                      "Optional Action Not Implemented")
            self._send_soap(f.http, f.xml())
            return
        try:
            body = op[0](dev, action)
        except Fault as f:
            if ns_of(action.tag) == TPTZ:
                entry = {"op": key[1], "fault": f.subcodes[-1] if f.subcodes else f.code}
                prof = text_of(action, TPTZ, "ProfileToken")
                if prof is not None and len(prof) <= MAX_TOKEN:
                    entry["profile"] = prof
                dev.log(entry)
            self._send_soap(f.http, f.xml())
            return
        self._send_soap(200, envelope(body))

    def _parse(self, data):
        if has_dtd(data):
            raise Fault("env:Sender", ["ter:WellFormed"], "DTDs are not allowed")
        try:
            root = ET.fromstring(data)
        except ET.ParseError:
            raise Fault("env:Sender", ["ter:WellFormed"], "Well-formed Error")
        if local(root.tag) != "Envelope":
            raise Fault("env:Sender", ["ter:WellFormed"], "not a SOAP envelope")
        if ns_of(root.tag) != SOAP12:
            raise Fault("env:VersionMismatch", [], "SOAP 1.2 envelope required", http=500)
        header = child(root, SOAP12, "Header")
        body = child(root, SOAP12, "Body")
        if body is None:
            raise Fault("env:Sender", ["ter:Tag"], "missing env:Body")
        kids = list(body)
        if len(kids) != 1:
            raise invalid_args("env:Body must hold exactly one element")
        return header, kids[0]

    def _authenticate(self, dev, header, action_name):
        """True when authenticated; otherwise the reply has been sent."""
        security = child(header, WSSE, "Security") if header is not None else None
        digest_hdr = self.headers.get("Authorization")
        use_digest = dev.auth_mode in ("both", "digest")
        use_wsse = dev.auth_mode in ("both", "wsse")

        def fail(reason, kind, stale=False):
            dev.log({"op": "auth_failed", "reason": reason, "action": action_name})
            if kind == "401":
                f = not_authorized()
                body = f.xml().encode("utf-8")
                self.send_response(401)
                for ch in dev.challenges(stale=stale):
                    self.send_header("WWW-Authenticate", ch)
                self.send_header("Content-Type", "application/soap+xml; charset=utf-8")
                self.send_header("Content-Length", str(len(body)))
                self.send_header("Connection", "close")
                self.end_headers()
                self.wfile.write(body)
                self.close_connection = True
            else:
                f = not_authorized()
                self._send_soap(f.http, f.xml())
            return False

        digest_ok = False
        if use_digest and digest_hdr:
            params = parse_digest_header(digest_hdr)
            if params is None:
                return fail("digest_malformed", "401")
            reason = dev.check_digest(params, self.command, self.path)
            if reason is not None:
                return fail(reason, "401", stale=(reason == "digest_stale_nonce"))
            digest_ok = True
        if use_wsse and security is not None:
            reason = dev.check_wsse(security)
            if reason is not None:
                return fail(reason, "400")
            return True
        if digest_ok:
            return True
        if use_digest:
            return fail("missing", "401")
        return fail("missing", "400")


class Server(ThreadingHTTPServer):
    daemon_threads = True
    block_on_close = False
    allow_reuse_address = True
    request_queue_size = 32

    def __init__(self, addr, handler, device, family, verbose):
        self.address_family = family
        self.device = device
        self.verbose = verbose
        self.slots = threading.BoundedSemaphore(MAX_CONNECTIONS)
        super().__init__(addr, handler)

    def process_request(self, request, client_address):
        if not self.slots.acquire(blocking=False):
            try:
                request.settimeout(1.0)
                request.sendall(b"HTTP/1.1 503 Service Unavailable\r\nContent-Length: 0\r\n"
                                b"Connection: close\r\n\r\n")
            except OSError:
                pass
            self.shutdown_request(request)
            return
        try:
            super().process_request(request, client_address)
        except Exception:
            self.slots.release()
            raise

    def process_request_thread(self, request, client_address):
        try:
            super().process_request_thread(request, client_address)
        finally:
            self.slots.release()


# ---------------------------------------------------------------- WS-Discovery
def parse_with_ns(data):
    """Parse XML; return (root, {element: {prefix: uri}}) for d:Types elements."""
    parser = ET.XMLPullParser(events=("start-ns", "start", "end"))
    stack = [{}]
    pending = {}
    scopes_for = {}
    root = None
    parser.feed(data)
    parser.close()
    for event, obj in parser.read_events():
        if event == "start-ns":
            prefix, uri = obj
            pending[prefix] = uri
        elif event == "start":
            m = dict(stack[-1])
            m.update(pending)
            pending = {}
            stack.append(m)
            if root is None:
                root = obj
            if obj.tag == q((WSD, "Types")):
                scopes_for[obj] = m
        elif event == "end":
            stack.pop()
    return root, scopes_for


def types_match(types_el, nsmap, offered):
    if types_el is None or not (types_el.text or "").strip():
        return True
    for qn in types_el.text.split():
        if ":" in qn:
            prefix, loc = qn.split(":", 1)
        else:
            prefix, loc = "", qn
        uri = nsmap.get(prefix)
        ok = False
        for (ons, oloc) in offered:
            if oloc == loc and (uri is None or uri == ons):
                ok = True
        if not ok:
            return False
    return True


def scopes_match(scopes_el, device_scopes):
    if scopes_el is None or not (scopes_el.text or "").strip():
        return True
    rule = scopes_el.get("MatchBy") or MATCH_RFC3986
    for s in scopes_el.text.split():
        if rule == MATCH_STRCMP0:
            if s not in device_scopes:
                return False
        elif rule == MATCH_RFC3986:
            base = s.rstrip("/")
            if not any(t == s or t == base or t.startswith(base + "/") for t in device_scopes):
                return False
        else:
            return False
    return True


def handle_probe(dev, data):
    """Return the ProbeMatches datagram for a Probe, or None to ignore."""
    if len(data) > MAX_DATAGRAM or has_dtd(data):
        return None
    try:
        root, nsmaps = parse_with_ns(data)
    except ET.ParseError:
        return None
    if root is None or root.tag != q((SOAP12, "Envelope")):
        return None
    header = child(root, SOAP12, "Header")
    body = child(root, SOAP12, "Body")
    probe = child(body, WSD, "Probe")
    if probe is None:
        return None
    msg_id = text_of(header, WSA, "MessageID")
    if msg_id is None or len(msg_id) > 256:
        return None
    action = text_of(header, WSA, "Action")
    if action is not None and action != WSD_PROBE_ACTION:
        return None
    types_el = child(probe, WSD, "Types")
    offered = [(DN, "NetworkVideoTransmitter"), (TDS, "Device")]
    if not types_match(types_el, nsmaps.get(types_el, {}), offered):
        return None
    if not scopes_match(child(probe, WSD, "Scopes"), dev.scopes()):
        return None
    reply = (
        '<?xml version="1.0" encoding="UTF-8"?>\n'
        '<env:Envelope xmlns:env="%s" xmlns:wsa="%s" xmlns:d="%s" xmlns:dn="%s" xmlns:tds="%s">'
        '<env:Header>'
        '<wsa:MessageID>urn:uuid:%s</wsa:MessageID>'
        '<wsa:RelatesTo>%s</wsa:RelatesTo>'
        '<wsa:To>%s</wsa:To>'
        '<wsa:Action>%s</wsa:Action>'
        '<d:AppSequence InstanceId="%d" MessageNumber="%d"/>'
        '</env:Header><env:Body><d:ProbeMatches><d:ProbeMatch>'
        '<wsa:EndpointReference><wsa:Address>%s</wsa:Address></wsa:EndpointReference>'
        '<d:Types>dn:NetworkVideoTransmitter tds:Device</d:Types>'
        '<d:Scopes>%s</d:Scopes>'
        '<d:XAddrs>%s</d:XAddrs>'
        '<d:MetadataVersion>1</d:MetadataVersion>'
        '</d:ProbeMatch></d:ProbeMatches></env:Body></env:Envelope>'
        % (SOAP12, WSA, WSD, DN, TDS, uuid.uuid4(), escape(msg_id), WSA_ANONYMOUS,
           WSD_MATCHES_ACTION, dev.instance_id, dev.next_message_number(), dev.endpoint,
           escape(" ".join(dev.scopes())), escape(" ".join(dev.xaddrs()))))
    return reply.encode("utf-8")


class Discovery:
    def __init__(self, dev, bind, port, family, multicast, verbose):
        self.dev = dev
        self.verbose = verbose
        self.stop = threading.Event()
        self.sock = socket.socket(family, socket.SOCK_DGRAM)
        self.sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        self.sock.bind((bind, port))
        self.sock.settimeout(0.2)
        self.msock = None
        if multicast:
            if family != socket.AF_INET:
                raise SystemExit("sim.py: --multicast needs an IPv4 --bind")
            m = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
            m.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
            m.bind((MULTICAST_GROUP, port))
            mreq = struct.pack("4s4s", socket.inet_aton(MULTICAST_GROUP), socket.inet_aton(bind))
            m.setsockopt(socket.IPPROTO_IP, socket.IP_ADD_MEMBERSHIP, mreq)
            m.settimeout(0.2)
            self.msock = m
        self.threads = [threading.Thread(target=self.loop, args=(self.sock,), daemon=True)]
        if self.msock is not None:
            self.threads.append(threading.Thread(target=self.loop, args=(self.msock,), daemon=True))

    def start(self):
        for t in self.threads:
            t.start()

    def loop(self, s):
        while not self.stop.is_set():
            try:
                data, addr = s.recvfrom(MAX_DATAGRAM + 1)
            except socket.timeout:
                continue
            except OSError:
                if self.stop.is_set():
                    return
                continue
            try:
                reply = handle_probe(self.dev, data)
            except Exception as e:  # never let a datagram kill the loop
                if self.verbose:
                    sys.stderr.write("sim.py discovery: ignored datagram: %r\n" % (e,))
                reply = None
            if reply is None:
                if self.verbose:
                    sys.stderr.write("sim.py discovery: ignored %d bytes from %s\n" % (len(data), addr))
                continue
            try:
                self.sock.sendto(reply, addr)   # always answer from the unicast socket
            except OSError:
                pass

    def close(self):
        self.stop.set()
        for t in self.threads:
            t.join(timeout=2)
        self.sock.close()
        if self.msock is not None:
            self.msock.close()


# ---------------------------------------------------------------- main
def main(argv=None):
    ap = argparse.ArgumentParser(description="Simulated ONVIF device for gmv tests")
    ap.add_argument("--http-port", type=int, required=True)
    ap.add_argument("--discovery-port", type=int, required=True)
    ap.add_argument("--bind", default="127.0.0.1", help="loopback address only (default 127.0.0.1)")
    ap.add_argument("--user", required=True)
    ap.add_argument("--password", required=True)
    ap.add_argument("--rtsp-main", required=True)
    ap.add_argument("--rtsp-sub", required=True)
    ap.add_argument("--name", default="GMV Sim Camera")
    ap.add_argument("--log", help="append one JSON line per PTZ call / auth failure")
    ap.add_argument("--multicast", action="store_true",
                    help="also join 239.255.255.250 on the --bind interface")
    ap.add_argument("--auth", choices=("both", "wsse", "digest"), default="both",
                    help="accepted authentication (default both)")
    ap.add_argument("--digest-alg", default="MD5",
                    help="HTTP digest algorithms to challenge with, most preferred first: "
                         "MD5 (default), SHA-256, SHA-256,MD5 or MD5,SHA-256")
    ap.add_argument("--clock-offset", type=float, default=0.0,
                    help="device clock minus real clock, seconds (simulates a skewed camera)")
    ap.add_argument("--extra-xaddr", action="append", default=[],
                    help="extra XAddrs URL listed before the real one in ProbeMatches")
    ap.add_argument("--uuid", help="endpoint UUID (default derived from --name and --http-port)")
    ap.add_argument("--verbose", action="store_true", help="log requests to stderr")
    args = ap.parse_args(argv)

    try:
        addr = ipaddress.ip_address(args.bind)
    except ValueError:
        ap.error("--bind must be an IP address")
    if not addr.is_loopback:
        ap.error("--bind must be a loopback address")
    for p in (args.http_port, args.discovery_port):
        if not 1 <= p <= 65535:
            ap.error("ports must be 1..65535")
    if args.uuid:
        try:
            args.uuid = uuid.UUID(args.uuid)
        except ValueError:
            ap.error("--uuid must be a UUID")
    algs = [a.strip().upper() for a in args.digest_alg.split(",") if a.strip()]
    if not algs or any(a not in DIGEST_HASHES for a in algs) or len(set(algs)) != len(algs):
        ap.error("--digest-alg must list MD5 and/or SHA-256")
    args.digest_alg = algs
    family = socket.AF_INET6 if addr.version == 6 else socket.AF_INET

    dev = Device(args)
    stop = threading.Event()

    def on_signal(signum, frame):
        stop.set()

    signal.signal(signal.SIGTERM, on_signal)
    signal.signal(signal.SIGINT, on_signal)

    httpd = Server((args.bind, args.http_port), SoapHandler, dev, family, args.verbose)
    disc = Discovery(dev, args.bind, args.discovery_port, family, args.multicast, args.verbose)
    http_thread = threading.Thread(target=httpd.serve_forever, kwargs={"poll_interval": 0.2},
                                   daemon=True)
    http_thread.start()
    disc.start()
    sys.stdout.write("ready\n")
    sys.stdout.flush()

    while not stop.wait(0.2):
        pass
    httpd.shutdown()
    httpd.server_close()
    disc.close()
    return 0


if __name__ == "__main__":
    sys.exit(main())
