//! The device registry's persistence at platform scale, 100,000 devices: a copy of every device
//! (what the control executor did each `PERSIST_INTERVAL` the registry changed, before it
//! handed over only the changed devices), the whole-file JSON rewrite of earlier versions
//! (serialise, write, fsync), and the SQLite registry's write of one changed device (a
//! transaction: one row, one WAL fsync).

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
    g.finish();
    let mb = |p: &std::path::Path| std::fs::metadata(p).map_or(0, |m| m.len()) / 1_000_000;
    eprintln!("{DEVICES} devices of {CHANNELS_PER_DEVICE} channels: JSON {} MB, SQLite {} MB", mb(&json), mb(&gmv::control::store::registry_path(&dir)));
    let _ = std::fs::remove_dir_all(dir);
}

criterion_group!(benches, bench);
criterion_main!(benches);
