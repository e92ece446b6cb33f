//! The device registry's persistence at platform scale: a copy of every device (what the
//! control executor did every `PERSIST_INTERVAL` the registry changed, before it handed over
//! only the changed devices), and what the blocking thread still does then (JSON of the whole
//! registry, written and fsynced). Decides whether an embedded database's per-device writes
//! are worth it.

use criterion::{Criterion, criterion_group, criterion_main};
use gmv::proto::sip::endpoint::Device;
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
    g.bench_function("save_json_fsync", |b| b.iter(|| gmv::control::store::save(&dir, black_box(&devices)).unwrap()));
    g.finish();
    let bytes = std::fs::metadata(gmv::control::store::registry_path(&dir)).map_or(0, |m| m.len());
    eprintln!("registry file: {} MB for {DEVICES} devices of {CHANNELS_PER_DEVICE} channels", bytes / 1_000_000);
    let _ = std::fs::remove_dir_all(dir);
}

criterion_group!(benches, bench);
criterion_main!(benches);
