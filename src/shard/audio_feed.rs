//! An announcement played into a `local` stream: G.711 A-law cut into 20 ms RTP packets
//! (payload type 8, as a camera's plain-RTP audio would come) and given to the stream at the
//! pace of the audio, so its senders (a voice broadcast's) and its listeners take it live.
//! At the end of the audio the stream closes, which ends its senders.

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
            s.on_local_packet(rtp_packet(ssrc, seq, chunk));
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

/// RTP packet `seq` (0-based) of the announcement.
fn rtp_packet(ssrc: u32, seq: usize, payload: &[u8]) -> Bytes {
    let mut p = BytesMut::with_capacity(12 + payload.len());
    p.put_u8(0x80);
    // The marker on the first packet: the start of a talkspurt (RFC 3551 §4.1).
    p.put_u8(if seq == 0 { 0x80 | PCMA_PAYLOAD_TYPE } else { PCMA_PAYLOAD_TYPE });
    p.put_u16(seq as u16);
    p.put_u32((seq * SAMPLES_PER_PACKET) as u32);
    p.put_u32(ssrc);
    p.put_slice(payload);
    p.freeze()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn packets_carry_the_pace_in_their_timestamps() {
        let p = rtp_packet(0x0102_0304, 3, &[0xD5; 160]);
        assert_eq!(&p[..12], &[0x80, 8, 0, 3, 0, 0, 1, 0xE0, 1, 2, 3, 4]);
        assert_eq!(p.len(), 172);
        assert_eq!(rtp_packet(1, 0, &[0xD5])[1], 0x88, "marker on the first");
    }
}
