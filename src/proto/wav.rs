//! WAV files as announcements for voice broadcast: read into G.711 at 8 kHz mono, the only
//! audio GB28181 devices are sure to play. 16-bit PCM is encoded to A-law or µ-law here (the
//! ITU G.711 segment encoding); A-law and µ-law WAVs are taken as they are when they match the
//! codec asked for, and converted through linear PCM when they do not. Nothing is resampled:
//! another rate or more than one channel is refused with what the file has, so an operator
//! knows what to export.

/// The largest WAV taken (bytes, also the broadcast API's body limit): 4 MiB is over 4
/// minutes of 16-bit PCM at 8 kHz, 8 of A-law.
pub const WAV_BYTES_MAX: usize = 4 << 20;
/// RIFF chunks walked before `fmt ` and `data` must have been found.
const CHUNKS_MAX: usize = 64;
/// The only sample rate taken (G.711's).
pub const SAMPLE_RATE_HZ: u32 = 8000;

/// G.711's two laws.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Law {
    A,
    Mu,
}

/// Why a file is not a WAV we can broadcast.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum WavError {
    TooLarge { bytes: usize },
    NotRiffWave,
    /// A chunk's size runs past the end, or too many chunks before the audio.
    Malformed,
    NoFormat,
    NoData,
    /// The format tag (1 PCM, 6 A-law, 7 µ-law taken) and bits per sample.
    Encoding { format_tag: u16, bits: u16 },
    Rate { hz: u32 },
    Channels { channels: u16 },
    Empty,
}

impl std::fmt::Display for WavError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            WavError::TooLarge { bytes } => write!(f, "the file has {bytes} bytes, more than the {WAV_BYTES_MAX} taken"),
            WavError::NotRiffWave => f.write_str("not a WAV file (no RIFF/WAVE header)"),
            WavError::Malformed => f.write_str("the WAV file's chunks are malformed"),
            WavError::NoFormat => f.write_str("the WAV file has no fmt chunk before its data"),
            WavError::NoData => f.write_str("the WAV file has no data chunk"),
            WavError::Encoding { format_tag, bits } => write!(f, "the WAV file's encoding (format {format_tag}, {bits} bits) is not 16-bit PCM, A-law or µ-law"),
            WavError::Rate { hz } => write!(f, "the WAV file is sampled at {hz} Hz; 8000 Hz is taken (no resampling)"),
            WavError::Channels { channels } => write!(f, "the WAV file has {channels} channels; mono is taken"),
            WavError::Empty => f.write_str("the WAV file has no samples"),
        }
    }
}

/// How the samples in a WAV's data are written.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Encoding {
    Pcm16,
    G711(Law),
}

/// The WAV's samples as G.711 in `law`, one byte a sample.
pub fn to_g711(file: &[u8], law: Law) -> Result<Vec<u8>, WavError> {
    if file.len() > WAV_BYTES_MAX {
        return Err(WavError::TooLarge { bytes: file.len() });
    }
    if file.len() < 12 || &file[0..4] != b"RIFF" || &file[8..12] != b"WAVE" {
        return Err(WavError::NotRiffWave);
    }
    let mut at = 12;
    let mut encoding = None;
    for _ in 0..CHUNKS_MAX {
        let Some(head) = file.get(at..at + 8) else { break };
        let size = u32::from_le_bytes([head[4], head[5], head[6], head[7]]) as usize;
        let body_at = at + 8;
        match &head[0..4] {
            b"fmt " => {
                let body = file.get(body_at..body_at.checked_add(size).ok_or(WavError::Malformed)?).ok_or(WavError::Malformed)?;
                encoding = Some(format(body)?);
            }
            b"data" => {
                let encoding = encoding.ok_or(WavError::NoFormat)?;
                // A writer that streamed the file may leave the size too large: the rest is taken.
                let body = &file[body_at.min(file.len())..body_at.saturating_add(size).min(file.len())];
                let out = convert(body, encoding, law);
                return if out.is_empty() { Err(WavError::Empty) } else { Ok(out) };
            }
            _ => {}
        }
        // Chunks are padded to an even size.
        at = body_at.checked_add(size).and_then(|e| e.checked_add(size & 1)).ok_or(WavError::Malformed)?;
        if at > file.len() {
            return Err(WavError::Malformed);
        }
    }
    Err(if file.len() > at { WavError::Malformed } else { WavError::NoData })
}

fn format(body: &[u8]) -> Result<Encoding, WavError> {
    if body.len() < 16 {
        return Err(WavError::Malformed);
    }
    let u16_at = |i: usize| u16::from_le_bytes([body[i], body[i + 1]]);
    let mut format_tag = u16_at(0);
    let channels = u16_at(2);
    let hz = u32::from_le_bytes([body[4], body[5], body[6], body[7]]);
    let bits = u16_at(14);
    // WAVE_FORMAT_EXTENSIBLE: the real tag is the sub-format GUID's first two bytes.
    if format_tag == 0xFFFE && body.len() >= 26 {
        format_tag = u16_at(24);
    }
    let encoding = match (format_tag, bits) {
        (1, 16) => Encoding::Pcm16,
        (6, 8) => Encoding::G711(Law::A),
        (7, 8) => Encoding::G711(Law::Mu),
        _ => return Err(WavError::Encoding { format_tag, bits }),
    };
    if hz != SAMPLE_RATE_HZ {
        return Err(WavError::Rate { hz });
    }
    if channels != 1 {
        return Err(WavError::Channels { channels });
    }
    Ok(encoding)
}

fn convert(data: &[u8], from: Encoding, law: Law) -> Vec<u8> {
    match from {
        Encoding::G711(l) if l == law => data.to_vec(),
        Encoding::G711(l) => data.iter().map(|&b| encode(law, decode(l, b))).collect(),
        Encoding::Pcm16 => data.chunks_exact(2).map(|s| encode(law, i16::from_le_bytes([s[0], s[1]]))).collect(),
    }
}

/// One linear 16-bit sample in G.711.
pub fn encode(law: Law, sample: i16) -> u8 {
    match law {
        Law::A => alaw_encode(sample),
        Law::Mu => ulaw_encode(sample),
    }
}

/// One G.711 byte as a linear 16-bit sample.
pub fn decode(law: Law, byte: u8) -> i16 {
    match law {
        Law::A => alaw_decode(byte),
        Law::Mu => ulaw_decode(byte),
    }
}

/// The segment (exponent) of a magnitude: the position of its highest set bit above `floor`
/// bits, at most 7.
fn segment(magnitude: u16, floor: u32) -> u8 {
    let bits = 16 - magnitude.leading_zeros();
    bits.saturating_sub(floor).min(7) as u8
}

/// G.711 A-law (as the ITU reference and Sun's g711.c): the sample's top 13 bits, 8
/// segments, even bits inverted.
fn alaw_encode(sample: i16) -> u8 {
    let pcm = i32::from(sample) >> 3;
    let (mask, magnitude) = if pcm >= 0 { (0xD5, pcm) } else { (0x55, -pcm - 1) };
    if magnitude > 0x0FFF {
        return 0x7F ^ mask;
    }
    let magnitude = magnitude as u16;
    let seg = segment(magnitude, 5);
    let mantissa = if seg < 2 { (magnitude >> 1) & 0x0F } else { (magnitude >> seg) & 0x0F } as u8;
    ((seg << 4) | mantissa) ^ mask
}

fn alaw_decode(byte: u8) -> i16 {
    let b = byte ^ 0x55;
    let seg = (b >> 4) & 0x07;
    let mantissa = i32::from(b & 0x0F);
    let magnitude = if seg == 0 { (mantissa << 4) + 8 } else { ((mantissa << 4) + 0x108) << (seg - 1) };
    (if b & 0x80 != 0 { magnitude } else { -magnitude }) as i16
}

const ULAW_BIAS: i32 = 0x84;
/// The 14-bit magnitude's clip, below the bias.
const ULAW_CLIP: i32 = 8159;

/// G.711 µ-law (as the ITU reference and Sun's g711.c): the sample's top 14 bits biased,
/// 8 segments, all bits inverted.
fn ulaw_encode(sample: i16) -> u8 {
    let pcm = i32::from(sample) >> 2;
    let (mask, magnitude) = if pcm < 0 { (0x7F, -pcm) } else { (0xFF, pcm) };
    let magnitude = (magnitude.min(ULAW_CLIP) + (ULAW_BIAS >> 2)) as u16;
    // Past the last segment (the clip plus the bias): the largest code.
    if magnitude > 0x1FFF {
        return 0x7F ^ mask;
    }
    let seg = segment(magnitude, 6);
    let mantissa = ((magnitude >> (seg + 1)) & 0x0F) as u8;
    ((seg << 4) | mantissa) ^ mask
}

fn ulaw_decode(byte: u8) -> i16 {
    let b = !byte;
    let seg = (b >> 4) & 0x07;
    let mantissa = i32::from(b & 0x0F);
    let magnitude = (((mantissa << 3) + ULAW_BIAS) << seg) - ULAW_BIAS;
    (if b & 0x80 != 0 { -magnitude } else { magnitude }) as i16
}

#[cfg(test)]
mod tests {
    use super::*;

    fn wav(format_tag: u16, channels: u16, hz: u32, bits: u16, data: &[u8]) -> Vec<u8> {
        let mut out = b"RIFF\0\0\0\0WAVE".to_vec();
        out.extend_from_slice(b"fmt ");
        out.extend_from_slice(&16u32.to_le_bytes());
        out.extend_from_slice(&format_tag.to_le_bytes());
        out.extend_from_slice(&channels.to_le_bytes());
        out.extend_from_slice(&hz.to_le_bytes());
        out.extend_from_slice(&(hz * u32::from(bits / 8)).to_le_bytes());
        out.extend_from_slice(&(bits / 8).to_le_bytes());
        out.extend_from_slice(&bits.to_le_bytes());
        out.extend_from_slice(b"LIST\x03\0\0\0abc\0");
        out.extend_from_slice(b"data");
        out.extend_from_slice(&(data.len() as u32).to_le_bytes());
        out.extend_from_slice(data);
        out
    }

    #[test]
    fn a_law_and_mu_law_match_the_reference_values() {
        // Reference values: CPython's audioop.lin2alaw/lin2ulaw (Sun's g711.c).
        for (pcm, a, u) in [(0i16, 0xD5u8, 0xFFu8), (-1, 0x55, 0x7E), (1, 0xD5, 0xFF), (7, 0xD5, 0xFE), (-8, 0x55, 0x7E), (100, 0xD3, 0xF2), (-100, 0x53, 0x72), (1000, 0xFA, 0xCE), (-1000, 0x7A, 0x4E), (4095, 0x9A, 0xAF), (-4096, 0x1A, 0x2F), (12345, 0xBD, 0x97), (-12345, 0x3D, 0x17), (30000, 0xA8, 0x82), (-30000, 0x28, 0x02), (32767, 0xAA, 0x80), (-32768, 0x2A, 0x00)] {
            assert_eq!(alaw_encode(pcm), a, "A-law of {pcm}");
            assert_eq!(ulaw_encode(pcm), u, "µ-law of {pcm}");
        }
    }

    #[test]
    fn every_code_decodes_and_encodes_back_to_itself() {
        for b in 0..=255u8 {
            assert_eq!(alaw_encode(alaw_decode(b)), b, "A-law {b:#04x}");
            // µ-law has two zeros (0x7F and 0xFF): both decode to 0, which encodes to 0xFF.
            if b != 0x7F {
                assert_eq!(ulaw_encode(ulaw_decode(b)), b, "µ-law {b:#04x}");
            }
        }
    }

    #[test]
    fn pcm_is_encoded_and_g711_taken_or_converted() {
        let pcm: Vec<u8> = [0i16, 1000, -1000].iter().flat_map(|s| s.to_le_bytes()).collect();
        assert_eq!(to_g711(&wav(1, 1, 8000, 16, &pcm), Law::A), Ok(vec![0xD5, 0xFA, 0x7A]));
        assert_eq!(to_g711(&wav(6, 1, 8000, 8, &[1, 2, 3]), Law::A), Ok(vec![1, 2, 3]));
        assert_eq!(to_g711(&wav(6, 1, 8000, 8, &[0xFA]), Law::Mu), Ok(vec![ulaw_encode(alaw_decode(0xFA))]));
    }

    #[test]
    fn what_cannot_be_broadcast_is_named() {
        assert_eq!(to_g711(&wav(1, 1, 16000, 16, &[0, 0]), Law::A), Err(WavError::Rate { hz: 16000 }));
        assert_eq!(to_g711(&wav(1, 2, 8000, 16, &[0, 0]), Law::A), Err(WavError::Channels { channels: 2 }));
        assert_eq!(to_g711(&wav(3, 1, 8000, 32, &[0; 4]), Law::A), Err(WavError::Encoding { format_tag: 3, bits: 32 }));
        assert_eq!(to_g711(&wav(1, 1, 8000, 16, &[]), Law::A), Err(WavError::Empty));
        assert_eq!(to_g711(b"RIFX\0\0\0\0WAVE", Law::A), Err(WavError::NotRiffWave));
        let mut cut = wav(1, 1, 8000, 16, &[0, 0]);
        cut.truncate(30);
        assert_eq!(to_g711(&cut, Law::A), Err(WavError::Malformed));
        assert_eq!(to_g711(b"RIFF\0\0\0\0WAVE", Law::A), Err(WavError::NoData));
    }

    #[test]
    fn no_input_panics() {
        let base = wav(1, 1, 8000, 16, &[1, 2, 3, 4]);
        for cut in 0..base.len() {
            let _ = to_g711(&base[..cut], Law::Mu);
            let mut bent = base.clone();
            bent[cut] ^= 0xFF;
            let _ = to_g711(&bent, Law::A);
        }
    }
}
