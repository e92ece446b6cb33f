//! Real SIP material from ../shared/corpus/sip: messages from real devices and a simulator
//! parse; the RFC 4475 torture set's valid messages (§3.1.1) parse, and nothing panics.

mod common;

use std::path::{Path, PathBuf};

/// The files of `root/dir`, sorted.
fn corpus(root: &Path, dir: &str) -> Vec<PathBuf> {
    let d = root.join(dir);
    let mut files: Vec<PathBuf> =
        std::fs::read_dir(&d).unwrap_or_else(|e| panic!("{}: {e}", d.display())).filter_map(|e| e.ok().map(|e| e.path())).collect();
    files.sort();
    files
}

/// RFC 4475 §3.1.1: valid messages a parser must accept.
const TORTURE_VALID: &[&str] = &[
    "wsinv.dat",
    "intmeth.dat",
    "esc01.dat",
    "escnull.dat",
    "esc02.dat",
    "lwsdisp.dat",
    "longreq.dat",
    "dblreq.dat",
    "semiuri.dat",
    "transports.dat",
    "mpart01.dat",
    "unreason.dat",
    "noreason.dat",
];
/// Valid ones rsip (0.4) refuses: exotic method tokens, an escaped method, `;` in a URI user
/// part, an empty reason phrase. No GB28181 device sends these; listed so a change either way
/// is noticed.
const TORTURE_VALID_RSIP_REFUSES: &[&str] = &["intmeth.dat", "esc02.dat", "semiuri.dat", "noreason.dat"];

/// The device transcripts hold many messages, each after a `### n who->whom what` line.
fn transcript_messages(text: &str) -> Vec<(String, String)> {
    let mut out: Vec<(String, String)> = Vec::new();
    for line in text.lines() {
        if let Some(title) = line.strip_prefix("### ") {
            out.push((title.to_string(), String::new()));
        } else if let Some((_, msg)) = out.last_mut() {
            msg.push_str(line);
            msg.push_str("\r\n");
        }
    }
    // The last message of a file may lack its closing blank line.
    out.into_iter().filter(|(_, m)| !m.trim().is_empty()).map(|(t, m)| if m.contains("\r\n\r\n") { (t, m) } else { (t, m + "\r\n") }).collect()
}

#[test]
fn real_device_messages_parse() {
    let Some(root) = common::corpus_dir("sip") else { return };
    let mut count = 0;
    for f in corpus(&root, "real_devices") {
        for (title, msg) in transcript_messages(&std::fs::read_to_string(&f).unwrap()) {
            let parsed = gmv::proto::sip::parse(msg.as_bytes());
            assert!(parsed.is_ok(), "{} / {title}: {:?}", f.display(), parsed.err());
            count += 1;
        }
    }
    // A simulator's messages as datagrams: its Content-Length is off (207 declared for a
    // 159-byte SDP), which a datagram's own end makes harmless.
    for f in corpus(&root, "synthetic_uvp_sim") {
        let parsed = gmv::proto::sip::parse_datagram(&std::fs::read(&f).unwrap());
        assert!(parsed.is_ok(), "{}: {:?}", f.display(), parsed.err());
        count += 1;
    }
    assert!(count >= 40, "{count} messages");
}

#[test]
fn torture_set_valid_messages_parse_and_none_panics() {
    let Some(root) = common::corpus_dir("sip") else { return };
    let mut accepted = Vec::new();
    for f in corpus(&root, "rfc4475_torture") {
        let bytes = std::fs::read(&f).unwrap();
        let name = f.file_name().unwrap().to_string_lossy().to_string();
        if let Ok(m) = gmv::proto::sip::parse(&bytes) {
            let _ = (m.cseq(), m.from_user(), m.to_tag(), m.content_type(), m.expires(), m.branch(), m.call_id());
            accepted.push(name);
        }
        let _ = gmv::proto::sip::build::bad_request_for_unparsed(&bytes, "127.0.0.1:5060".parse().unwrap());
    }
    let missing: Vec<&str> = TORTURE_VALID.iter().copied().filter(|v| !accepted.iter().any(|a| a == v)).collect();
    assert_eq!(missing, TORTURE_VALID_RSIP_REFUSES, "valid RFC 4475 messages refused");
}
