//! Device control without a business response (GB/T 28181 DeviceControl: PTZ and presets,
//! keyframe request, reboot; and MANSRTSP INFO in a playback dialog): a request to the
//! registered device, whose final answer to it is the result.

use super::{Endpoint, Event, Unreachable, transaction};
use crate::proto::sip::manscdp;
use std::time::Instant;

/// Control requests in flight at once (each is a client transaction too); more are Busy.
pub const CONTROLS_IN_FLIGHT_MAX: usize = 256;

/// What a DeviceControl asks.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum DeviceCommand {
    /// A PTZCmd (`proto::sip::ptz`): moves, focus, iris, presets.
    Ptz([u8; 8]),
    /// IFameCmd (the 2016 standard's spelling; `IFrameCmd` in 2022): send a keyframe now, e.g.
    /// for a viewer to start at once.
    KeyFrame,
    /// TeleBoot: restart the device.
    Reboot,
}

impl DeviceCommand {
    /// The element the MESSAGE carries: (name, text), in the names of the standard's 2022
    /// edition for a device that says it speaks it.
    pub fn element(&self, gb2022: bool) -> (&'static str, String) {
        match self {
            DeviceCommand::Ptz(bytes) => ("PTZCmd", crate::proto::sip::ptz::hex(bytes)),
            DeviceCommand::KeyFrame if gb2022 => ("IFrameCmd", "Send".into()),
            DeviceCommand::KeyFrame => ("IFameCmd", "Send".into()),
            DeviceCommand::Reboot => ("TeleBoot", "Boot".into()),
        }
    }
}

/// Names one control request until its result comes as `Event::ControlDone`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct ControlHandle(pub u64);

#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ControlError {
    UnknownDevice,
    UnknownChannel,
    Offline,
    Busy,
    /// The device answered the MESSAGE with this status.
    Rejected(u16),
    /// No final answer within the transaction timeout.
    Timeout,
    /// No session has that stream.
    UnknownSession,
    /// Pause, seek and speed are for playback sessions only.
    NotPlayback,
    /// The device answered with `Result` ERROR (or another word than OK).
    DeviceError(String),
    /// No such preset on the channel (as its PresetQuery answer lists them).
    UnknownPreset,
}

/// What an operator reads (the API's `message`, the console).
impl std::fmt::Display for ControlError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            ControlError::UnknownDevice => f.write_str("no such device"),
            ControlError::UnknownChannel => f.write_str("the device has no such channel"),
            ControlError::Offline => f.write_str("the device is offline"),
            ControlError::Busy => f.write_str("too many requests to the device at once; try again"),
            ControlError::Rejected(status) => write!(f, "the device refused the command (SIP {status})"),
            ControlError::Timeout => f.write_str("the device did not answer"),
            ControlError::UnknownSession => f.write_str("no session has that stream"),
            ControlError::NotPlayback => f.write_str("pause, seek and speed are for playback sessions"),
            ControlError::DeviceError(result) => write!(f, "the device answered {result}"),
            ControlError::UnknownPreset => f.write_str("the channel has no such preset"),
        }
    }
}

impl ControlError {
    pub fn http(&self) -> (u16, &'static str) {
        match self {
            ControlError::UnknownDevice | ControlError::UnknownChannel | ControlError::UnknownSession => (404, "not_found"),
            ControlError::NotPlayback => (409, "not_playback"),
            ControlError::DeviceError(_) => (502, "device_error"),
            ControlError::UnknownPreset => (404, "not_found"),
            ControlError::Offline => (409, "device_offline"),
            ControlError::Busy => (503, "busy"),
            ControlError::Rejected(_) => (502, "device_rejected"),
            ControlError::Timeout => (504, "device_timeout"),
        }
    }
}

impl From<Unreachable> for ControlError {
    fn from(u: Unreachable) -> ControlError {
        match u {
            Unreachable::UnknownDevice => ControlError::UnknownDevice,
            Unreachable::UnknownChannel => ControlError::UnknownChannel,
            Unreachable::Offline => ControlError::Offline,
        }
    }
}

#[derive(Debug, Default)]
pub(super) struct Controls {
    next: u64,
    in_flight: usize,
}

impl Controls {
    pub(super) fn has_room(&self) -> bool {
        self.in_flight < CONTROLS_IN_FLIGHT_MAX
    }

    pub(super) fn started(&mut self) {
        self.in_flight += 1;
    }
}

impl Endpoint {
    /// Sends `command` for a channel of a device (the device itself for a reboot).
    pub(super) fn device_control(
        &mut self,
        now: Instant,
        device_id: &str,
        channel_id: &str,
        command: DeviceCommand,
    ) -> Result<ControlHandle, ControlError> {
        let peer = self.reachable_channel(now, device_id, channel_id)?;
        if !self.controls.has_room() {
            return Err(ControlError::Busy);
        }
        let handle = self.new_control_handle();
        let gb2022 = self.devices.get(device_id).is_some_and(|d| d.speaks_2022());
        let (element, text) = command.element(gb2022);
        let xml = manscdp::device_control(self.new_sn(), channel_id, element, &text, "GB2312");
        if !self.send_manscdp(now, device_id, peer, &xml, transaction::Purpose::Control { handle }) {
            return Err(ControlError::Busy);
        }
        self.controls.started();
        Ok(handle)
    }

    /// A handle for a request whose answer comes later (controls, record queries).
    pub(super) fn new_control_handle(&mut self) -> ControlHandle {
        self.controls.next += 1;
        ControlHandle(self.controls.next)
    }

    /// The control's MESSAGE transaction ended with `status` (None: no answer).
    pub(super) fn control_done(&mut self, handle: ControlHandle, status: Option<u16>) {
        self.controls.in_flight = self.controls.in_flight.saturating_sub(1);
        let result = match status {
            Some(s) if (200..300).contains(&s) => Ok(()),
            Some(s) => Err(ControlError::Rejected(s)),
            None => Err(ControlError::Timeout),
        };
        self.emit(Event::ControlDone { handle, result });
    }
}
