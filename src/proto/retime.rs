//! One monotonic clock for every stream's output. A device seeking, resuming or changing
//! speed, a camera restarting, a capture looping: each restarts or jumps the timestamps, and
//! FLV and HLS players (and MP4 files) stall on a jump and refuse time going back. The retimer maps the device's 90 kHz times onto an output clock that runs on
//! from where it was (a jump becomes one frame gap) and, at a scale other than 1, runs at
//! 1/scale of the device's pace, so fast-forward plays fast.

use super::frame::Frame;

/// A step forward larger than this is a jump (seek, resume), not a gap in the media.
pub const JUMP_FORWARD_90K: i64 = 5 * 90_000;
/// A step back larger than this is a jump (a loop, a restart). Smaller ones are reordered
/// pictures of a stream whose only clock is the presentation time (RTP H.264 with B-frames
/// carries no decode time), mapped as they are.
pub const JUMP_BACK_90K: i64 = 45_000;
/// Where the output resumes after a jump: one 25 fps frame after the last output.
pub const JUMP_GAP_90K: i64 = 3_600;
/// Scale 1 in hundredths.
pub const SCALE_X100_ONE: u16 = 100;

/// One track's last input, and the anchor it was mapped with.
#[derive(Debug, Clone, Copy, Default)]
struct Track {
    last_in: Option<i64>,
    anchor_generation: u64,
}

#[derive(Debug, Clone)]
pub struct Retimer {
    scale_x100: u16,
    /// (input, output) times the mapping is linear from; renewed at each jump and speed change.
    anchor: Option<(i64, i64)>,
    anchor_generation: u64,
    /// Video, audio.
    tracks: [Track; 2],
    /// The track whose media time counts as covered (the first seen).
    primary: Option<usize>,
    last_out: i64,
    /// The primary track's latest output time.
    last_primary_out: i64,
    /// Device media time covered, jumps left out.
    covered_90k: u64,
    pub jumps: u64,
}

impl Default for Retimer {
    fn default() -> Self {
        Retimer {
            scale_x100: SCALE_X100_ONE,
            anchor: None,
            anchor_generation: 0,
            tracks: [Track::default(); 2],
            primary: None,
            last_out: 0,
            last_primary_out: 0,
            covered_90k: 0,
            jumps: 0,
        }
    }
}

impl Retimer {
    /// Device media time covered, in ms (a download's progress).
    pub fn covered_ms(&self) -> u64 {
        self.covered_90k / 90
    }

    /// A new speed (hundredths: 25..400); output time goes on from where it is.
    pub fn set_scale(&mut self, scale_x100: u16) {
        debug_assert!(scale_x100 > 0);
        if let Some(last_in) = self.primary.and_then(|p| self.tracks[p].last_in) {
            self.renew_anchor(last_in, self.last_out);
        }
        self.scale_x100 = scale_x100.max(1);
    }

    /// The device's media restarts somewhere else (a seek, a resumed download): the next frame
    /// starts a new anchor even when its time looks continuous.
    pub fn expect_jump(&mut self) {
        if self.anchor.is_some() {
            self.anchor = None;
            self.jumps += 1;
        }
    }

    /// Frames from output time `to_out` on were thrown away (a resumed download drops the GOP
    /// under way): what they covered no longer counts, and the next frame, a jump, takes
    /// their place.
    pub fn rewind(&mut self, to_out: u64) {
        let back_out = (self.last_primary_out - to_out as i64).max(0);
        let back_in = back_out * i64::from(self.scale_x100) / i64::from(SCALE_X100_ONE);
        self.covered_90k = self.covered_90k.saturating_sub(back_in as u64);
        self.last_out = to_out as i64 - JUMP_GAP_90K;
        self.last_primary_out = self.last_primary_out.min(to_out as i64);
        self.expect_jump();
    }

    fn renew_anchor(&mut self, input: i64, output: i64) {
        self.anchor = Some((input, output));
        self.anchor_generation += 1;
    }

    /// Rewrites `f.dts`/`f.pts` onto the output clock (both stay ≥ 0, each track's dts never
    /// goes back).
    pub fn retime(&mut self, f: &mut Frame) {
        let dts = f.dts as i64;
        let cts = (f.pts as i64 - dts).max(0);
        let t = usize::from(!f.codec.is_video());
        let primary = *self.primary.get_or_insert(t);
        let track = self.tracks[t];
        match (self.anchor, track.last_in) {
            // The first frame keeps its time; after an announced jump, one frame gap on.
            (None, _) => {
                let out = if self.anchor_generation == 0 && self.jumps == 0 { dts } else { self.last_out + JUMP_GAP_90K };
                self.renew_anchor(dts, out);
            }
            (Some(_), Some(last)) if track.anchor_generation == self.anchor_generation => {
                let step = dts - last;
                if !(-JUMP_BACK_90K..=JUMP_FORWARD_90K).contains(&step) {
                    self.renew_anchor(dts, self.last_out + JUMP_GAP_90K);
                    self.jumps += 1;
                } else if t == primary && step > 0 {
                    self.covered_90k += step as u64;
                }
            }
            // New to this track, or the other track moved the anchor since: map as it stands.
            (Some(_), _) => {}
        }
        let (ain, aout) = self.anchor.expect("anchored above");
        let scale = i64::from(self.scale_x100);
        let out = (aout + (dts - ain) * i64::from(SCALE_X100_ONE) / scale).max(0);
        // The latest time seen, so reordered pictures neither count twice nor look like jumps.
        let last_in = match self.tracks[t].last_in {
            Some(last) if self.tracks[t].anchor_generation == self.anchor_generation => last.max(dts),
            _ => dts,
        };
        self.tracks[t] = Track { last_in: Some(last_in), anchor_generation: self.anchor_generation };
        self.last_out = self.last_out.max(out);
        if t == primary {
            self.last_primary_out = out;
        }
        f.dts = out as u64;
        f.pts = (out + cts * i64::from(SCALE_X100_ONE) / scale) as u64;
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::proto::frame::Codec;

    fn frame(dts: u64) -> Frame {
        Frame { codec: Codec::H264, pts: dts + 3_600, dts, keyframe: false, data: bytes::Bytes::new() }
    }

    fn run(r: &mut Retimer, times: impl IntoIterator<Item = u64>) -> Vec<u64> {
        times
            .into_iter()
            .map(|t| {
                let mut f = frame(t);
                r.retime(&mut f);
                assert_eq!(f.pts - f.dts, 3_600 * 100 / u64::from(r.scale_x100));
                f.dts
            })
            .collect()
    }

    #[test]
    fn continuous_media_keeps_its_times_and_counts_what_it_covers() {
        let mut r = Retimer::default();
        let out = run(&mut r, (0..26).map(|i| 900_000 + i * 3_600));
        assert_eq!(out, (0..26).map(|i| 900_000 + i * 3_600).collect::<Vec<_>>());
        assert_eq!(r.covered_ms(), 1_000);
    }

    #[test]
    fn a_looping_capture_runs_on_and_reordered_pictures_are_no_jump() {
        let mut r = Retimer::default();
        // 10 s of media, then the capture starts over from its first frame.
        let first: Vec<u64> = (0..250).map(|i| 900_000 + i * 3_600).collect();
        let out = run(&mut r, first.iter().copied().chain(first.iter().copied()));
        assert!(out.windows(2).all(|w| w[1] > w[0]), "monotonic across the loop");
        assert_eq!(out[250] - out[249], JUMP_GAP_90K as u64);
        assert_eq!(r.jumps, 1);
        // Presentation-timed B-frames (I P B B): steps back of a few frames map as they are.
        let mut r = Retimer::default();
        assert_eq!(run(&mut r, [0, 10_800, 3_600, 7_200, 21_600]), vec![0, 10_800, 3_600, 7_200, 21_600]);
        assert_eq!((r.jumps, r.covered_ms()), (0, 240));
    }

    #[test]
    fn a_seek_back_or_forward_continues_one_frame_on() {
        let mut r = Retimer::default();
        run(&mut r, [90_000, 93_600]);
        // back to the start of the file, then far ahead
        assert_eq!(run(&mut r, [0, 3_600]), vec![97_200, 100_800]);
        assert_eq!(run(&mut r, [9_000_000, 9_003_600]), vec![104_400, 108_000]);
        assert_eq!(r.jumps, 2);
        // A seek announced lands on a new anchor even when its time looks close.
        r.expect_jump();
        assert_eq!(run(&mut r, [9_010_800]), vec![111_600]);
        assert_eq!(r.covered_ms(), 120);
    }

    #[test]
    fn a_rewind_gives_back_what_was_dropped_and_goes_on_from_there() {
        let mut r = Retimer::default();
        run(&mut r, (0..50).map(|i| 90_000 + i * 3_600));
        assert_eq!(r.covered_ms(), 1_960);
        // The second GOP (from 1 s) was dropped; the device sends it again from its start.
        r.rewind(90_000 + 25 * 3_600);
        assert_eq!(r.covered_ms(), 1_000, "up to where the dropped GOP began");
        assert_eq!(run(&mut r, [500_000, 503_600]), vec![90_000 + 25 * 3_600, 90_000 + 26 * 3_600]);
        assert_eq!(r.covered_ms(), 1_040);
    }

    #[test]
    fn scale_four_runs_the_output_at_a_quarter_and_stays_monotonic() {
        let mut r = Retimer::default();
        run(&mut r, [0, 3_600]);
        r.set_scale(400);
        assert_eq!(run(&mut r, [7_200, 10_800, 14_400]), vec![4_500, 5_400, 6_300]);
        r.set_scale(25);
        assert_eq!(run(&mut r, [18_000]), vec![6_300 + 14_400]);
        // Audio a little behind video is not a jump, nor does it move video's clock.
        let mut a = frame(17_000);
        a.codec = Codec::Pcma;
        r.retime(&mut a);
        assert_eq!((r.jumps, a.dts), (0, 6_300 + 14_400 - 4 * 1_000));
        assert_eq!(run(&mut r, [21_600]), vec![6_300 + 28_800]);
        // A step back of more than `JUMP_BACK_90K` within a track is a jump: still monotonic.
        assert_eq!(run(&mut r, [71_600]), vec![235_100]);
        assert_eq!(run(&mut r, [3_600]), vec![235_100 + JUMP_GAP_90K as u64]);
    }
}
