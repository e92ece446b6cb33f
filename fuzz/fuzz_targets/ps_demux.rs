//! The MPEG-PS demuxer fed RTP-payload-sized pieces with frame ends and losses.
#![no_main]
use gmv::proto::ps::PsDemuxer;
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let mut demux = PsDemuxer::new();
    let mut out = Vec::new();
    let (mut rest, mut ts) = (data, 0u32);
    while let Some((&ctl, tail)) = rest.split_first() {
        let len = (usize::from(ctl & 0x3f) * 32 + 1).min(tail.len());
        let (piece, tail) = tail.split_at(len);
        demux.push(piece, ts, &mut out);
        match ctl >> 6 {
            1 => {
                demux.end_of_frame(&mut out);
                ts = ts.wrapping_add(3600);
            }
            2 => demux.note_loss(&mut out),
            _ => {}
        }
        out.clear();
        rest = tail;
    }
    demux.flush(&mut out);
});
