//! Segments: sealing at the boundary, retention that keeps what is still open, opening that
//! reads only the newest segments, compressed and reference-rotated files, bad settings.

use std::path::{Path, PathBuf};

use super::segments::{self, Layout};
use super::*;
use crate::keys::KeySpans;

fn temp_store(name: &str) -> PathBuf {
    let dir = std::env::temp_dir().join(format!("oca-segtest-{}-{name}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    std::fs::create_dir_all(&dir).unwrap();
    dir.join("events.jsonl")
}

fn checkpoints() -> CollectSpec {
    CollectSpec {
        types: vec!["session.end".into()],
        pairs: vec![OpenClose {
            open_type: "cp.requested".into(),
            open_fields: vec!["id".into()],
            close_types: vec!["cp.approved".into()],
            close_fields: vec!["checkpoint_id".into()],
        }],
    }
}

fn small(cache: usize, budget: Option<u64>) -> StoreOptions {
    StoreOptions {
        max_cache_size: cache,
        retain: cache,
        max_event_bytes: 1000,
        max_segment_bytes: 4096,
        max_disk_bytes: budget,
        collect: checkpoints(),
        ..StoreOptions::default()
    }
}

fn fields(event_type: &str) -> EventFields<'_> {
    EventFields {
        event_type,
        stream_id: Some("s"),
        actor: None,
        correlation_id: None,
        timestamp: 1.0,
    }
}

/// Appends `{"type":T,"payload":P` (the store adds the seq and the brace).
fn add(store: &mut Store, event_type: &str, payload: &str) -> u64 {
    let body = format!("{{\"type\":\"{event_type}\",\"payload\":{payload}");
    store
        .append(body.as_bytes(), &fields(event_type), &KeySpans::default())
        .unwrap()
}

fn filler(store: &mut Store, count: usize) {
    for n in 0..count {
        add(
            store,
            "note",
            &format!("{{\"text\":\"{}\"}}", "x".repeat(60 + n % 7)),
        );
    }
}

/// Closes and drops the store (releasing its lock); returns its segment stats.
fn close(mut store: Store) -> SegmentStats {
    store.close().unwrap();
    store.segment_stats()
}

fn sealed_files(path: &Path) -> Vec<segments::SegmentFile> {
    segments::list(&Layout::of(path)).unwrap().segments
}

fn collected_seqs(store: &mut Store) -> Vec<u64> {
    store
        .take_collected()
        .into_iter()
        .map(|(seq, _)| seq)
        .collect()
}

#[test]
fn sealing_happens_at_the_boundary_and_never_splits_a_line() {
    let path = temp_store("boundary");
    let mut store = Store::open(&path, small(1000, None)).unwrap();
    filler(&mut store, 300);
    close(store);
    let files = sealed_files(&path);
    assert!(files.len() >= 5, "{} sealed segments", files.len());
    let mut expected_seq = 1;
    for (index, file) in files.iter().enumerate() {
        let data = std::fs::read(&file.path).unwrap();
        assert!(data.len() as u64 <= 4096, "{} bytes", data.len());
        assert!(data.ends_with(b"\n"));
        let mut lines = data.split(|&b| b == b'\n').filter(|l| !l.is_empty());
        if index > 0 {
            // Every segment made by sealing starts with its snapshot header.
            let header = lines.next().unwrap();
            assert!(header.starts_with(b"{\"segment\":"), "{index}");
        }
        let seqs: Vec<u64> = lines
            .map(|l| crate::json::scan_event_line(l).unwrap().seq.unwrap())
            .collect();
        assert_eq!(file.first_seq(), Some(seqs[0]));
        assert_eq!(seqs[0], expected_seq);
        assert!(seqs.windows(2).all(|w| w[1] == w[0] + 1));
        expected_seq = seqs[seqs.len() - 1] + 1;
    }
    let store = Store::open(&path, small(1000, None)).unwrap();
    let seqs: Vec<u64> = (0..store.ring().len())
        .map(|i| store.ring().get(i).unwrap().seq)
        .collect();
    assert_eq!(seqs, (1..=300).collect::<Vec<_>>());
    assert_eq!(store.next_seq(), 301);
    assert_eq!(store.recovery().corrupt_lines, 0);
}

#[test]
fn retention_under_a_tiny_budget_keeps_open_checkpoints_across_reopen() {
    let path = temp_store("retention");
    let mut store = Store::open(&path, small(50, Some(3 * 4096))).unwrap();
    let kept = add(&mut store, "cp.requested", "{\"id\":\"a\"}");
    let closed = add(&mut store, "cp.requested", "{\"id\":\"b\"}");
    add(&mut store, "cp.approved", "{\"checkpoint_id\":\"b\"}");
    filler(&mut store, 500);
    let late = add(&mut store, "cp.requested", "{\"id\":\"c\"}");
    let stats = close(store);
    assert!(stats.keeper.segments_dropped >= 5, "{stats:?}");
    assert!(stats.keeper.events_dropped >= 300, "{stats:?}");
    assert!(stats.carried_forward >= stats.sealed, "{stats:?}");
    let files = sealed_files(&path);
    let total: u64 =
        files.iter().map(|f| f.bytes).sum::<u64>() + std::fs::metadata(&path).unwrap().len();
    assert!(total <= 3 * 4096, "{total} bytes on disk");
    assert!(
        files[0].first_seq().unwrap() > closed + 1,
        "the first segments are gone"
    );

    let mut store = Store::open(&path, small(50, Some(3 * 4096))).unwrap();
    assert_eq!(collected_seqs(&mut store), [kept, late]);
    filler(&mut store, 300);
    close(store);
    let mut store = Store::open(&path, small(50, Some(3 * 4096))).unwrap();
    let collected = store.take_collected();
    assert_eq!(
        collected,
        [
            (
                kept,
                b"{\"type\":\"cp.requested\",\"payload\":{\"id\":\"a\"}}".to_vec()
            ),
            (
                late,
                b"{\"type\":\"cp.requested\",\"payload\":{\"id\":\"c\"}}".to_vec()
            ),
        ]
    );
}

#[test]
fn the_active_snapshot_is_synced_only_before_the_newest_sealed_segment_goes() {
    // Room for several segments: retention deletes only sealed segments with a newer sealed
    // one after them, whose snapshot was synced with it.
    let path = temp_store("active-sync-roomy");
    let mut store = Store::open(&path, small(50, Some(5 * 4096))).unwrap();
    filler(&mut store, 800);
    let roomy = close(store);
    assert!(roomy.keeper.segments_dropped >= 5, "{roomy:?}");
    assert_eq!(roomy.keeper.active_syncs, 0, "{roomy:?}");

    // Room for two: the newest sealed segment goes every time, once the snapshot of the active
    // segment that replaces it is on disk.
    let path = temp_store("active-sync-tight");
    let mut store = Store::open(&path, small(50, Some(2 * 4096))).unwrap();
    filler(&mut store, 800);
    let tight = close(store);
    assert!(tight.keeper.segments_dropped >= 5, "{tight:?}");
    assert!(tight.keeper.active_syncs >= 1, "{tight:?}");
    assert!(
        tight.keeper.active_syncs <= tight.keeper.segments_dropped,
        "{tight:?}"
    );
}

#[test]
fn forgotten_openings_are_not_carried() {
    let path = temp_store("forget");
    let mut store = Store::open(&path, small(50, Some(3 * 4096))).unwrap();
    add(&mut store, "cp.requested", "{\"id\":\"a\"}");
    let kept = add(&mut store, "cp.requested", "{\"id\":\"b\"}");
    assert!(store.forget_open("cp.requested", "a"));
    assert!(!store.forget_open("cp.requested", "a"));
    filler(&mut store, 400);
    close(store);
    let mut store = Store::open(&path, small(50, Some(3 * 4096))).unwrap();
    assert_eq!(collected_seqs(&mut store), [kept]);
}

#[test]
fn opening_reads_only_the_segments_the_cache_needs() {
    let path = temp_store("newest");
    let mut store = Store::open(&path, small(20, None)).unwrap();
    filler(&mut store, 2000);
    close(store);
    let store = Store::open(&path, small(20, None)).unwrap();
    let seqs: Vec<u64> = (0..store.ring().len())
        .map(|i| store.ring().get(i).unwrap().seq)
        .collect();
    assert_eq!(seqs, (1981..=2000).collect::<Vec<_>>());
    // The active segment and at most the two newest sealed ones (about 40 events each).
    assert!(store.recovery().events < 150, "{:?}", store.recovery());
    assert_eq!(store.next_seq(), 2001);
}

#[test]
fn only_the_newest_part_of_the_oldest_segment_needed_is_read() {
    let path = temp_store("skip");
    let options = StoreOptions {
        max_segment_bytes: 64 << 10,
        collect: CollectSpec::default(),
        ..small(700, None)
    };
    let mut store = Store::open(&path, options.clone()).unwrap();
    filler(&mut store, 5000);
    close(store);
    let store = Store::open(&path, options).unwrap();
    let seqs: Vec<u64> = (0..store.ring().len())
        .map(|i| store.ring().get(i).unwrap().seq)
        .collect();
    assert_eq!(seqs, (4301..=5000).collect::<Vec<_>>());
    // About 600 events per segment: without skipping, two whole segments would be read.
    assert!(store.recovery().events < 1000, "{:?}", store.recovery());
    assert_eq!(store.recovery().corrupt_lines, 0);
}

#[test]
fn a_snapshot_cut_short_is_not_trusted_and_the_segment_before_is_read() {
    let path = temp_store("torn-snapshot");
    let mut store = Store::open(&path, small(50, Some(3 * 4096))).unwrap();
    let kept = add(&mut store, "cp.requested", "{\"id\":\"a\"}");
    let other = add(&mut store, "cp.requested", "{\"id\":\"b\"}");
    filler(&mut store, 45);
    close(store);
    assert_eq!(sealed_files(&path).len(), 1);
    // Cut the active segment inside its second carried line, as a kill while sealing would.
    let data = std::fs::read(&path).unwrap();
    let lines: Vec<&[u8]> = data.split_inclusive(|&b| b == b'\n').collect();
    assert!(lines[0].starts_with(b"{\"segment\":"));
    let cut = lines[0].len() + lines[1].len() + lines[2].len() / 2;
    std::fs::write(&path, &data[..cut]).unwrap();
    let mut store = Store::open(&path, small(50, Some(3 * 4096))).unwrap();
    assert_eq!(collected_seqs(&mut store), [kept, other]);
    // The older segment the collector needs is protected until a new snapshot exists.
    filler(&mut store, 20);
    close(store);
    let mut store = Store::open(&path, small(50, Some(3 * 4096))).unwrap();
    assert_eq!(collected_seqs(&mut store), [kept, other]);
    filler(&mut store, 400);
    close(store);
    let mut store = Store::open(&path, small(50, Some(3 * 4096))).unwrap();
    assert_eq!(collected_seqs(&mut store), [kept, other]);
}

#[test]
fn compressed_segments_are_read_like_plain_ones() {
    let path = temp_store("compressed");
    let options = StoreOptions {
        compress_sealed: true,
        ..small(1000, None)
    };
    let mut store = Store::open(&path, options.clone()).unwrap();
    let kept = add(&mut store, "cp.requested", "{\"id\":\"a\"}");
    filler(&mut store, 300);
    let stats = close(store);
    let files = sealed_files(&path);
    assert!(files.len() >= 5);
    assert!(files.iter().all(|f| f.compressed()), "{files:?}");
    assert_eq!(stats.keeper.compressed_segments, files.len() as u64);
    assert!(
        stats.keeper.compressed_out * 2 < stats.keeper.compressed_in,
        "{stats:?}"
    );
    let mut store = Store::open(&path, options).unwrap();
    assert_eq!(store.ring().len(), 301);
    assert_eq!(collected_seqs(&mut store), [kept]);
}

#[test]
fn reference_rotated_files_load_first_in_time_order() {
    let path = temp_store("reference");
    let dir = path.parent().unwrap();
    std::fs::write(
        dir.join("events_2023-11-14.jsonl"),
        "{\"type\":\"old\",\"n\":1}\n{\"type\":\"old\",\"n\":2}\n",
    )
    .unwrap();
    std::fs::write(
        dir.join("events_1700000000000.jsonl"),
        "{\"type\":\"older\",\"n\":0}\n",
    )
    .unwrap();
    std::fs::write(&path, "{\"type\":\"current\",\"n\":3}\n").unwrap();
    let store = Store::open(&path, small(100, None)).unwrap();
    let types: Vec<String> = (0..store.ring().len())
        .map(|i| String::from_utf8_lossy(&store.ring().get(i).unwrap().json).into_owned())
        .collect();
    assert_eq!(types.len(), 4);
    // 1700000000000 is 2023-11-14T22:13:20Z, before the end of that day's file.
    assert!(
        types[0].contains("older") && types[3].contains("current"),
        "{types:?}"
    );
    assert_eq!(store.recovery().events, 4);
    assert_eq!(store.next_seq(), 5);
}

#[test]
fn bad_settings_name_the_setting() {
    let path = temp_store("settings");
    let cases = [
        (
            StoreOptions {
                max_segment_bytes: 100,
                ..small(10, None)
            },
            "max_segment_bytes",
        ),
        (
            StoreOptions {
                max_disk_bytes: Some(5000),
                ..small(10, None)
            },
            "max_disk_bytes",
        ),
        (
            StoreOptions {
                max_age: Some(-1.0),
                ..small(10, None)
            },
            "max_age",
        ),
    ];
    for (options, name) in cases {
        let message = Store::open(&path, options).err().unwrap().to_string();
        assert!(message.starts_with(name), "{message}");
    }
}

#[test]
fn a_store_on_a_fifo_is_refused() {
    let path = temp_store("fifo");
    let c_path = std::ffi::CString::new(path.to_str().unwrap()).unwrap();
    // SAFETY: mkfifo with a valid NUL-terminated path.
    assert_eq!(unsafe { libc::mkfifo(c_path.as_ptr(), 0o600) }, 0);
    let message = Store::open(&path, small(10, None))
        .err()
        .unwrap()
        .to_string();
    assert!(message.contains("FIFO"), "{message}");
}

#[test]
fn a_fifo_named_like_a_segment_is_refused_not_skipped() {
    let path = temp_store("segment-fifo");
    let fifo = Layout::of(&path).sealed_path(1, false);
    let c_path = std::ffi::CString::new(fifo.to_str().unwrap()).unwrap();
    // SAFETY: mkfifo with a valid NUL-terminated path.
    assert_eq!(unsafe { libc::mkfifo(c_path.as_ptr(), 0o600) }, 0);
    let error = Store::open(&path, small(10, None)).err().unwrap();
    assert!(matches!(error, CoreError::Invalid(_)), "{error}");
    let message = error.to_string();
    assert!(
        message.contains("named like a segment") && message.contains("FIFO"),
        "{message}"
    );
    assert!(segments::store_files(&path).is_err());
}

/// Appends a note whose `timestamp` (in its JSON and its fields) is `timestamp_ms`.
fn add_at(store: &mut Store, timestamp_ms: f64) -> u64 {
    let body = format!(
        "{{\"type\":\"note\",\"timestamp\":{timestamp_ms},\"payload\":{{\"text\":\"{}\"}}",
        "x".repeat(60)
    );
    let fields = EventFields {
        timestamp: timestamp_ms,
        ..fields("note")
    };
    store
        .append(body.as_bytes(), &fields, &KeySpans::default())
        .unwrap()
}

fn now_ms() -> f64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_secs_f64()
        * 1000.0
}

const HOUR_MS: f64 = 3_600_000.0;

/// Sets the modification time of every sealed file of the store to `hours_ago`.
fn touch_sealed(path: &Path, hours_ago: u64) {
    let when = std::time::SystemTime::now() - std::time::Duration::from_secs(hours_ago * 3600);
    for file in sealed_files(path) {
        std::fs::File::options()
            .write(true)
            .open(&file.path)
            .unwrap()
            .set_modified(when)
            .unwrap();
    }
}

fn first_seq_left(path: &Path) -> u64 {
    sealed_files(path)
        .first()
        .and_then(|f| f.first_seq())
        .unwrap_or(u64::MAX)
}

#[test]
fn max_age_goes_by_the_newest_event_while_writing() {
    let path = temp_store("age-live");
    let options = StoreOptions {
        max_age: Some(3600.0),
        ..small(10, None)
    };
    let mut store = Store::open(&path, options).unwrap();
    // Two hours old, then current: each seal runs retention, which drops the old segments as
    // soon as they are sealed, though their files were written a moment ago.
    let old = now_ms() - 2.0 * HOUR_MS;
    let last_old = (0..150).map(|_| add_at(&mut store, old)).last().unwrap();
    let first_new = add_at(&mut store, now_ms());
    for _ in 0..150 {
        add_at(&mut store, now_ms());
    }
    let stats = close(store);
    assert!(stats.keeper.segments_dropped >= 3, "{stats:?}");
    // Every segment whose newest event is old is gone; one whose newest event is current stays
    // (the segment holding the last old events and the first current ones among them).
    assert!(
        first_seq_left(&path) <= first_new,
        "{:?}",
        sealed_files(&path)
    );
    assert!(first_seq_left(&path) > last_old - 150 / 3);
    assert!(!sealed_files(&path).is_empty());
}

#[test]
fn max_age_goes_by_the_newest_event_after_reopening() {
    for compress in [false, true] {
        let path = temp_store(&format!("age-reopen-{compress}"));
        let options = StoreOptions {
            compress_sealed: compress,
            ..small(10, None)
        };
        // Written without max_age: old events first, current ones after.
        let mut store = Store::open(&path, options.clone()).unwrap();
        let old = now_ms() - 2.0 * HOUR_MS;
        for _ in 0..150 {
            add_at(&mut store, old);
        }
        let first_new = add_at(&mut store, now_ms());
        for _ in 0..150 {
            add_at(&mut store, now_ms());
        }
        close(store);
        let before = sealed_files(&path);
        assert!(before.len() >= 6 && before.iter().all(|f| f.compressed() == compress));
        // File times say nothing. Three hours old: past a max_age of 2.5 hours, but no event
        // is that old, so nothing goes. Then just written: under a max_age of one hour, but the
        // old events are two hours old, so their segments go.
        let aged = |hours: f64| StoreOptions {
            max_age: Some(hours * 3600.0),
            ..options.clone()
        };
        touch_sealed(&path, 3);
        let stats = close(Store::open(&path, aged(2.5)).unwrap());
        assert_eq!(stats.keeper.segments_dropped, 0, "compress={compress}");
        assert_eq!(sealed_files(&path).len(), before.len());
        touch_sealed(&path, 0);
        let stats = close(Store::open(&path, aged(1.0)).unwrap());
        let left = sealed_files(&path);
        assert!(stats.keeper.segments_dropped >= 3, "{stats:?}");
        assert_eq!(
            left.len() as u64 + stats.keeper.segments_dropped,
            before.len() as u64
        );
        assert!(
            first_seq_left(&path) <= first_new,
            "compress={compress}: {left:?}"
        );
        // The oldest segment left has current events: nothing more goes at the next opening.
        let stats = close(Store::open(&path, aged(1.0)).unwrap());
        assert_eq!(stats.keeper.segments_dropped, 0);
    }
}

#[test]
fn last_timestamp_reads_the_last_whole_line() {
    let path = temp_store("last-line");
    let line = |n: u64| format!("{{\"type\":\"a\",\"timestamp\":{n},\"seq\":{n}}}\n");
    let mut text: String = (1..=3000).map(line).collect();
    std::fs::write(&path, &text).unwrap();
    assert_eq!(keeper::last_timestamp(&path, false).unwrap(), Some(3000.0));
    // A torn or zeroed tail after the last whole line is not a line.
    text.push_str("{\"type\":\"a\",\"timest");
    std::fs::write(&path, format!("{text}\0\0\0")).unwrap();
    assert_eq!(keeper::last_timestamp(&path, false).unwrap(), Some(3000.0));
    // One line longer than the first read from the end.
    let long = format!(
        "{{\"type\":\"a\",\"timestamp\":7,\"payload\":\"{}\"}}\n",
        "y".repeat(300_000)
    );
    std::fs::write(&path, format!("{}{long}", line(1))).unwrap();
    assert_eq!(keeper::last_timestamp(&path, false).unwrap(), Some(7.0));
    std::fs::write(&path, &long).unwrap();
    assert_eq!(keeper::last_timestamp(&path, false).unwrap(), Some(7.0));
    // No timestamp, or no whole line: nothing to go by.
    std::fs::write(&path, "{\"type\":\"a\"}\n").unwrap();
    assert_eq!(keeper::last_timestamp(&path, false).unwrap(), None);
    std::fs::write(&path, "{\"type\":\"a\"").unwrap();
    assert_eq!(keeper::last_timestamp(&path, false).unwrap(), None);
}
