//! The 8-byte PTZCmd of GB/T 28181 (Annex A, front-end device control): `A5 0F addr cmd d1 d2
//! d3|addr_hi checksum`, written as 16 hex digits in a DeviceControl MESSAGE.
//! Byte 2 is version 0 and the check nibble (0xA + 0x5 + 0) % 16 = 0xF; byte 8 is the sum of
//! bytes 1..=7 modulo 256. Pure.

/// Address of the camera on the device's control bus: 1 for a channel addressed by its id.
const ADDRESS: u16 = 0x001;

/// What to do. Axis values are -1..=1 (sign: direction, size: share of `speed`).
#[derive(Debug, Clone, Copy, PartialEq)]
pub enum PtzAction {
    /// Pan (+ right), tilt (+ up), zoom (+ in, tele) at `speed` (0..=1); all zero stops.
    Move {
        pan: f64,
        tilt: f64,
        zoom: f64,
        speed: f64,
    },
    /// Focus: + far, - near; 0 stops.
    Focus {
        value: f64,
        speed: f64,
    },
    /// Iris: + open, - close; 0 stops.
    Iris {
        value: f64,
        speed: f64,
    },
    PresetSet(u8),
    PresetCall(u8),
    PresetDelete(u8),
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum PtzError {
    /// An axis or speed outside its range (or not a number).
    OutOfRange(&'static str),
    /// Presets are numbered 1..=255.
    BadPreset,
}

const RIGHT: u8 = 0x01;
const LEFT: u8 = 0x02;
const DOWN: u8 = 0x04;
const UP: u8 = 0x08;
const ZOOM_IN: u8 = 0x10;
const ZOOM_OUT: u8 = 0x20;
/// Focus/iris commands: 0100 then bit3 iris close, bit2 iris open, bit1 focus near, bit0 focus far.
const FI: u8 = 0x40;
const FOCUS_FAR: u8 = 0x01;
const FOCUS_NEAR: u8 = 0x02;
const IRIS_OPEN: u8 = 0x04;
const IRIS_CLOSE: u8 = 0x08;
const PRESET_SET: u8 = 0x81;
const PRESET_CALL: u8 = 0x82;
const PRESET_DELETE: u8 = 0x83;

fn check(name: &'static str, v: f64, min: f64) -> Result<f64, PtzError> {
    if v.is_finite() && (min..=1.0).contains(&v) { Ok(v) } else { Err(PtzError::OutOfRange(name)) }
}

/// The speed byte (1..=`max` while moving, 0 when not) for an axis value at an overall speed.
fn speed_of(value: f64, speed: f64, max: u8) -> u8 {
    if value == 0.0 {
        return 0;
    }
    ((value.abs() * speed * f64::from(max)).round() as u8).clamp(1, max)
}

/// The command byte for a signed axis: `plus` when > 0, `minus` when < 0.
fn direction(value: f64, plus: u8, minus: u8) -> u8 {
    if value > 0.0 {
        plus
    } else if value < 0.0 {
        minus
    } else {
        0
    }
}

/// The 8 bytes for `action`.
pub fn encode(action: PtzAction) -> Result<[u8; 8], PtzError> {
    let (cmd, d1, d2, zoom) = match action {
        PtzAction::Move { pan, tilt, zoom, speed } => {
            let (pan, tilt, zoom) = (check("pan", pan, -1.0)?, check("tilt", tilt, -1.0)?, check("zoom", zoom, -1.0)?);
            let speed = check("speed", speed, 0.0)?;
            let cmd = direction(pan, RIGHT, LEFT) | direction(tilt, UP, DOWN) | direction(zoom, ZOOM_IN, ZOOM_OUT);
            (cmd, speed_of(pan, speed, 0xff), speed_of(tilt, speed, 0xff), speed_of(zoom, speed, 0x0f))
        }
        PtzAction::Focus { value, speed } => {
            let (value, speed) = (check("focus", value, -1.0)?, check("speed", speed, 0.0)?);
            (FI | direction(value, FOCUS_FAR, FOCUS_NEAR), speed_of(value, speed, 0xff), 0, 0)
        }
        PtzAction::Iris { value, speed } => {
            let (value, speed) = (check("iris", value, -1.0)?, check("speed", speed, 0.0)?);
            (FI | direction(value, IRIS_OPEN, IRIS_CLOSE), 0, speed_of(value, speed, 0xff), 0)
        }
        PtzAction::PresetSet(n) | PtzAction::PresetCall(n) | PtzAction::PresetDelete(n) if n == 0 => return Err(PtzError::BadPreset),
        PtzAction::PresetSet(n) => (PRESET_SET, 0, n, 0),
        PtzAction::PresetCall(n) => (PRESET_CALL, 0, n, 0),
        PtzAction::PresetDelete(n) => (PRESET_DELETE, 0, n, 0),
    };
    let mut b = [0xa5, 0x0f, (ADDRESS & 0xff) as u8, cmd, d1, d2, (zoom << 4) | ((ADDRESS >> 8) as u8 & 0x0f), 0];
    b[7] = b[..7].iter().fold(0u8, |sum, x| sum.wrapping_add(*x));
    Ok(b)
}

/// As the PTZCmd element carries it: 16 upper-case hex digits.
pub fn hex(bytes: &[u8; 8]) -> String {
    bytes.iter().map(|b| format!("{b:02X}")).collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn cmd(action: PtzAction) -> String {
        hex(&encode(action).unwrap())
    }

    fn mv(pan: f64, tilt: f64, zoom: f64, speed: f64) -> String {
        cmd(PtzAction::Move { pan, tilt, zoom, speed })
    }

    /// Against the standard's layout (bytes 1-3 fixed, speeds in bytes 5-7, byte 8 the sum of
    /// bytes 1-7) and the bit and byte positions other platforms use for the same commands.
    #[test]
    fn encodings_follow_the_standard() {
        assert_eq!(mv(0.0, 0.0, 0.0, 0.0), "A50F0100000000B5", "stop");
        assert_eq!(mv(1.0, 0.0, 0.0, 1.0), "A50F0101FF0000B5", "right at full speed (sum 0x1B5)");
        assert_eq!(mv(-1.0, 0.0, 0.0, 0.5), "A50F010280000037", "left at half speed");
        assert_eq!(mv(0.0, 1.0, 0.0, 100.0 / 255.0), "A50F010800640021", "up, tilt speed 0x64 in byte 6");
        assert_eq!(mv(0.0, -1.0, 0.0, 100.0 / 255.0), "A50F01040064001D", "down");
        assert_eq!(mv(-1.0, 1.0, 0.0, 16.0 / 255.0), "A50F010A101000DF", "up-left");
        assert_eq!(mv(0.0, 0.0, 1.0, 4.0 / 15.0), "A50F011000004005", "zoom in (tele): speed in the high nibble of byte 7");
        assert_eq!(mv(0.0, 0.0, -1.0, 4.0 / 15.0), "A50F012000004015", "zoom out");
        assert_eq!(cmd(PtzAction::Focus { value: 1.0, speed: 32.0 / 255.0 }), "A50F014120000016", "focus far, speed in byte 5");
        assert_eq!(cmd(PtzAction::Focus { value: -1.0, speed: 32.0 / 255.0 }), "A50F014220000017", "focus near");
        assert_eq!(cmd(PtzAction::Iris { value: 1.0, speed: 32.0 / 255.0 }), "A50F014400200019", "iris open, speed in byte 6");
        assert_eq!(cmd(PtzAction::Iris { value: -1.0, speed: 32.0 / 255.0 }), "A50F01480020001D", "iris close");
    }

    #[test]
    fn presets_and_ranges() {
        assert_eq!(cmd(PtzAction::PresetSet(3)), "A50F018100030039", "preset number in byte 6");
        assert_eq!(cmd(PtzAction::PresetCall(5)), "A50F01820005003C");
        assert_eq!(cmd(PtzAction::PresetDelete(255)), "A50F018300FF0037");
        assert_eq!(encode(PtzAction::PresetCall(0)), Err(PtzError::BadPreset));
        assert_eq!(encode(PtzAction::Move { pan: 1.5, tilt: 0.0, zoom: 0.0, speed: 0.5 }), Err(PtzError::OutOfRange("pan")));
        assert_eq!(encode(PtzAction::Move { pan: 0.0, tilt: f64::NAN, zoom: 0.0, speed: 0.5 }), Err(PtzError::OutOfRange("tilt")));
        assert_eq!(encode(PtzAction::Move { pan: 0.0, tilt: 0.0, zoom: 0.0, speed: -0.1 }), Err(PtzError::OutOfRange("speed")));
        // A tiny move still moves (speed 1), not a stop in disguise.
        assert_eq!(&mv(0.001, 0.0, 0.0, 0.01)[6..10], "0101");
    }
}
