//! The MPEG-TS demuxer fed RTP-payload-sized pieces with losses.
#![no_main]
use gmv::proto::ts_demux::TsDemuxer;
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let mut demux = TsDemuxer::new();
    let mut out = Vec::new();
    let mut rest = data;
    while let Some((&ctl, tail)) = rest.split_first() {
        let len = (usize::from(ctl & 0x3f) * 47 + 1).min(tail.len());
        let (piece, tail) = tail.split_at(len);
        demux.push(piece, &mut out);
        if ctl >> 6 == 2 {
            demux.note_loss();
        }
        out.clear();
        rest = tail;
    }
    demux.flush(&mut out);
});
