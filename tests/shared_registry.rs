//! The device registry shared by two controls in PostgreSQL (`registry.postgres`): one active
//! (it holds the lease and serves SIP), the other standby (it follows the registry and answers
//! the API read-only), and the standby taking over when the active one dies or stops; record
//! plans live there too, listed by both and recorded by the active control alone. Needs a
//! PostgreSQL server: `GMV_TEST_POSTGRES` names a role that may create databases
//! (`scripts/test.sh` starts one and sets it); each test makes a database of its own.

mod common;

use common::gb_device::*;
use common::gb_sim::*;
use common::*;
use gmv::control::store::shared::{DbError, Lead, Shared};
use gmv::proto::sip::endpoint::{Device, RegistryChanges};
use serde_json::{Value, json};
use std::sync::atomic::Ordering;
use std::time::Duration;

/// A new, empty database for one test: its connection string.
fn fresh_database(name: &str) -> String {
    let admin = std::env::var("GMV_TEST_POSTGRES")
        .expect("GMV_TEST_POSTGRES: a PostgreSQL connection string (key=value form) of a role that may create databases; scripts/test.sh starts a server and sets it");
    let name = format!("{name}_{}", std::process::id());
    let mut client = postgres::Client::connect(&admin, postgres::NoTls).expect("connect to GMV_TEST_POSTGRES");
    // One statement each: a batch would run as one transaction, which DROP DATABASE refuses.
    client.batch_execute(&format!("DROP DATABASE IF EXISTS {name} WITH (FORCE)")).unwrap();
    client.batch_execute(&format!("CREATE DATABASE {name}")).unwrap();
    format!("{admin} dbname={name}")
}

fn ids(changes: &RegistryChanges) -> (Vec<&str>, Vec<&str>) {
    (changes.changed.iter().map(|d| d.device_id.as_str()).collect(), changes.removed.iter().map(String::as_str).collect())
}

#[test]
fn only_the_lease_holder_writes_and_a_control_that_lost_it_is_fenced() {
    let url = fresh_database("gmv_fence");
    let a = Shared::new(&url, "a", 2).unwrap();
    let b = Shared::new(&url, "b", 2).unwrap();
    a.create_schema().unwrap();
    b.create_schema().unwrap();
    assert_eq!(a.try_lead().unwrap(), Lead::Won { epoch: 1 });
    match b.try_lead().unwrap() {
        Lead::Held { holder, expires_in_ms } => assert!(holder == "a" && (1..=2000).contains(&expires_in_ms), "{holder} {expires_in_ms}"),
        won => panic!("b must not win a held lease: {won:?}"),
    }
    let write = |changed: &[&str], removed: &[&str]| RegistryChanges {
        changed: changed.iter().map(|id| Device::new(id)).collect(),
        removed: removed.iter().map(|id| id.to_string()).collect(),
    };
    assert_eq!(a.apply(&write(&["d1", "d2"], &[])).unwrap(), 2);
    assert!(matches!(b.apply(&write(&["b-was-here"], &[])), Err(DbError::Fenced)), "a standby writes nothing");
    let first = b.follow(0).unwrap();
    assert_eq!(ids(&first.changes), (vec!["d1", "d2"], vec![]));
    assert!(!first.more);

    // a pauses past its lease (as a stalled process would): b takes over, a is fenced.
    let mut admin = postgres::Client::connect(&url, postgres::NoTls).unwrap();
    admin.execute("UPDATE gmv_lease SET expires_at = now() - interval '1 second'", &[]).unwrap();
    assert_eq!(b.try_lead().unwrap(), Lead::Won { epoch: 2 });
    assert!(matches!(a.apply(&write(&["d3"], &["d2"])), Err(DbError::Fenced)), "the old holder's write is refused");
    assert!(!a.renew().unwrap(), "its renewal too");
    assert_eq!(a.epoch(), 0);
    assert!(b.renew().unwrap());

    let mut d2 = Device::new("d2");
    d2.last_error = Some("changed by b".into());
    b.apply(&RegistryChanges { changed: vec![d2], removed: vec!["d1".into()] }).unwrap();
    let next = a.follow(first.version).unwrap();
    assert_eq!(ids(&next.changes), (vec!["d2"], vec!["d1"]), "only what changed since, removals too");
    assert_eq!(next.changes.changed[0].last_error.as_deref(), Some("changed by b"));
    assert!(next.version > first.version);
    assert!(a.follow(next.version).unwrap().changes.changed.is_empty());
    assert_eq!(b.devices().unwrap().iter().map(|d| d.device_id.as_str()).collect::<Vec<_>>(), ["d2"]);

    // A graceful stop hands the lease over at once.
    b.release().unwrap();
    assert_eq!(a.try_lead().unwrap(), Lead::Won { epoch: 3 });
}

fn control(url: &str, instance: &str) -> Engine {
    let yaml = format!("registry:\n  postgres: \"{url}\"\n  instance: {instance}\n  lease_s: 2\n");
    Engine::start_with(1, &yaml, "  no_viewer_stop_s: 0\n", None)
}

fn ha(engine: &Engine) -> Value {
    let (status, health) = engine.request("GET", "/api/health", "");
    assert_eq!(status, 200);
    health["control"].clone()
}

fn wait_mode(engine: &Engine, mode: &str, leader: &str, limit: Duration) {
    wait_for(&format!("{mode} with leader {leader}"), limit, || {
        let ha = ha(engine);
        (ha["mode"] == mode && ha["leader"] == leader).then_some(())
    });
}

fn channels(engine: &Engine) -> usize {
    let (_, v) = engine.request("GET", &format!("/api/devices/{DEVICE}/channels"), "");
    v["channels"].as_array().map_or(0, Vec::len)
}

#[test]
fn the_standby_follows_the_registry_and_takes_over_when_the_active_control_dies() {
    let url = fresh_database("gmv_failover");
    let mut a = control(&url, "a");
    wait_mode(&a, "active", "a", Duration::from_secs(10));
    let mut b = control(&url, "b");
    wait_mode(&b, "standby", "a", Duration::from_secs(10));

    // The device registers at a; b lists it and its channels from the shared registry.
    let (events, stop, device) = registered_device(&a);
    wait_for("the standby to list the device's channels", Duration::from_secs(10), || (channels(&b) == CHANNELS.len()).then_some(()));
    let (_, listed) = b.request("GET", &format!("/api/devices/{DEVICE}"), "");
    assert_eq!(listed["online"], false, "online at the active control only: {listed}");
    // The standby plays nothing and serves no SIP.
    let (status, refused) = b.request("POST", &format!("/api/devices/{DEVICE}/channels/{}/play", CHANNELS[0]), "{}");
    assert_eq!((status, refused["code"].as_str()), (503, Some("standby")), "{refused}");
    assert!(refused["message"].as_str().unwrap().contains("active control is a"), "{refused}");
    let mut stranger = Sim::new(b.sip);
    let register = stranger.request("REGISTER", "standby-reg", "Expires: 3600\r\n", None, b"");
    stranger.send(&register);
    assert!(stranger.recv_response(Duration::from_secs(1)).is_none(), "a standby answers no SIP");
    wait_for("the dropped REGISTER counted", Duration::from_secs(5), || {
        let (_, m) = b.try_request("GET", "/metrics", &[("gmv-token", TOKEN)], b"").unwrap();
        m.lines().any(|l| l.starts_with("gmv_sip_driver_standby_dropped_total 1")).then_some(())
    });

    // a dies; b takes over within the lease and its next try.
    a.kill();
    stop.store(true, Ordering::SeqCst);
    device.join().unwrap();
    drop(events);
    wait_mode(&b, "active", "b", Duration::from_secs(10));
    assert_eq!(ha(&b)["takeovers"], 1);
    assert!(b.log_text().contains("registry lease won"), "{}", b.log_text());

    // The device registers again (its backup server, or the floating address moved) and plays
    // through b, whose registry already had its channels.
    assert_eq!(channels(&b), CHANNELS.len());
    let (events, stop, device) = registered_device(&b);
    let session = play(&b, CHANNELS[1]);
    let DeviceEvent::Invited { channel, .. } = next_event(&events) else { panic!("no INVITE from b") };
    assert_eq!(channel, CHANNELS[1]);
    watch(session["play"]["flv"].as_str().unwrap(), "failover.flv");

    // a comes back: standby now. b stops gracefully: a takes over at once, with the device.
    let a_again = control(&url, "a");
    wait_mode(&a_again, "standby", "b", Duration::from_secs(10));
    b.terminate();
    wait_mode(&a_again, "active", "a", Duration::from_secs(5));
    assert_eq!(channels(&a_again), CHANNELS.len());
    stop.store(true, Ordering::SeqCst);
    device.join().unwrap();
}

#[test]
fn an_active_control_paused_past_its_lease_stops_instead_of_serving_beside_its_successor() {
    let url = fresh_database("gmv_pause");
    let mut a = control(&url, "a");
    wait_mode(&a, "active", "a", Duration::from_secs(10));
    let b = control(&url, "b");
    wait_mode(&b, "standby", "a", Duration::from_secs(10));
    a.signal(libc::SIGSTOP);
    wait_mode(&b, "active", "b", Duration::from_secs(10));
    a.signal(libc::SIGCONT);
    let status = a.wait_exit(Duration::from_secs(20)).unwrap_or_else(|| panic!("a kept running beside b; log:\n{}", a.log_text()));
    assert!(status.success(), "a graceful stop: {status:?}");
    let log = a.log_text();
    assert!(log.contains("registry lease lost"), "{log}");
    assert!(!log.contains("registry lease released"), "it had nothing left to release: {log}");
    assert_eq!(ha(&b)["mode"], "active");
}

#[test]
fn a_control_that_cannot_reach_the_database_stays_standby_and_says_why() {
    // A closed port: nothing listens on loopback port 1.
    let engine = control("host=127.0.0.1 port=1 user=gmv password=x dbname=gmv connect_timeout=1", "lonely");
    let ha = wait_for("the first failed try", Duration::from_secs(15), || {
        let ha = ha(&engine);
        ha["last_error"].is_string().then_some(ha)
    });
    assert_eq!(ha["mode"], "standby", "{ha}");
    assert!(ha["last_error"].as_str().unwrap().contains("PostgreSQL"), "{ha}");
    let (status, refused) = engine.request("POST", &format!("/api/devices/{DEVICE}/sync"), "");
    assert_eq!((status, refused["code"].as_str()), (503, Some("standby")), "{refused}");
    let (_, config) = engine.request("GET", "/api/config", "");
    assert_eq!(config["registry"]["postgres"], "host=127.0.0.1 port=1 user=gmv password=(secret) dbname=gmv connect_timeout=1", "{config}");
}

#[test]
fn the_record_plans_row_is_written_by_the_lease_holder_only_and_read_when_newer() {
    let url = fresh_database("gmv_plans_row");
    let a = Shared::new(&url, "a", 2).unwrap();
    let b = Shared::new(&url, "b", 2).unwrap();
    a.create_schema().unwrap();
    assert_eq!(a.record_plans_after(0).unwrap(), None, "never written");
    assert!(matches!(a.save_record_plans("{}"), Err(DbError::Fenced)), "no lease, no write");
    assert_eq!(a.try_lead().unwrap(), Lead::Won { epoch: 1 });
    assert_eq!(a.save_record_plans(r#"{"plans":{}}"#).unwrap(), 1);
    assert_eq!(a.save_record_plans(r#"{"plans":{},"channels":{}}"#).unwrap(), 2);
    assert!(matches!(b.save_record_plans("{}"), Err(DbError::Fenced)), "a standby writes nothing");
    assert_eq!(b.record_plans_after(0).unwrap(), Some((r#"{"plans":{},"channels":{}}"#.to_string(), 2)));
    assert_eq!(b.record_plans_after(2).unwrap(), None, "nothing newer");
}

/// One channel's entry in a control's `GET /api/record-plans`.
fn plan_channel(engine: &Engine, channel: &str) -> Value {
    let (_, v) = engine.request("GET", "/api/record-plans", "");
    v["channels"].as_array().and_then(|c| c.iter().find(|c| c["channel_id"] == channel).cloned()).unwrap_or(Value::Null)
}

/// The next INVITE the device takes for `channel` (other events passed over).
fn invited(events: &std::sync::mpsc::Receiver<DeviceEvent>, channel: &str) {
    loop {
        if let DeviceEvent::Invited { channel: c, .. } = next_event(events)
            && c == channel
        {
            return;
        }
    }
}

#[test]
fn record_plans_follow_the_shared_registry_and_only_the_active_control_records_them() {
    let url = fresh_database("gmv_plans");
    // a kept a plan of its own before the registry was shared: the empty registry takes it.
    let a_data = work_dir().join(format!("plans-a-{}", std::process::id()));
    std::fs::create_dir_all(&a_data).unwrap();
    let weekend = json!({ "name": "weekend", "ranges": [{ "days": [6, 7], "start": "00:00", "end": "24:00" }] });
    std::fs::write(a_data.join("record_plans.json"), json!({ "plans": { "weekend": weekend } }).to_string()).unwrap();
    let yaml = format!("registry:\n  postgres: \"{url}\"\n  instance: a\n  lease_s: 2\n");
    let mut a = Engine::start_with(1, &yaml, "  no_viewer_stop_s: 0\n", Some(a_data));
    wait_mode(&a, "active", "a", Duration::from_secs(10));
    let b = control(&url, "b");
    wait_mode(&b, "standby", "a", Duration::from_secs(10));
    let (events, stop, device) = registered_device(&a);
    wait_for("the standby to list the device's channels", Duration::from_secs(10), || (channels(&b) == CHANNELS.len()).then_some(()));

    let listed = wait_for("the standby to list a's own plan", Duration::from_secs(10), || {
        let (status, v) = b.request("GET", "/api/record-plans/weekend", "");
        (status == 200).then_some(v)
    });
    assert_eq!((listed["name"].as_str(), listed["time_zone"].as_str()), (Some("weekend"), Some("+08:00")), "{listed}");

    // Set at the active control only; the standby refuses changes.
    let always = json!({ "name": "always", "time_zone": "UTC", "ranges": [{ "days": [1, 2, 3, 4, 5, 6, 7], "start": "00:00", "end": "24:00" }] }).to_string();
    let assign = format!("/api/devices/{DEVICE}/channels/{}/record-plan", CHANNELS[0]);
    let (status, refused) = b.request("POST", "/api/record-plans", &always);
    assert_eq!((status, refused["code"].as_str()), (503, Some("standby")), "{refused}");
    assert_eq!(a.request("POST", "/api/record-plans", &always).0, 201);
    assert_eq!(b.request("PUT", &assign, r#"{"plan": "always"}"#).0, 503);
    assert_eq!(a.request("PUT", &assign, r#"{"plan": "always"}"#).0, 200);

    // The active control invites the channel, nobody watching, and records it.
    invited(&events, CHANNELS[0]);
    let stream_id = wait_for("a to record the planned channel", Duration::from_secs(10), || {
        let c = plan_channel(&a, CHANNELS[0]);
        (c["state"] == "recording").then(|| c["stream_id"].as_str().unwrap().to_string())
    });
    wait_for("a's recording to take media", Duration::from_secs(10), || (a.stream(&stream_id)["record_bytes"].as_u64() > Some(0)).then_some(()));

    // The standby lists the plan and the channel's place in it, and drives nothing.
    let listed = wait_for("the standby to list the plan and its channel", Duration::from_secs(10), || {
        let (_, v) = b.request("GET", "/api/record-plans", "");
        (v["plans"][0]["channels"][0] == format!("{DEVICE}/{}", CHANNELS[0])).then_some(v)
    });
    assert_eq!((listed["plans"][0]["name"].as_str(), listed["plans"][0]["active"].as_bool()), (Some("always"), Some(true)), "{listed}");
    let c = &listed["channels"][0];
    assert_eq!((c["plan"].as_str(), c["state"].as_str(), c["active"].as_bool(), &c["stream_id"]), (Some("always"), Some("standby"), Some(true), &Value::Null), "{listed}");
    // Several plan ticks of both later (4 s of media recorded), still one INVITE and one
    // session: a's.
    wait_for("4 s recorded at a", Duration::from_secs(15), || (a.stream(&stream_id)["media_ms"].as_u64() >= Some(4_000)).then_some(()));
    let more: Vec<DeviceEvent> = events.try_iter().filter(|e| matches!(e, DeviceEvent::Invited { .. })).collect();
    assert!(more.is_empty(), "invited again: {more:?}");
    assert_eq!(plan_channel(&a, CHANNELS[0])["stream_id"].as_str(), Some(stream_id.as_str()), "the same recording throughout");
    let (_, sessions) = b.request("GET", "/api/sessions", "");
    assert_eq!(sessions["sessions"].as_array().map(Vec::len), Some(0), "{sessions}");
    let b_log = b.log_text();
    assert!(!b_log.contains("record plan: recording") && !b_log.contains("record plan: cannot record"), "{b_log}");

    // a dies: b takes over with the plans it followed, and once the device registers with it,
    // records the channel itself.
    a.kill();
    stop.store(true, Ordering::SeqCst);
    device.join().unwrap();
    drop(events);
    wait_mode(&b, "active", "b", Duration::from_secs(10));
    let (events, stop, device) = registered_device(&b);
    invited(&events, CHANNELS[0]);
    wait_for("b to record the planned channel", Duration::from_secs(10), || (plan_channel(&b, CHANNELS[0])["state"] == "recording").then_some(()));

    // A control started later with a data_dir of its own lists them from the registry, and
    // follows their removal; the removed plan's session ends.
    let c = control(&url, "c");
    wait_mode(&c, "standby", "b", Duration::from_secs(10));
    wait_for("the new control to list the plan", Duration::from_secs(10), || (plan_channel(&c, CHANNELS[0])["plan"] == "always").then_some(()));
    assert_eq!(b.request("DELETE", "/api/record-plans/always", "").0, 200);
    wait_for("the new control to list only a's own plan, without channels", Duration::from_secs(10), || {
        let (_, v) = c.request("GET", "/api/record-plans", "");
        let names: Vec<&str> = v["plans"].as_array().map(|p| p.iter().filter_map(|p| p["name"].as_str()).collect()).unwrap_or_default();
        (names == ["weekend"] && v["channels"] == json!([])).then_some(())
    });
    loop {
        if let DeviceEvent::Bye { channel } = next_event(&events)
            && channel == CHANNELS[0]
        {
            break;
        }
    }
    stop.store(true, Ordering::SeqCst);
    device.join().unwrap();
}
