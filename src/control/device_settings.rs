//! Devices set up through the API (接入 a camera before or after it registers): a name the
//! operators know it by, a password of its own, how its media comes (UDP, TCP with the device
//! connecting or listening) and its SSRC check. Kept in `data_dir/device_settings.json`
//! (owner-only: it holds passwords), read at start, over the config's `sip.device_passwords`
//! and `sip.device_ssrc_check` (what the API set wins). Passwords are never shown.

use super::Control;
use crate::config::SsrcCheck;
use crate::proto::sip::endpoint::{MediaTransport, SubStreamAttr};
use serde::{Deserialize, Serialize};
use serde_json::{Value, json};
use std::collections::BTreeMap;

pub const DEVICE_SETTINGS_FILE: &str = "device_settings.json";
/// Devices set up at most, and the lengths of what is kept for each.
pub const DEVICE_SETTINGS_MAX: usize = 100_000;
const NAME_BYTES_MAX: usize = 64;
const PASSWORD_BYTES_MAX: usize = 64;

#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct DeviceSettings {
    pub name: Option<String>,
    pub password: Option<String>,
    /// udp, tcp (the device connects) or tcp-active (gmv connects).
    pub transport: Option<String>,
    pub ssrc_check: Option<SsrcCheck>,
    /// How the device is asked for its sub-stream (none: it is not).
    pub sub_stream: Option<SubStreamAttr>,
}

impl DeviceSettings {
    /// As the API shows it: whether there is an own password, not the password.
    pub fn public(&self) -> Value {
        json!({
            "name": self.name,
            "own_password": self.password.is_some(),
            "transport": self.transport,
            "ssrc_check": self.ssrc_check,
            "sub_stream": self.sub_stream,
        })
    }

    /// Applies a change as JSON has it: a field absent stays, null clears it. Why not, naming
    /// the field.
    fn change(&mut self, body: &Value) -> Result<(), String> {
        let Some(fields) = body.as_object() else { return Err("the body is a JSON object".into()) };
        for key in fields.keys() {
            if !["device_id", "name", "password", "transport", "ssrc_check", "sub_stream"].contains(&key.as_str()) {
                return Err(format!("unknown field {key:?}"));
            }
        }
        let text = |key: &str, max: usize| -> Result<Option<Option<String>>, String> {
            match body.get(key) {
                None => Ok(None),
                Some(Value::Null) => Ok(Some(None)),
                Some(Value::String(s)) if !s.is_empty() && s.len() <= max && !s.chars().any(char::is_control) => Ok(Some(Some(s.clone()))),
                Some(_) => Err(format!("{key} is 1 to {max} bytes of text, or null")),
            }
        };
        if let Some(name) = text("name", NAME_BYTES_MAX)? {
            self.name = name;
        }
        if let Some(password) = text("password", PASSWORD_BYTES_MAX)? {
            self.password = password;
        }
        if let Some(transport) = text("transport", 16)? {
            if let Some(t) = &transport
                && MediaTransport::parse(t).is_none()
            {
                return Err("transport is udp, tcp (the device connects) or tcp-active (gmv connects)".into());
            }
            self.transport = transport;
        }
        match body.get("ssrc_check") {
            None => {}
            Some(Value::Null) => self.ssrc_check = None,
            Some(v) => self.ssrc_check = Some(serde_json::from_value(v.clone()).map_err(|_| "ssrc_check is learn or strict".to_string())?),
        }
        match body.get("sub_stream") {
            None => {}
            Some(Value::Null) => self.sub_stream = None,
            Some(v) => {
                let why = "sub_stream is how the device is asked for it: stream (a=stream:1), streamnumber (GB/T 28181-2022), streamprofile (Dahua) or streamMode (Mercury, TP-LINK)";
                self.sub_stream = Some(serde_json::from_value(v.clone()).map_err(|_| why.to_string())?);
            }
        }
        Ok(())
    }
}

/// Why a change of a device's settings was refused.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum SettingsError {
    Invalid(String),
    Exists,
    NotFound,
    Full,
    Save(String),
}

impl SettingsError {
    pub fn http(&self) -> (u16, &'static str) {
        match self {
            SettingsError::Invalid(_) => (400, "bad_request"),
            SettingsError::Exists => (409, "exists"),
            SettingsError::NotFound => (404, "not_found"),
            SettingsError::Full => (409, "too_many"),
            SettingsError::Save(_) => (500, "not_saved"),
        }
    }
}

impl std::fmt::Display for SettingsError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            SettingsError::Invalid(why) => f.write_str(why),
            SettingsError::Exists => f.write_str("this device is set up already (PUT changes it)"),
            SettingsError::NotFound => f.write_str("no such device"),
            SettingsError::Full => write!(f, "at most {DEVICE_SETTINGS_MAX} devices are set up"),
            SettingsError::Save(why) => write!(f, "the settings could not be saved: {why}"),
        }
    }
}

/// A GB28181 device id: 20 digits.
fn is_device_id(id: &str) -> bool {
    id.len() == 20 && id.bytes().all(|b| b.is_ascii_digit())
}

impl Control {
    /// Device `id`'s settings as the API shows them (null when none).
    pub fn device_settings_json(&self, id: &str) -> Value {
        self.device_settings.borrow().get(id).map_or(Value::Null, DeviceSettings::public)
    }

    pub fn device_settings_list(&self) -> Vec<Value> {
        self.device_settings.borrow().iter().map(|(id, s)| json!({ "device_id": id, "settings": s.public() })).collect()
    }

    /// Sets a device up (`create`: refused when it is already) or changes its settings.
    pub async fn set_device_settings(&self, id: &str, body: &Value, create: bool) -> Result<Value, SettingsError> {
        if !is_device_id(id) {
            return Err(SettingsError::Invalid("device_id is the device's 20-digit GB28181 id".into()));
        }
        let (all, public) = {
            let mut all = self.device_settings.borrow_mut();
            let exists = all.contains_key(id);
            if create && exists {
                return Err(SettingsError::Exists);
            }
            if !create && !exists && self.endpoint().device(id).is_none() {
                return Err(SettingsError::NotFound);
            }
            if !exists && all.len() >= DEVICE_SETTINGS_MAX {
                return Err(SettingsError::Full);
            }
            let mut settings = all.get(id).cloned().unwrap_or_default();
            settings.change(body).map_err(SettingsError::Invalid)?;
            let public = settings.public();
            all.insert(id.to_string(), settings);
            (all.clone(), public)
        };
        self.apply_device_passwords();
        tracing::info!(device_id = id, settings = %public, "device set up through the API");
        self.save_device_settings(all).await?;
        Ok(public)
    }

    /// Forgets a device's settings (its removal); whether it had any.
    pub async fn forget_device_settings(&self, id: &str) -> bool {
        let all = {
            let mut all = self.device_settings.borrow_mut();
            if all.remove(id).is_none() {
                return false;
            }
            all.clone()
        };
        self.apply_device_passwords();
        if let Err(error) = self.save_device_settings(all).await {
            tracing::error!(device_id = id, %error, "device settings not saved");
        }
        true
    }

    async fn save_device_settings(&self, all: BTreeMap<String, DeviceSettings>) -> Result<(), SettingsError> {
        let path = self.shard.config.data_dir.join(DEVICE_SETTINGS_FILE);
        glommio::executor().spawn_blocking(move || super::json_file::save(&path, &all)).await.map_err(|e| SettingsError::Save(e.to_string()))
    }

    /// The passwords in force: the config's (as last loaded), then those set through the API.
    pub(super) fn merged_device_passwords(config: &BTreeMap<String, String>, settings: &BTreeMap<String, DeviceSettings>) -> BTreeMap<String, String> {
        let mut merged = config.clone();
        merged.extend(settings.iter().filter_map(|(id, s)| Some((id.clone(), s.password.clone()?))));
        merged
    }

    fn apply_device_passwords(&self) {
        let config = self.config_device_passwords.borrow().clone();
        let merged = Self::merged_device_passwords(&config, &self.device_settings.borrow());
        let password = self.config_password.borrow().clone();
        self.endpoint.borrow_mut().set_passwords(&password, &merged);
    }

    /// How a device's media comes when the caller does not say: its setting, else UDP.
    pub fn device_transport(&self, device_id: &str) -> MediaTransport {
        let settings = self.device_settings.borrow();
        settings.get(device_id).and_then(|s| s.transport.as_deref()).and_then(MediaTransport::parse).unwrap_or(MediaTransport::Udp)
    }

    /// How a device is asked for its sub-stream, when it is set up for one.
    pub fn sub_stream_attr(&self, device_id: &str) -> Option<SubStreamAttr> {
        self.device_settings.borrow().get(device_id).and_then(|s| s.sub_stream)
    }

    /// Whether a device's stream learns an SSRC the device picked itself: its setting, else
    /// the config's.
    pub fn learns_ssrc(&self, device_id: &str) -> bool {
        match self.device_settings.borrow().get(device_id).and_then(|s| s.ssrc_check) {
            Some(check) => check == SsrcCheck::Learn,
            None => self.shard.config.sip.learns_ssrc(device_id),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_change_sets_clears_and_refuses_naming_the_field() {
        let mut s = DeviceSettings::default();
        s.change(&json!({ "name": "东门", "password": "p4ss", "transport": "tcp", "ssrc_check": "strict" })).unwrap();
        assert_eq!(s.public(), json!({ "name": "东门", "own_password": true, "transport": "tcp", "ssrc_check": "strict", "sub_stream": null }));
        s.change(&json!({ "password": null, "transport": null })).unwrap();
        assert_eq!((s.password.as_deref(), s.transport.as_deref(), s.name.as_deref()), (None, None, Some("东门")), "null clears, absent stays");
        for (bad, says) in [
            (json!({ "transport": "sctp" }), "transport"),
            (json!({ "ssrc_check": "maybe" }), "ssrc_check"),
            (json!({ "name": "" }), "name is 1 to 64"),
            (json!({ "password": "a\r\nb" }), "password"),
            (json!({ "colour": "red" }), "unknown field"),
            (json!([1]), "JSON object"),
        ] {
            assert!(DeviceSettings::default().change(&bad).unwrap_err().contains(says), "{bad}");
        }
        let config: BTreeMap<String, String> = [("a".to_string(), "cfg".to_string()), ("b".to_string(), "cfg".to_string())].into();
        let settings: BTreeMap<String, DeviceSettings> = [("b".to_string(), DeviceSettings { password: Some("api".into()), ..Default::default() })].into();
        let merged = Control::merged_device_passwords(&config, &settings);
        assert_eq!((merged["a"].as_str(), merged["b"].as_str()), ("cfg", "api"), "the API's wins");
        assert!(is_device_id("34020000001320000001") && !is_device_id("3402000000132000000x") && !is_device_id("1"));
    }
}
