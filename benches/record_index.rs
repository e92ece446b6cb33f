//! Listing recordings at NVR scale: 100 channels recorded for 7 days in 10-minute files
//! (100,800 recordings, 201,600 directory entries with their sidecars). One channel's day
//! (144 files) asked of the recordings index, and of the directory as every listing did
//! before the index (read every entry, a sidecar per file of no known stream); and what a
//! retention pass reads (every closed recording, oldest first) from the index.

use criterion::{Criterion, criterion_group, criterion_main};
use gmv::shard::record::{RecordFilter, RecordInfo, list_by_scan, records_dir};
use gmv::shard::record_index::RecordIndex;
use std::hint::black_box;

const CHANNELS: u64 = 100;
const DAYS: u64 = 7;
const FILES_PER_DAY: u64 = 144;
const FILE_MS: u64 = 600_000;
const START_MS: u64 = 1_790_000_000_000;

fn channel(c: u64) -> String {
    format!("3402000000131{c:07}")
}

/// Plants the recordings (3-byte files and their sidecars).
fn plant(data_dir: &std::path::Path) {
    let records = records_dir(data_dir);
    let _ = std::fs::remove_dir_all(data_dir);
    std::fs::create_dir_all(&records).unwrap();
    for c in 0..CHANNELS {
        let stream_id = format!("{:010}", 100 + c);
        for n in 0..DAYS * FILES_PER_DAY {
            let start = START_MS + n * FILE_MS;
            let info = RecordInfo {
                file: format!("{stream_id}_{start}.mp4"),
                stream_id: stream_id.clone(),
                start_unix_ms: start,
                duration_ms: FILE_MS,
                frames: 15_000,
                bytes: 3,
                channel_id: Some(channel(c)),
                ..Default::default()
            };
            std::fs::write(records.join(&info.file), b"mp4").unwrap();
            std::fs::write(records.join(format!("{stream_id}_{start}.json")), serde_json::to_vec(&info).unwrap()).unwrap();
        }
    }
}

fn bench(c: &mut Criterion) {
    let data_dir = std::env::temp_dir().join(format!("gmv-record-index-bench-{}", std::process::id()));
    plant(&data_dir);
    let index = RecordIndex::for_data_dir(&data_dir);
    index.check().unwrap();
    let day = RecordFilter { channel_id: Some(channel(42)), from_ms: Some(START_MS + 3 * 86_400_000), to_ms: Some(START_MS + 4 * 86_400_000 - 1), ..Default::default() };
    assert_eq!(index.list(&day, 10_000).unwrap().len(), FILES_PER_DAY as usize + 1, "the day's files and the one ending at its start");
    let mut g = c.benchmark_group("recordings_100_channels_7_days");
    g.sample_size(10);
    g.bench_function("channel_day_by_index", |b| b.iter(|| black_box(index.list(&day, 10_000).unwrap())));
    g.bench_function("channel_day_by_directory", |b| b.iter(|| black_box(list_by_scan(&records_dir(&data_dir), &day, 10_000))));
    g.bench_function("retention_candidates_by_index", |b| b.iter(|| black_box(index.retention_candidates().unwrap())));
    g.bench_function("check_against_directory", |b| b.iter(|| black_box(index.check().unwrap())));
    g.finish();
    // 800 MB of small files on disk: not left behind.
    std::fs::remove_dir_all(&data_dir).unwrap();
}

criterion_group!(benches, bench);
criterion_main!(benches);
