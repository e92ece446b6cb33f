//! `gmv --demo`: a picture without a camera. A test pattern (moving bars and a running frame
//! counter) is encoded with OpenH264, muxed to PS and sent over RTP on loopback to a static
//! stream, as a GB28181 camera would. Not on the engine path.

use crate::proto::frame::{Codec, Frame};
use std::time::{Duration, Instant};

/// The demo's stream (stream id `0000000001`).
pub const DEMO_SSRC: u32 = 1;
pub const DEMO_WIDTH: usize = 640;
pub const DEMO_HEIGHT: usize = 360;
pub const DEMO_FPS: u32 = 25;
/// A keyframe every second, so a new viewer starts at once.
const KEYFRAME_EVERY: u32 = DEMO_FPS;
const DEMO_BITRATE_BPS: u32 = 1_000_000;

/// Segments of the 7-segment digits 0-9 (a b c d e f g).
const DIGITS: [u8; 10] = [0x3f, 0x06, 0x5b, 0x4f, 0x66, 0x6d, 0x7d, 0x07, 0x7f, 0x6f];

/// Frame `n` as I420: bars sliding right, a grey ramp, and `n` drawn in big digits.
pub fn pattern_i420(n: u32, width: usize, height: usize) -> Vec<u8> {
    let (w, h) = (width, height);
    let mut yuv = vec![0u8; w * h * 3 / 2];
    // Eight bars (Y, U, V of the usual test colours), sliding 4 px a frame.
    const BARS: [(u8, u8, u8); 8] =
        [(235, 128, 128), (210, 16, 146), (170, 166, 16), (145, 54, 34), (106, 202, 222), (81, 90, 240), (41, 240, 110), (16, 128, 128)];
    let shift = n as usize * 4;
    let bar = |x: usize| BARS[((x + shift) * BARS.len() / w) % BARS.len()];
    let (y_plane, chroma) = yuv.split_at_mut(w * h);
    for y in 0..h {
        for x in 0..w {
            y_plane[y * w + x] = if y > h * 3 / 4 { (x * 219 / w + 16) as u8 } else { bar(x).0 };
        }
    }
    let (u_plane, v_plane) = chroma.split_at_mut(w * h / 4);
    for y in 0..h / 2 {
        for x in 0..w / 2 {
            let (u, v) = if y * 2 > h * 3 / 4 {
                (128, 128)
            } else {
                let b = bar(x * 2);
                (b.1, b.2)
            };
            u_plane[y * (w / 2) + x] = u;
            v_plane[y * (w / 2) + x] = v;
        }
    }
    // The frame number, white on black, top left.
    let digits: Vec<u8> = n.to_string().bytes().map(|b| b - b'0').collect();
    let (seg, thick, gap) = (24usize, 6usize, 14usize);
    let box_w = digits.len() * (seg + gap) + gap;
    for y in 8..8 + 2 * seg + 3 * thick + 8 {
        for x in 8..(8 + box_w).min(w) {
            y_plane[y * w + x] = 16;
        }
    }
    for (i, d) in digits.iter().enumerate() {
        let (ox, oy) = (8 + gap + i * (seg + gap), 12);
        let s = DIGITS[usize::from(*d)];
        let mut fill = |x0: usize, y0: usize, ww: usize, hh: usize| {
            for y in y0..y0 + hh {
                for x in x0..(x0 + ww).min(w) {
                    y_plane[y * w + x] = 235;
                }
            }
        };
        let mid = oy + seg + thick;
        let bottom = oy + 2 * seg + 2 * thick;
        if s & 0x01 != 0 {
            fill(ox, oy, seg, thick)
        }
        if s & 0x02 != 0 {
            fill(ox + seg - thick, oy, thick, seg + thick)
        }
        if s & 0x04 != 0 {
            fill(ox + seg - thick, mid, thick, seg + thick)
        }
        if s & 0x08 != 0 {
            fill(ox, bottom, seg, thick)
        }
        if s & 0x10 != 0 {
            fill(ox, mid, thick, seg + thick)
        }
        if s & 0x20 != 0 {
            fill(ox, oy, thick, seg + thick)
        }
        if s & 0x40 != 0 {
            fill(ox, mid, seg, thick)
        }
    }
    yuv
}

/// Encodes and sends the pattern to `127.0.0.1:port` at `DEMO_FPS`, forever (a thread of its own).
pub fn run(port: u16) -> Result<(), String> {
    use openh264::encoder::{BitRate, Encoder, EncoderConfig, FrameRate, IntraFramePeriod};
    let config = EncoderConfig::new()
        .bitrate(BitRate::from_bps(DEMO_BITRATE_BPS))
        .max_frame_rate(FrameRate::from_hz(DEMO_FPS as f32))
        .intra_frame_period(IntraFramePeriod::from_num_frames(KEYFRAME_EVERY));
    let mut encoder = Encoder::with_api_config(openh264::OpenH264API::from_source(), config).map_err(|e| e.to_string())?;
    let sock = std::net::UdpSocket::bind("127.0.0.1:0").map_err(|e| e.to_string())?;
    let mut sender = crate::sim::PsRtpSender::new(Codec::H264, None, DEMO_SSRC);
    let start = Instant::now();
    for n in 0u32.. {
        let yuv = openh264::formats::YUVBuffer::from_vec(pattern_i420(n, DEMO_WIDTH, DEMO_HEIGHT), DEMO_WIDTH, DEMO_HEIGHT);
        if n % KEYFRAME_EVERY == 0 {
            encoder.force_intra_frame();
        }
        let annexb = encoder.encode(&yuv).map_err(|e| e.to_string())?.to_vec();
        if !annexb.is_empty() {
            let ts = u64::from(n) * 90_000 / u64::from(DEMO_FPS);
            let keyframe = crate::proto::h26x::is_keyframe(Codec::H264, &annexb);
            let frame = Frame { codec: Codec::H264, pts: ts, dts: ts, keyframe, data: annexb.into() };
            for p in sender.packets(&frame) {
                let _ = sock.send_to(&p, ("127.0.0.1", port));
            }
        }
        let due = start + Duration::from_millis(u64::from(n + 1) * 1000 / u64::from(DEMO_FPS));
        if let Some(wait) = due.checked_duration_since(Instant::now()) {
            std::thread::sleep(wait);
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_pattern_encodes_and_decodes_at_its_size() {
        use openh264::encoder::{Encoder, EncoderConfig};
        let mut encoder = Encoder::with_api_config(openh264::OpenH264API::from_source(), EncoderConfig::new()).unwrap();
        let yuv = openh264::formats::YUVBuffer::from_vec(pattern_i420(1234, DEMO_WIDTH, DEMO_HEIGHT), DEMO_WIDTH, DEMO_HEIGHT);
        let annexb = encoder.encode(&yuv).unwrap().to_vec();
        assert!(crate::proto::h26x::is_keyframe(Codec::H264, &annexb));
        let (jpeg, w, h) = crate::snapshot::keyframe_to_jpeg(Codec::H264, &annexb).unwrap();
        assert_eq!((w as usize, h as usize), (DEMO_WIDTH, DEMO_HEIGHT));
        assert!(jpeg.len() > 1000);
        // Frames differ (the bars move, the counter counts).
        assert_ne!(pattern_i420(1, DEMO_WIDTH, DEMO_HEIGHT), pattern_i420(2, DEMO_WIDTH, DEMO_HEIGHT));
    }
}
