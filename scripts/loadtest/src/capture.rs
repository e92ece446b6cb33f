//! A camera capture made once (ffmpeg test pattern at a bitrate) and kept as RTP packets,
//! patched per stream (SSRC, sequence, timestamp) when sent.

use gmv::proto::frame::Codec;
use std::path::{Path, PathBuf};
use std::process::Command;

pub const FPS: u32 = 25;
pub const TS_PER_FRAME: u32 = 90_000 / FPS;

pub struct Capture {
    /// RTP packets per frame, SSRC 0, sequence from 0.
    pub frames: Vec<Vec<Vec<u8>>>,
    pub bytes_per_loop: usize,
}

impl Capture {
    /// Makes (or reuses) `dir/clip-{kbps}k.h264` and packetizes it as PS over RTP.
    pub fn load(dir: &Path, kbps: u32, clip: Option<PathBuf>) -> Result<Capture, String> {
        let path = match clip {
            Some(p) => p,
            None => make_clip(dir, kbps)?,
        };
        let es = std::fs::read(&path).map_err(|e| format!("{}: {e}", path.display()))?;
        let frames = gmv::sim::frames_from_es(Codec::H264, &es, FPS);
        if frames.is_empty() {
            return Err(format!("{}: no H.264 pictures", path.display()));
        }
        let packets = gmv::sim::ps_rtp_packets(&frames, 0);
        let bytes_per_loop = packets.iter().flatten().map(Vec::len).sum();
        Ok(Capture { frames: packets, bytes_per_loop })
    }

    pub fn bitrate_kbps(&self) -> u64 {
        self.bytes_per_loop as u64 * 8 * u64::from(FPS) / self.frames.len() as u64 / 1000
    }
}

fn make_clip(dir: &Path, kbps: u32) -> Result<PathBuf, String> {
    std::fs::create_dir_all(dir).map_err(|e| e.to_string())?;
    let path = dir.join(format!("clip-{kbps}k.h264"));
    if path.exists() {
        return Ok(path);
    }
    let rate = format!("{kbps}k");
    let status = Command::new("ffmpeg")
        .args(["-v", "error", "-y", "-f", "lavfi", "-i", "testsrc2=size=1280x720:rate=25", "-t", "10"])
        .args(["-c:v", "libx264", "-preset", "veryfast", "-pix_fmt", "yuv420p", "-bf", "0", "-g", "50"])
        .args(["-b:v", &rate, "-maxrate", &rate, "-bufsize", &rate, "-f", "h264"])
        .arg(&path)
        .status()
        .map_err(|e| format!("ffmpeg: {e} (apt-get install ffmpeg)"))?;
    if !status.success() {
        return Err("ffmpeg could not make the clip".into());
    }
    Ok(path)
}

/// Writes one packet of stream `ssrc`, loop `lap`, into `out` with its header patched.
pub fn patch(template: &[u8], ssrc: u32, seq: u16, lap_ts: u32, out: &mut Vec<u8>) {
    let start = out.len();
    out.extend_from_slice(template);
    let p = &mut out[start..];
    p[2..4].copy_from_slice(&seq.to_be_bytes());
    let ts = u32::from_be_bytes([p[4], p[5], p[6], p[7]]).wrapping_add(lap_ts);
    p[4..8].copy_from_slice(&ts.to_be_bytes());
    p[8..12].copy_from_slice(&ssrc.to_be_bytes());
}

#[cfg(test)]
mod tests {
    #[test]
    fn patch_rewrites_ssrc_sequence_and_timestamp() {
        let mut template = Vec::new();
        gmv::proto::rtp::RtpPacket::write_header(&mut template, true, 96, 0, 3600, 0);
        template.extend_from_slice(&[9, 9]);
        let mut out = vec![1];
        super::patch(&template, 0xabcd, 7, 90_000, &mut out);
        let p = gmv::proto::rtp::RtpPacket::parse(bytes::Bytes::from(out[1..].to_vec())).unwrap();
        assert_eq!((p.ssrc, p.sequence, p.timestamp, p.marker, &p.payload[..]), (0xabcd, 7, 93_600, true, &[9u8, 9][..]));
    }
}
