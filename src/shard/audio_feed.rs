//! Audio given to `local` streams as RTP (payload type 8, as a camera's plain-RTP audio would
//! come), so their senders (a voice broadcast's) and listeners take it live: a browser's
//! microphone packets as they come (`webrtc`), or an announcement, G.711 A-law cut into 20 ms
//! packets given at the pace of the audio. At the end of the audio the stream closes, which
//! ends its senders.

use super::Shard;
use super::stream::Stream;
use bytes::{BufMut, Bytes, BytesMut};
use std::rc::{Rc, Weak};
use std::time::{Duration, Instant};

/// Samples per packet: 20 ms at 8 kHz, the G.711 packet time devices expect.
const SAMPLES_PER_PACKET: usize = 160;
const PACKET_TIME: Duration = Duration::from_millis(20);
/// Packets given at once when the executor fell behind (a stall is caught up, bounded).
const CATCH_UP_PACKETS_MAX: u32 = 10;
const PCMA_PAYLOAD_TYPE: u8 = 8;
/// A browser's microphone packet is at most this long (20 ms is 160 bytes; 120 ms, the longest
/// packet time browsers use, 960).
pub(super) const TALK_PAYLOAD_BYTES_MAX: usize = 1200;

/// Plays `alaw` into `stream`, then closes it (unless it was closed or replaced meanwhile).
pub(super) async fn feed(shard: Weak<Shard>, stream: Weak<Stream>, alaw: Vec<u8>) {
    let Some(ssrc) = stream.upgrade().map(|s| s.spec.ssrc) else { return };
    let started = Instant::now();
    let mut chunks = alaw.chunks(SAMPLES_PER_PACKET).enumerate().peekable();
    while chunks.peek().is_some() {
        // Packets due by now (the first at once), a bounded few when behind.
        let due = (started.elapsed().as_micros() / PACKET_TIME.as_micros()) as usize + 1;
        let mut given = 0;
        while let Some((seq, chunk)) = chunks.next_if(|(i, _)| *i < due) {
            let Some(s) = stream.upgrade() else { return };
            s.on_local_packet(pcma_rtp(ssrc, seq as u16, (seq * SAMPLES_PER_PACKET) as u32, seq == 0, chunk));
            given += 1;
            if given >= CATCH_UP_PACKETS_MAX {
                break;
            }
        }
        let next = started + PACKET_TIME * (due as u32);
        glommio::timer::sleep(next.saturating_duration_since(Instant::now()).max(Duration::from_millis(1))).await;
    }
    let (Some(shard), Some(stream)) = (shard.upgrade(), stream.upgrade()) else { return };
    // Still this stream (not closed and reopened under its SSRC meanwhile).
    let ours = shard.streams.borrow().get(&ssrc).is_some_and(|s| Rc::ptr_eq(s, &stream));
    if ours {
        tracing::info!(ssrc, ms = alaw.len() / 8, "announcement played to its end");
        super::stream::close_stream(&shard, ssrc, "announcement played to its end");
    }
}

/// A PCMA RTP packet of a local stream (an announcement's or a microphone's); `marker` on the
/// first of a talkspurt (RFC 3551 §4.1).
pub(super) fn pcma_rtp(ssrc: u32, seq: u16, timestamp: u32, marker: bool, payload: &[u8]) -> Bytes {
    let mut p = BytesMut::with_capacity(12 + payload.len());
    p.put_u8(0x80);
    p.put_u8(if marker { 0x80 | PCMA_PAYLOAD_TYPE } else { PCMA_PAYLOAD_TYPE });
    p.put_u16(seq);
    p.put_u32(timestamp);
    p.put_u32(ssrc);
    p.put_slice(payload);
    p.freeze()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn packets_carry_the_pace_in_their_timestamps() {
        let p = pcma_rtp(0x0102_0304, 3, 480, false, &[0xD5; 160]);
        assert_eq!(&p[..12], &[0x80, 8, 0, 3, 0, 0, 1, 0xE0, 1, 2, 3, 4]);
        assert_eq!(p.len(), 172);
        assert_eq!(pcma_rtp(1, 0, 0, true, &[0xD5])[1], 0x88, "marker on the first");
    }
}
