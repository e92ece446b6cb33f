//! HLS playlists as a pull source reads them (RFC 8216): a multivariant playlist's variants
//! (the pull takes the highest bandwidth), a media playlist's segments with their sequence
//! numbers, and whether it ended. Sans-IO, bounded: `PLAYLIST_BYTES_MAX` of text and
//! `SEGMENTS_MAX` segments at most; lines it does not need are skipped.

/// A playlist longer than this is refused.
pub const PLAYLIST_BYTES_MAX: usize = 256 << 10;
/// Segments (or variants) read from one playlist, at most.
pub const SEGMENTS_MAX: usize = 1024;
/// A URI line, at most.
const URI_BYTES_MAX: usize = 2048;

#[derive(Debug, Clone, PartialEq, Eq)]
pub enum M3u8Error {
    NotM3u8,
    TooLarge,
    /// A multivariant playlist without a variant.
    NoVariant,
}

impl std::fmt::Display for M3u8Error {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            M3u8Error::NotM3u8 => f.write_str("not an HLS playlist (#EXTM3U missing)"),
            M3u8Error::TooLarge => write!(f, "playlist over {PLAYLIST_BYTES_MAX} bytes or {SEGMENTS_MAX} entries"),
            M3u8Error::NoVariant => f.write_str("multivariant playlist without a variant"),
        }
    }
}

#[derive(Debug, Clone, PartialEq)]
pub struct Segment {
    /// Its media sequence number.
    pub sequence: u64,
    pub duration_s: f64,
    pub uri: String,
    /// `EXT-X-DISCONTINUITY` before it.
    pub discontinuity: bool,
}

#[derive(Debug, Clone, PartialEq)]
pub enum Playlist {
    /// Variants by bandwidth, the highest first.
    Multivariant(Vec<String>),
    Media { target_duration_s: u64, segments: Vec<Segment>, ended: bool },
}

pub fn parse(text: &[u8]) -> Result<Playlist, M3u8Error> {
    if text.len() > PLAYLIST_BYTES_MAX {
        return Err(M3u8Error::TooLarge);
    }
    let text = String::from_utf8_lossy(text);
    let mut lines = text.lines().map(str::trim).filter(|l| !l.is_empty());
    if lines.next().is_none_or(|l| !l.starts_with("#EXTM3U")) {
        return Err(M3u8Error::NotM3u8);
    }
    let mut variants: Vec<(u64, String)> = vec![];
    let mut segments = vec![];
    let (mut target, mut sequence, mut ended) = (0u64, 0u64, false);
    let (mut duration, mut discontinuity, mut bandwidth) = (None::<f64>, false, None::<u64>);
    for line in lines {
        if variants.len() + segments.len() >= SEGMENTS_MAX {
            return Err(M3u8Error::TooLarge);
        }
        if let Some(v) = line.strip_prefix("#EXT-X-TARGETDURATION:") {
            target = v.trim().parse().unwrap_or(0);
        } else if let Some(v) = line.strip_prefix("#EXT-X-MEDIA-SEQUENCE:") {
            // It belongs before the first segment (RFC 8216 4.4.3.2); a later one would make
            // numbers go back, and the pull would fetch segments twice.
            if !segments.is_empty() {
                continue;
            }
            sequence = v.trim().parse().unwrap_or(0);
        } else if let Some(v) = line.strip_prefix("#EXTINF:") {
            duration = v.split(',').next().and_then(|d| d.trim().parse().ok()).filter(|d: &f64| d.is_finite() && *d >= 0.0);
        } else if line == "#EXT-X-DISCONTINUITY" {
            discontinuity = true;
        } else if line == "#EXT-X-ENDLIST" {
            ended = true;
        } else if let Some(attrs) = line.strip_prefix("#EXT-X-STREAM-INF:") {
            bandwidth = Some(attribute(attrs, "BANDWIDTH").and_then(|b| b.parse().ok()).unwrap_or(0));
        } else if line.starts_with('#') || line.len() > URI_BYTES_MAX {
            continue;
        } else if let Some(b) = bandwidth.take() {
            variants.push((b, line.to_string()));
        } else {
            segments.push(Segment { sequence, duration_s: duration.take().unwrap_or(0.0), uri: line.to_string(), discontinuity });
            sequence = sequence.saturating_add(1);
            discontinuity = false;
        }
    }
    if !variants.is_empty() || (segments.is_empty() && text.contains("#EXT-X-STREAM-INF")) {
        variants.sort_by_key(|v| std::cmp::Reverse(v.0));
        if variants.is_empty() {
            return Err(M3u8Error::NoVariant);
        }
        return Ok(Playlist::Multivariant(variants.into_iter().map(|v| v.1).collect()));
    }
    Ok(Playlist::Media { target_duration_s: target, segments, ended })
}

/// An attribute of an attribute list (`BANDWIDTH=800000,CODECS="avc1..."`), unquoted.
fn attribute<'a>(attrs: &'a str, name: &str) -> Option<&'a str> {
    let mut rest = attrs;
    while !rest.is_empty() {
        let (key, after) = rest.split_once('=')?;
        let (value, tail) = if let Some(q) = after.strip_prefix('"') {
            let end = q.find('"')?;
            (&q[..end], q[end + 1..].trim_start_matches(','))
        } else {
            after.split_once(',').unwrap_or((after, ""))
        };
        if key.trim() == name {
            return Some(value);
        }
        rest = tail;
    }
    None
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_media_playlist_numbers_its_segments() {
        let p = parse(b"#EXTM3U\n#EXT-X-VERSION:3\n#EXT-X-TARGETDURATION:2\n#EXT-X-MEDIA-SEQUENCE:41\n#EXTINF:2.000,\n41.ts\n#EXT-X-DISCONTINUITY\n#EXTINF:1.960,\nseg/42.ts?x=1\n").unwrap();
        let Playlist::Media { target_duration_s, segments, ended } = p else { panic!() };
        assert_eq!((target_duration_s, ended), (2, false));
        assert_eq!(segments.len(), 2);
        assert_eq!((segments[0].sequence, segments[0].uri.as_str(), segments[0].discontinuity), (41, "41.ts", false));
        assert_eq!((segments[1].sequence, segments[1].uri.as_str(), segments[1].discontinuity), (42, "seg/42.ts?x=1", true));
        assert!((segments[1].duration_s - 1.96).abs() < 1e-9);
    }

    #[test]
    fn a_media_sequence_after_the_first_segment_does_not_renumber() {
        let p = parse(b"#EXTM3U\n#EXT-X-MEDIA-SEQUENCE:7\n#EXTINF:1,\na.ts\n#EXT-X-MEDIA-SEQUENCE:3\n#EXTINF:1,\nb.ts\n").unwrap();
        let Playlist::Media { segments, .. } = p else { panic!() };
        assert_eq!(segments.iter().map(|s| s.sequence).collect::<Vec<_>>(), [7, 8]);
    }

    #[test]
    fn a_multivariant_playlist_gives_the_highest_bandwidth_first() {
        let p = parse(b"#EXTM3U\n#EXT-X-STREAM-INF:BANDWIDTH=200000,CODECS=\"avc1.42e01e,mp4a.40.2\"\nlow.m3u8\n#EXT-X-STREAM-INF:RESOLUTION=1920x1080,BANDWIDTH=4000000\nhigh.m3u8\n").unwrap();
        assert_eq!(p, Playlist::Multivariant(vec!["high.m3u8".into(), "low.m3u8".into()]));
    }

    #[test]
    fn what_is_not_a_playlist_or_too_long_is_refused() {
        assert_eq!(parse(b"<html>"), Err(M3u8Error::NotM3u8));
        assert_eq!(parse(&vec![b'#'; PLAYLIST_BYTES_MAX + 1]), Err(M3u8Error::TooLarge));
        let mut many = b"#EXTM3U\n".to_vec();
        for i in 0..=SEGMENTS_MAX {
            many.extend_from_slice(format!("#EXTINF:1,\n{i}.ts\n").as_bytes());
        }
        assert_eq!(parse(&many), Err(M3u8Error::TooLarge));
    }
}
