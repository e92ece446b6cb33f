//! MANSRTSP (GB/T 28181 Annex B): RTSP-shaped playback control carried in SIP INFO bodies
//! within a playback dialog: PLAY with Scale (speed), PLAY with Range (seek, resume), PAUSE.

/// Speeds devices accept (GB/T 28181 B.2 lists these scales), in hundredths.
pub const SCALES_X100: [u16; 5] = [25, 50, 100, 200, 400];
/// Seeks past this (seconds from the start of the playback) are refused as nonsense.
pub const SEEK_S_MAX: u64 = 31 * 86_400;

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum PlaybackAction {
    Pause,
    Resume,
    /// Seconds from the start of the played range.
    Seek(u64),
    /// One of `SCALES_X100`: the scale in hundredths.
    Speed(u16),
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ActionError {
    UnknownAction,
    BadScale,
    BadPosition,
}

impl PlaybackAction {
    /// Checks a request for an action; `scale` must be one the standard lists.
    pub fn new_speed(scale: f64) -> Result<PlaybackAction, ActionError> {
        SCALES_X100.iter().find(|s| (f64::from(**s) / 100.0 - scale).abs() < 1e-6).map(|s| PlaybackAction::Speed(*s)).ok_or(ActionError::BadScale)
    }

    pub fn new_seek(position_s: f64) -> Result<PlaybackAction, ActionError> {
        if !(0.0..=SEEK_S_MAX as f64).contains(&position_s) {
            return Err(ActionError::BadPosition);
        }
        Ok(PlaybackAction::Seek(position_s as u64))
    }

    pub fn name(&self) -> &'static str {
        match self {
            PlaybackAction::Pause => "pause",
            PlaybackAction::Resume => "resume",
            PlaybackAction::Seek(_) => "seek",
            PlaybackAction::Speed(_) => "speed",
        }
    }

    /// The INFO body, with the RTSP CSeq of this dialog's control sequence.
    pub fn body(&self, cseq: u32) -> String {
        match self {
            PlaybackAction::Pause => format!("PAUSE RTSP/1.0\r\nCSeq: {cseq}\r\nPauseTime: now\r\n\r\n"),
            PlaybackAction::Resume => format!("PLAY RTSP/1.0\r\nCSeq: {cseq}\r\nRange: npt=now-\r\n\r\n"),
            PlaybackAction::Seek(s) => format!("PLAY RTSP/1.0\r\nCSeq: {cseq}\r\nRange: npt={s}-\r\n\r\n"),
            PlaybackAction::Speed(x100) => format!("PLAY RTSP/1.0\r\nCSeq: {cseq}\r\nScale: {}.{:02}\r\n\r\n", x100 / 100, x100 % 100),
        }
    }
}

/// What a device reads from an INFO body (for simulators and tests of what gmv sends).
pub fn parse(body: &str) -> Option<PlaybackAction> {
    let mut lines = body.lines();
    let method = lines.next()?.split_whitespace().next()?;
    let header =
        |name: &str| body.lines().find_map(|l| l.split_once(':').filter(|(k, _)| k.trim().eq_ignore_ascii_case(name)).map(|(_, v)| v.trim()));
    match method {
        "PAUSE" => Some(PlaybackAction::Pause),
        "PLAY" => {
            if let Some(scale) = header("Scale") {
                return PlaybackAction::new_speed(scale.parse().ok()?).ok();
            }
            let range = header("Range")?.strip_prefix("npt=")?;
            let from = range.split('-').next()?.trim();
            if from == "now" || from.is_empty() { Some(PlaybackAction::Resume) } else { PlaybackAction::new_seek(from.parse().ok()?).ok() }
        }
        _ => None,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn bodies_as_the_standard_writes_them_and_back() {
        assert_eq!(PlaybackAction::Pause.body(3), "PAUSE RTSP/1.0\r\nCSeq: 3\r\nPauseTime: now\r\n\r\n");
        assert_eq!(PlaybackAction::Seek(120).body(4), "PLAY RTSP/1.0\r\nCSeq: 4\r\nRange: npt=120-\r\n\r\n");
        assert_eq!(PlaybackAction::Speed(400).body(5), "PLAY RTSP/1.0\r\nCSeq: 5\r\nScale: 4.00\r\n\r\n");
        assert_eq!(PlaybackAction::new_speed(0.25), Ok(PlaybackAction::Speed(25)));
        for a in [PlaybackAction::Pause, PlaybackAction::Resume, PlaybackAction::Seek(7), PlaybackAction::Speed(25), PlaybackAction::Speed(200)] {
            assert_eq!(parse(&a.body(1)), Some(a));
        }
        assert_eq!(PlaybackAction::new_speed(3.0), Err(ActionError::BadScale));
        assert_eq!(PlaybackAction::new_seek(-1.0), Err(ActionError::BadPosition));
        assert_eq!(parse("TEARDOWN RTSP/1.0\r\n"), None);
        assert_eq!(parse(""), None);
    }
}
