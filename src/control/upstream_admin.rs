//! Upstreams added, changed and removed while running (the REST API): checked as the config's
//! are, handed to the endpoint, kept in `data_dir/upstreams.json` (`upstreams_store`) so they
//! hold after a restart. One change at a time, so the file is written in the order the
//! endpoint saw them.

use super::Control;
use super::upstreams_store::{self, Changes, Source};
use crate::config::UpstreamYaml;
use crate::proto::sip::endpoint::{Command, Outcome, UPSTREAMS_MAX};
use serde_json::{Value, json};
use std::rc::Rc;

/// Why an upstream change is refused.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum UpstreamAdminError {
    NotFound,
    /// `POST` of an id that exists.
    Exists,
    /// `UPSTREAMS_MAX` already.
    Full,
    /// The body, or the upstream it makes, is not valid: why.
    Invalid(String),
    /// The change took effect but could not be saved: why.
    NotSaved(String),
}

impl UpstreamAdminError {
    pub fn status(&self) -> (u16, &'static str, String) {
        match self {
            UpstreamAdminError::NotFound => (404, "not_found", "no such upstream".into()),
            UpstreamAdminError::Exists => (409, "exists", "an upstream with this id exists (PUT /api/upstreams/{id} changes it)".into()),
            UpstreamAdminError::Full => (409, "full", format!("at most {UPSTREAMS_MAX} upstreams")),
            UpstreamAdminError::Invalid(why) => (400, "bad_request", why.clone()),
            UpstreamAdminError::NotSaved(why) => (500, "not_saved", format!("changed, but not saved (it will not hold after a restart): {why}")),
        }
    }
}

impl Control {
    /// The upstreams in force, as the config (YAML) writes them, and where each comes from.
    fn upstream_settings(&self) -> Vec<(UpstreamYaml, Source)> {
        self.upstream_changes.borrow().apply(&self.shard.config.cascade.upstreams)
    }

    /// The upstreams, their state and settings (never the password), for the API.
    pub fn upstreams_json(&self) -> Vec<Value> {
        let settings = self.upstream_settings();
        self.endpoint()
            .upstreams()
            .into_iter()
            .map(|status| {
                let mut v = json!(status);
                if let Some((u, source)) = settings.iter().find(|(u, _)| u.id == status.id) {
                    v["source"] = json!(source);
                    v["transport"] = json!(u.transport);
                    v["register_expires_s"] = json!(u.register_expires_s);
                    v["keepalive_s"] = json!(u.keepalive_s);
                    v["keepalive_timeout_count"] = json!(u.keepalive_timeout_count);
                    v["channel_id_map"] = json!(u.channel_id_map);
                    v["groups"] = json!(u.groups);
                    v["channel_groups"] = json!(u.channel_groups);
                }
                v
            })
            .collect()
    }

    /// Adds an upstream (`existing` None: the body is a whole upstream, as in the config) or
    /// changes `existing` (the body's fields over its settings; a password left out or empty
    /// stays). The upstream as the API shows it.
    pub async fn set_upstream(self: &Rc<Self>, existing: Option<&str>, body: &[u8]) -> Result<Value, UpstreamAdminError> {
        let _one_at_a_time = self.upstream_admin_gate.acquire_permit(1).await.map_err(|e| UpstreamAdminError::NotSaved(e.to_string()))?;
        let given: Value = serde_json::from_slice(body).map_err(|e| UpstreamAdminError::Invalid(format!("body is not JSON: {e}")))?;
        let Some(fields) = given.as_object() else { return Err(UpstreamAdminError::Invalid("body must be a JSON object".into())) };
        let settings = self.upstream_settings();
        let upstream: UpstreamYaml = match existing {
            None => {
                let u: UpstreamYaml = serde_json::from_value(given.clone()).map_err(|e| UpstreamAdminError::Invalid(e.to_string()))?;
                if settings.iter().any(|(s, _)| s.id == u.id) {
                    return Err(UpstreamAdminError::Exists);
                }
                if settings.len() >= UPSTREAMS_MAX {
                    return Err(UpstreamAdminError::Full);
                }
                u
            }
            Some(id) => {
                let Some((current, _)) = settings.iter().find(|(s, _)| s.id == id) else { return Err(UpstreamAdminError::NotFound) };
                if fields.get("id").is_some_and(|v| v.as_str() != Some(id)) {
                    return Err(UpstreamAdminError::Invalid("id cannot change (remove the upstream and add it under the new id)".into()));
                }
                let mut merged = json!(current);
                for (k, v) in fields {
                    if k == "password" && v.as_str().is_some_and(str::is_empty) {
                        continue;
                    }
                    merged[k] = v.clone();
                }
                serde_json::from_value(merged).map_err(|e| UpstreamAdminError::Invalid(e.to_string()))?
            }
        };
        // Its address may be a name: resolved off the executor.
        let checked = upstream.clone();
        let cfg = glommio::executor().spawn_blocking(move || checked.to_endpoint()).await.map_err(UpstreamAdminError::Invalid)?;
        if !matches!(self.command(Command::SetUpstream(Box::new(cfg))), Outcome::Found(true)) {
            return Err(UpstreamAdminError::Full);
        }
        let id = upstream.id.clone();
        tracing::info!(upstream = id, address = upstream.address, "upstream set through the API");
        self.upstream_changes.borrow_mut().set(upstream);
        self.save_upstream_changes().await?;
        Ok(self.upstreams_json().into_iter().find(|v| v["id"] == id.as_str()).unwrap_or(Value::Null))
    }

    /// Removes an upstream (`Expires: 0` to it, its sessions ended).
    pub async fn remove_upstream(self: &Rc<Self>, id: &str) -> Result<(), UpstreamAdminError> {
        let _one_at_a_time = self.upstream_admin_gate.acquire_permit(1).await.map_err(|e| UpstreamAdminError::NotSaved(e.to_string()))?;
        if !self.upstream_settings().iter().any(|(u, _)| u.id == id) {
            return Err(UpstreamAdminError::NotFound);
        }
        self.command(Command::RemoveUpstream { id: id.to_string() });
        tracing::info!(upstream = id, "upstream removed through the API");
        self.upstream_changes.borrow_mut().remove(id);
        self.save_upstream_changes().await
    }

    async fn save_upstream_changes(&self) -> Result<(), UpstreamAdminError> {
        let changes: Changes = self.upstream_changes.borrow().clone();
        let data_dir = self.shard.config.data_dir.clone();
        glommio::executor().spawn_blocking(move || upstreams_store::save(&data_dir, &changes)).await.map_err(|e| {
            tracing::error!(error = %e, "upstream changes not saved");
            UpstreamAdminError::NotSaved(e.to_string())
        })
    }
}
