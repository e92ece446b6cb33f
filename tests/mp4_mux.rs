//! The fMP4 muxer's output decodes in ffprobe with the right duration and frame count.

mod common;

use common::*;
use gmv::proto::frame::Codec;
use gmv::proto::h26x::ParamSets;
use gmv::proto::mp4::{Fmp4Muxer, VideoConfig};
use std::process::Command;

fn duration_s(path: &std::path::Path) -> f64 {
    let out = Command::new("ffprobe").args(["-v", "error", "-show_entries", "format=duration", "-of", "csv=p=0"]).arg(path).output().unwrap();
    String::from_utf8_lossy(&out.stdout).trim().parse().unwrap_or(0.0)
}

fn record(codec: Codec, clip: &std::path::Path, with_aac: bool, name: &str) -> std::path::PathBuf {
    let video = gmv::sim::frames_from_es(codec, &std::fs::read(clip).unwrap(), FPS);
    let audio = if with_aac { gmv::sim::aac_frames(&std::fs::read(aac_clip()).unwrap()) } else { Vec::new() };
    let mut params = ParamSets::default();
    for nal in gmv::proto::h26x::nal_units(&video[0].data) {
        params.observe(codec, nal);
    }
    let adts = audio.first().and_then(|a| gmv::proto::aac::AdtsHeader::parse(&a.data));
    let mut m = Fmp4Muxer::new(VideoConfig::from_params(codec, &params).unwrap(), adts, 0);
    let mut file = m.init_segment();
    for f in gmv::sim::interleave(video, audio) {
        if let Some(fragment) = m.push(&f) {
            file.extend_from_slice(&fragment);
        }
    }
    file.extend_from_slice(&m.flush().unwrap());
    let path = work_dir().join(name);
    std::fs::write(&path, file).unwrap();
    path
}

#[test]
fn h264_with_aac_fmp4_decodes_with_its_duration() {
    let path = record(Codec::H264, h264_clip(), true, "rec.mp4");
    assert_eq!(ffprobe(&path), Probe { codec: "h264".into(), width: WIDTH, height: HEIGHT, frames: CLIP_FRAMES });
    let d = duration_s(&path);
    assert!((d - 4.0).abs() < 1.0, "duration {d}");
    let a = ffprobe_audio(&path);
    assert_eq!((a.codec.as_str(), a.sample_rate), ("aac", 16000));
}

#[test]
fn h265_fmp4_decodes() {
    let path = record(Codec::H265, h265_clip(), false, "rec-hevc.mp4");
    assert_eq!(ffprobe(&path), Probe { codec: "hevc".into(), width: WIDTH, height: HEIGHT, frames: CLIP_FRAMES });
}
