//! The PS demuxer against program streams written by another implementation (ffmpeg's
//! `vob` = MPEG-2 PS and `mpeg` = MPEG-1 system stream; neither carries a PSM).

mod common;

use common::*;
use gmv::proto::frame::Codec;
use gmv::proto::ps::{PsDemuxer, PsEvent};
use std::process::Command;

fn demux_file(format: &str) -> (usize, usize, u64) {
    let out = work_dir().join(format!("clip.{format}"));
    let status =
        Command::new("ffmpeg").args(["-v", "error", "-y", "-i"]).arg(h264_clip()).args(["-c:v", "copy", "-f", format]).arg(&out).status().unwrap();
    assert!(status.success());
    let ps = std::fs::read(&out).unwrap();
    let mut d = PsDemuxer::new();
    let mut events = Vec::new();
    // RTP-sized pieces, as the ingest path feeds it.
    for chunk in ps.chunks(1400) {
        d.push(chunk, 0, &mut events);
    }
    d.flush(&mut events);
    let frames: Vec<_> = events.iter().filter_map(|e| if let PsEvent::Frame(f) = e { Some(f) } else { None }).collect();
    assert!(frames.iter().all(|f| f.codec == Codec::H264));
    (frames.len(), frames.iter().filter(|f| f.keyframe).count(), d.stats.errors)
}

#[test]
fn demuxes_ffmpeg_mpeg2_program_stream() {
    assert_eq!(demux_file("vob"), (CLIP_FRAMES, CLIP_FRAMES / FPS as usize, 0));
}

#[test]
fn demuxes_ffmpeg_mpeg1_system_stream() {
    assert_eq!(demux_file("mpeg"), (CLIP_FRAMES, CLIP_FRAMES / FPS as usize, 0));
}
