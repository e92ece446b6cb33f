//! The TS muxer's output decodes in ffprobe (H.264, H.265, with AAC).

mod common;

use common::*;
use gmv::proto::frame::Codec;
use gmv::proto::ts::TsMuxer;

fn mux_to_file(video: Codec, clip: &std::path::Path, audio: bool, name: &str) -> std::path::PathBuf {
    let v = gmv::sim::frames_from_es(video, &std::fs::read(clip).unwrap(), FPS);
    let a = if audio { gmv::sim::aac_frames(&std::fs::read(aac_clip()).unwrap()) } else { Vec::new() };
    let mut m = TsMuxer::new(Some(video), audio.then_some(Codec::Aac));
    let mut out = Vec::new();
    m.write_tables(&mut out);
    for f in gmv::sim::interleave(v, a) {
        m.write_frame(&f, &mut out);
    }
    let path = work_dir().join(name);
    std::fs::write(&path, out).unwrap();
    path
}

#[test]
fn h264_with_aac_ts_decodes() {
    let path = mux_to_file(Codec::H264, h264_clip(), true, "mux.ts");
    assert_eq!(ffprobe(&path), Probe { codec: "h264".into(), width: WIDTH, height: HEIGHT, frames: CLIP_FRAMES });
    let a = ffprobe_audio(&path);
    assert_eq!((a.codec.as_str(), a.sample_rate), ("aac", 16000));
    assert_eq!(a.packets, gmv::sim::aac_frames(&std::fs::read(aac_clip()).unwrap()).len());
}

#[test]
fn h265_ts_decodes() {
    let path = mux_to_file(Codec::H265, h265_clip(), false, "mux-hevc.ts");
    assert_eq!(ffprobe(&path), Probe { codec: "hevc".into(), width: WIDTH, height: HEIGHT, frames: CLIP_FRAMES });
}
