#!/usr/bin/env python3
"""An independent RTSP server for gmv's integration tests (GStreamer's gst-rtsp-server).

    python3 tests/rtsp/serve.py --port N [--user U --password P] [--frames N] [--tls-cert F --tls-key F]

Listens on 127.0.0.1:N only, prints "ready" (one line, flushed) once it serves, then runs
until SIGTERM/SIGINT (exit status 0). Mounts, all live (real time) and shared (every client
of a mount sees the one pipeline):

    /h264      H.264 320x240 25 fps, GOP 25 (pt 96) + AAC 1 kHz sine, 16 kHz mono (pt 97)
    /h265      H.265 320x240 25 fps, GOP 25 (pt 96) + PCMA 1 kHz sine, 8 kHz mono (pt 8)
    /h264only  H.264 as /h264, no audio

--user/--password: every mount asks for RTSP Basic or Digest auth (401 otherwise); --auth
basic|digest offers only one of them.
--tls-cert/--tls-key (PEM files): RTSP over TLS (rtsps://) on the same port, plain RTSP not.
--frames N: each pipeline sends N video frames (and as long a stretch of audio), then ends
(EOS: the clients get an RTCP BYE). A client that starts a pipeline gets all N; one that joins
an ended pipeline another client still holds gets nothing. Default: endless.
A client joining a running pipeline gets its first keyframe at the next GOP boundary (<= 1 s),
as from a camera; the media is not seekable, so its PLAY does not disturb the others.
See README.md beside this file for the Debian packages it needs.
"""

import os
import sys

# Debian's python3-gi lives in /usr/bin/python3's dist-packages: a python3 from elsewhere on
# PATH (pyenv, a venv) cannot import it, so hand over to the system interpreter.
try:
    import gi
except ImportError:
    if os.path.realpath(sys.executable) != os.path.realpath("/usr/bin/python3") and os.access(
        "/usr/bin/python3", os.X_OK
    ):
        os.execv("/usr/bin/python3", ["/usr/bin/python3", *sys.argv])
    sys.exit("serve.py: no python3-gi (apt-get install python3-gi gir1.2-gst-rtsp-server-1.0)")

import argparse
import signal

gi.require_version("Gst", "1.0")
gi.require_version("GstRtsp", "1.0")
gi.require_version("GstRtspServer", "1.0")
from gi.repository import GLib, Gst, GstRtsp, GstRtspServer  # noqa: E402

WIDTH, HEIGHT, FPS, GOP = 320, 240, 25, 25
AAC_RATE = 16000
PCMA_RATE = 8000


def first_element(*names):
    for name in names:
        if Gst.ElementFactory.find(name) is not None:
            return name
    sys.exit(f"serve.py: none of the GStreamer elements {', '.join(names)} is installed")


def video_src(frames):
    num = f" num-buffers={frames}" if frames else ""
    return (
        f"videotestsrc is-live=true pattern=smpte{num} ! "
        f"video/x-raw,width={WIDTH},height={HEIGHT},framerate={FPS}/1,format=I420 ! "
        "queue ! "
    )


def h264(frames, enc):
    if enc == "x264enc":
        # x264 repeats SPS/PPS before every IDR itself: the payloader need not add a second set.
        interval = 0
        encoder = (
            # One slice a frame: tune=zerolatency's sliced threads would cut each frame in
            # slices, and rtph264pay config-interval=-1 then puts SPS/PPS before every IDR
            # slice, which splits a keyframe in two for ffmpeg.
            f"x264enc tune=zerolatency speed-preset=ultrafast bitrate=500 key-int-max={GOP} "
            "bframes=0 threads=1 sliced-threads=false ! "
            "video/x-h264,profile=baseline,stream-format=byte-stream"
        )
    else:  # openh264enc
        interval = -1
        encoder = (
            f"openh264enc gop-size={GOP} bitrate=500000 complexity=low ! "
            "video/x-h264,profile=constrained-baseline,stream-format=byte-stream"
        )
    return (
        video_src(frames) + encoder + " ! h264parse ! "
        f"rtph264pay name=pay0 pt=96 config-interval={interval}"
    )


def h265(frames):
    return (
        video_src(frames)
        + f"x265enc tune=zerolatency speed-preset=ultrafast bitrate=500 key-int-max={GOP} "
        f'option-string="keyint={GOP}:min-keyint={GOP}:scenecut=0:open-gop=0:bframes=0:info=0" ! '
        "video/x-h265,profile=main,stream-format=byte-stream ! h265parse ! "
        # hvc1 carries the parameter sets in caps (codec_data), which rtph265pay turns into
        # the SDP's sprop-vps/sps/pps (from byte-stream it leaves them out).
        "video/x-h265,stream-format=hvc1,alignment=au ! "
        "rtph265pay name=pay0 pt=96 config-interval=-1"
    )


def audio_src(frames, rate):
    # One audio buffer per video frame, so --frames ends both streams together.
    per_buffer = rate // FPS
    num = f" num-buffers={frames}" if frames else ""
    return (
        f"audiotestsrc is-live=true wave=sine freq=1000 volume=0.3 "
        f"samplesperbuffer={per_buffer}{num} ! audio/x-raw,rate={rate},channels=1 ! "
        "audioconvert ! audioresample ! queue ! "
    )


def aac(frames, enc):
    options = {"avenc_aac": " bitrate=32000", "voaacenc": " bitrate=32000", "fdkaacenc": ""}
    return (
        audio_src(frames, AAC_RATE) + f"{enc}{options.get(enc, '')} ! aacparse ! "
        "rtpmp4gpay name=pay1 pt=97"
    )


def pcma(frames):
    return audio_src(frames, PCMA_RATE) + "alawenc ! rtppcmapay name=pay1 pt=8"


def udp_port_range():
    """The kernel's ephemeral range (where the server's UDP ports would fall without a pool),
    above 40000: the tests' engines take their RTP ports in 20000..40000, and their fixed
    ports (tests/common fixed_port) lie above the ephemeral range."""
    try:
        with open("/proc/sys/net/ipv4/ip_local_port_range") as f:
            low, high = (int(v) for v in f.read().split())
    except (OSError, ValueError):
        low, high = 32768, 60999
    low = max(low, 40000)
    return (low, high) if high - low >= 100 else (40000, 60999)


def set_auth_methods(auth, which):
    methods = {"basic": GstRtsp.RTSPAuthMethod.BASIC, "digest": GstRtsp.RTSPAuthMethod.DIGEST}
    if which in methods:
        auth.set_supported_methods(methods[which])
        return
    # Both: GstRTSPAuthMethod is a C enum used as flags, so Python refuses BASIC | DIGEST;
    # hand the value to the C function directly.
    import ctypes

    both = int(GstRtsp.RTSPAuthMethod.BASIC) | int(GstRtsp.RTSPAuthMethod.DIGEST)
    get_pointer = ctypes.pythonapi.PyCapsule_GetPointer
    get_pointer.restype, get_pointer.argtypes = ctypes.c_void_p, [ctypes.py_object, ctypes.c_char_p]
    lib = ctypes.CDLL("libgstrtspserver-1.0.so.0")
    lib.gst_rtsp_auth_set_supported_methods.argtypes = [ctypes.c_void_p, ctypes.c_int]
    lib.gst_rtsp_auth_set_supported_methods(get_pointer(auth.__gpointer__, None), both)
    assert int(auth.get_supported_methods()) == both


def refuse_seeking(pad, info):
    if info.type & Gst.PadProbeType.QUERY_BOTH:
        query = info.get_query()
        if query is not None and query.type == Gst.QueryType.SEEKING:
            return Gst.PadProbeReturn.DROP  # the query fails: not seekable
    elif info.type & Gst.PadProbeType.EVENT_UPSTREAM:
        event = info.get_event()
        if event is not None and event.type == Gst.EventType.SEEK:
            return Gst.PadProbeReturn.DROP
    return Gst.PadProbeReturn.OK


def live_only(_factory, media):
    """Make the media unseekable, as a camera is. videotestsrc answers the seeking query with
    "yes", so the server would turn every PLAY with a Range (ffmpeg sends npt=0.000-) into a
    flushing seek of the shared pipeline: every client already playing would see its RTP
    timestamps jump back to the pipeline's start and its encoder restart."""
    bin_ = media.get_element()
    for name in ("pay0", "pay1"):
        pay = bin_.get_by_name(name)
        if pay is not None:
            pay.get_static_pad("src").add_probe(
                Gst.PadProbeType.QUERY_BOTH | Gst.PadProbeType.EVENT_UPSTREAM, refuse_seeking
            )


def factory(launch, auth, pool):
    f = GstRtspServer.RTSPMediaFactory()
    f.set_launch(f"( {launch} )")
    f.set_shared(True)
    f.set_address_pool(pool)
    f.connect("media-configure", live_only)
    if auth:
        # Only the "user" role (the token given to the configured user) may see or build it;
        # an anonymous or wrong-password request has no role and gets 401.
        f.add_role_from_structure(
            Gst.Structure.from_string(
                "user, media.factory.access=(boolean)true, media.factory.construct=(boolean)true"
            )[0]
        )
    return f


def main():
    parser = argparse.ArgumentParser(description="RTSP test server (GStreamer)")
    parser.add_argument("--port", type=int, required=True)
    parser.add_argument("--user")
    parser.add_argument("--password")
    parser.add_argument("--frames", type=int, default=0, help="video frames per pipeline, 0 = endless")
    parser.add_argument(
        "--auth", choices=["both", "basic", "digest"], default="both",
        help="schemes the server offers (401 with one WWW-Authenticate each) and accepts",
    )
    parser.add_argument("--h264-encoder", choices=["x264enc", "openh264enc"], help="default: the first installed")
    parser.add_argument("--aac-encoder", choices=["avenc_aac", "fdkaacenc", "voaacenc"], help="default: the first installed")
    parser.add_argument("--tls-cert", help="PEM certificate: serve rtsps:// (TLS) instead of rtsp://")
    parser.add_argument("--tls-key", help="its PEM private key")
    args = parser.parse_args()
    if (args.user is None) != (args.password is None):
        parser.error("--user and --password go together")
    if (args.tls_cert is None) != (args.tls_key is None):
        parser.error("--tls-cert and --tls-key go together")

    Gst.init(None)
    h264_enc = first_element(*([args.h264_encoder] if args.h264_encoder else ["x264enc", "openh264enc"]))
    aac_enc = first_element(*([args.aac_encoder] if args.aac_encoder else ["avenc_aac", "fdkaacenc", "voaacenc"]))
    first_element("x265enc")

    server = GstRtspServer.RTSPServer()
    server.set_address("127.0.0.1")
    server.set_service(str(args.port))

    auth = None
    if args.user is not None:
        auth = GstRtspServer.RTSPAuth()
        token = GstRtspServer.RTSPToken()
        token.set_string(GstRtspServer.RTSP_TOKEN_MEDIA_FACTORY_ROLE, "user")
        auth.add_basic(GstRtspServer.RTSPAuth.make_basic(args.user, args.password), token)
        auth.add_digest(args.user, args.password, token)
        set_auth_methods(auth, args.auth)
        auth.set_realm("gmv-test")
        server.set_auth(auth)
    if args.tls_cert is not None:
        from gi.repository import Gio

        if auth is None:
            # Anyone may play: the default token carries the role the factories allow.
            auth = GstRtspServer.RTSPAuth()
            anyone = GstRtspServer.RTSPToken()
            anyone.set_string(GstRtspServer.RTSP_TOKEN_MEDIA_FACTORY_ROLE, "user")
            auth.set_default_token(anyone)
            server.set_auth(auth)
        auth.set_tls_certificate(Gio.TlsCertificate.new_from_files(args.tls_cert, args.tls_key))

    # RTP/RTCP over UDP from 127.0.0.1 too (without a pool the server binds its UDP ports on
    # every address). A port another process holds is skipped: the server takes the next pair.
    pool = GstRtspServer.RTSPAddressPool()
    pool.add_range("127.0.0.1", "127.0.0.1", *udp_port_range(), 0)

    mounts = server.get_mount_points()
    frames = args.frames
    mounts.add_factory("/h264", factory(f"{h264(frames, h264_enc)} {aac(frames, aac_enc)}", auth, pool))
    mounts.add_factory("/h265", factory(f"{h265(frames)} {pcma(frames)}", auth, pool))
    mounts.add_factory("/h264only", factory(h264(frames, h264_enc), auth, pool))

    loop = GLib.MainLoop()
    if server.attach(None) == 0:
        sys.exit(f"serve.py: cannot listen on 127.0.0.1:{args.port}")
    # Sessions of clients that vanished without a TEARDOWN are dropped after their timeout.
    GLib.timeout_add_seconds(2, lambda: server.get_session_pool().cleanup() >= 0)

    for sig in (signal.SIGTERM, signal.SIGINT):
        GLib.unix_signal_add(GLib.PRIORITY_DEFAULT, sig, lambda: loop.quit() or False)
    print("ready", flush=True)
    loop.run()


if __name__ == "__main__":
    main()
