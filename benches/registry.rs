//! The device registry's persistence at platform scale, 100,000 devices: a copy of every device
//! (what the control executor did each `PERSIST_INTERVAL` the registry changed, before it
//! handed over only the changed devices), the whole-file JSON rewrite of earlier versions
//! (serialise, write, fsync), and the SQLite registry's write of one changed device (a
//! transaction: one row, one WAL fsync). With `GMV_BENCH_POSTGRES` (a connection string whose
//! role may create databases) also the shared registry: one changed device written under the
//! lease (fenced transaction), and a standby's read of what changed since.
// A bench reports its figures beside criterion's.
#![allow(clippy::print_stderr)]

use criterion::{Criterion, criterion_group, criterion_main};
use gmv::proto::sip::endpoint::{Device, RegistryChanges};
use std::io::Write;
use gmv::proto::sip::manscdp::CatalogItem;
use std::hint::black_box;

const DEVICES: usize = 100_000;
const CHANNELS_PER_DEVICE: usize = 4;

fn registry() -> Vec<Device> {
    (0..DEVICES)
        .map(|d| {
            let id = format!("3402000000132{d:07}");
            let mut dev = Device::new(&id);
            for c in 0..CHANNELS_PER_DEVICE {
                let ch = format!("3402000000131{:07}", d * CHANNELS_PER_DEVICE + c);
                let item = CatalogItem { device_id: ch.clone(), name: format!("camera {c} of {d}"), manufacturer: "Hikvision".into(), status: "ON".into(), parent_id: id.clone(), ..Default::default() };
                dev.channels.insert(ch, item);
            }
            dev
        })
        .collect()
}

fn bench(c: &mut Criterion) {
    let devices = registry();
    let dir = std::env::temp_dir().join(format!("gmv-registry-bench-{}", std::process::id()));
    let mut g = c.benchmark_group("registry_100k_devices");
    g.sample_size(10);
    g.bench_function("clone_all", |b| b.iter(|| black_box(devices.to_vec())));
    std::fs::create_dir_all(&dir).unwrap();
    let json = dir.join("devices.json");
    g.bench_function("json_whole_file_fsync", |b| {
        b.iter(|| {
            let mut f = std::fs::File::create(&json).unwrap();
            f.write_all(&serde_json::to_vec(black_box(&devices)).unwrap()).unwrap();
            f.sync_all().unwrap();
        })
    });
    let persisted = gmv::control::store::Persisted::open(&dir).unwrap();
    persisted.apply(&RegistryChanges { changed: devices.clone(), removed: Vec::new() }).unwrap();
    let mut one = devices[DEVICES / 2].clone();
    g.bench_function("sqlite_one_device_changed", |b| {
        b.iter(|| {
            one.registered_at += 1;
            persisted.apply(&RegistryChanges { changed: vec![one.clone()], removed: Vec::new() }).unwrap()
        })
    });
    if let Ok(admin) = std::env::var("GMV_BENCH_POSTGRES") {
        bench_shared(&mut g, &admin, &devices, one);
    }
    g.finish();
    let mb = |p: &std::path::Path| std::fs::metadata(p).map_or(0, |m| m.len()) / 1_000_000;
    eprintln!("{DEVICES} devices of {CHANNELS_PER_DEVICE} channels: JSON {} MB, SQLite {} MB", mb(&json), mb(&gmv::control::store::registry_path(&dir)));
    let _ = std::fs::remove_dir_all(dir);
}

fn bench_shared(g: &mut criterion::BenchmarkGroup<'_, criterion::measurement::WallTime>, admin: &str, devices: &[Device], mut one: Device) {
    use gmv::control::store::shared::{Lead, Shared};
    let name = format!("gmv_bench_{}", std::process::id());
    let mut client = postgres::Client::connect(admin, postgres::NoTls).unwrap();
    client.batch_execute(&format!("DROP DATABASE IF EXISTS {name} WITH (FORCE)")).unwrap();
    client.batch_execute(&format!("CREATE DATABASE {name}")).unwrap();
    let url = format!("{admin} dbname={name}");
    let active = Shared::new(&url, "bench-active", 120).unwrap();
    active.create_schema().unwrap();
    assert!(matches!(active.try_lead().unwrap(), Lead::Won { .. }));
    let started = std::time::Instant::now();
    active.apply(&RegistryChanges { changed: devices.to_vec(), removed: Vec::new() }).unwrap();
    eprintln!("{DEVICES} devices written to PostgreSQL in one transaction: {:?}", started.elapsed());
    let standby = Shared::new(&url, "bench-standby", 120).unwrap();
    let mut version = 0;
    while let Ok(f) = standby.follow(version) {
        version = f.version;
        if !f.more {
            break;
        }
    }
    g.bench_function("postgres_one_device_changed", |b| {
        b.iter(|| {
            one.registered_at += 1;
            active.apply(&RegistryChanges { changed: vec![one.clone()], removed: Vec::new() }).unwrap()
        })
    });
    g.bench_function("postgres_standby_follows_one_change", |b| {
        b.iter(|| {
            one.registered_at += 1;
            active.apply(&RegistryChanges { changed: vec![one.clone()], removed: Vec::new() }).unwrap();
            let f = standby.follow(version).unwrap();
            assert_eq!(f.changes.changed.len(), 1);
            version = f.version;
        })
    });
    drop((active, standby));
    client.batch_execute(&format!("DROP DATABASE IF EXISTS {name} WITH (FORCE)")).unwrap();
}

criterion_group!(benches, bench);
criterion_main!(benches);
