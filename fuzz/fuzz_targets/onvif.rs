//! ONVIF answers from cameras on the LAN: SOAP responses and faults, WS-Discovery datagrams
//! (anyone on the segment can send one) and HTTP digest challenges.
#![no_main]
use gmv::proto::onvif::{
    DATAGRAM_BYTES_MAX, DigestChallenge, PRESETS_MAX, PROBE_MATCHES_MAX, PROFILES_MAX, SCOPES_MAX, XADDRS_MAX, parse_ack,
    parse_device_information, parse_presets, parse_probe_match, parse_profiles, parse_service_urls, parse_set_preset,
    parse_stream_uri, parse_system_date_and_time,
};
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let id = "urn:uuid:0c8e5b5e-3d0a-4f7e-9a55-2b1f7c9d4e21";
    match parse_probe_match(data, id) {
        Ok(found) => {
            assert!(data.len() <= DATAGRAM_BYTES_MAX && found.len() <= PROBE_MATCHES_MAX);
            for d in &found {
                assert!(d.xaddrs.len() <= XADDRS_MAX && d.scopes.len() <= SCOPES_MAX && !d.endpoint.is_empty());
                assert!(d.device_url().is_none_or(|u| u.starts_with("http://")));
            }
        }
        Err(e) => drop(e.to_string()),
    }
    let device = "http://192.0.2.1/onvif/device_service";
    if let Ok(urls) = parse_service_urls(data, device) {
        assert!(!urls.media.is_empty() && !urls.ptz.is_empty());
    }
    if let Ok(t) = parse_system_date_and_time(data) {
        assert!(t >= 0);
    }
    if let Ok(profiles) = parse_profiles(data) {
        assert!(profiles.len() <= PROFILES_MAX && profiles.iter().all(|p| !p.token.is_empty()));
    }
    if let Ok(presets) = parse_presets(data) {
        assert!(presets.len() <= PRESETS_MAX);
    }
    let _ = (parse_device_information(data), parse_stream_uri(data), parse_set_preset(data));
    if let Err(e) = parse_ack(data, "Stop") {
        // The driver tells a wrong password from everything else this way; it must never panic.
        let _ = (e.is_not_authorized(), e.fault_is("NoProfile"), e.to_string());
    }
    // Each line stands for one WWW-Authenticate header of a 401.
    let text = String::from_utf8_lossy(data);
    if let Ok(c) = DigestChallenge::choose(text.lines()) {
        let auth = c.authorization("POST", "/onvif/device_service", "admin", "pass", "0a4f113b9c8d7e6f", 1);
        assert!(auth.starts_with("Digest username=\"admin\""));
    }
});
