//! Tests of [`super::SpillMap`]: every operation across the memory–disk boundary, against a
//! plain map.

use std::cell::Cell;
use std::collections::BTreeMap;

use super::*;

thread_local! {
    /// Makes `hash` return one of 8 values, so that spilled keys collide.
    pub(super) static NARROW_HASH: Cell<bool> = const { Cell::new(false) };
}

fn dir(name: &str) -> (tempfile::TempDir, PathBuf) {
    let tmp = tempfile::tempdir().unwrap();
    let dir = tmp.path().join("proc").join(name);
    (tmp, dir)
}

fn value(i: u64, round: u64) -> Vec<u8> {
    format!("value-{i}-{round}-{}", "x".repeat((i % 40) as usize)).into_bytes()
}

fn all(map: &mut SpillMap<Vec<u8>>) -> BTreeMap<Vec<u8>, Vec<u8>> {
    let mut out = BTreeMap::new();
    map.for_each(|k, v| {
        assert!(
            out.insert(k.to_vec(), v.clone()).is_none(),
            "{k:?} seen twice"
        );
    })
    .unwrap();
    out
}

#[test]
fn entries_past_the_budget_spill_and_read_back_exact() {
    let (_tmp, dir) = dir("step-0");
    let mut map = SpillMap::new("test", 16 << 10, dir.clone());
    for i in 0..2000u64 {
        map.insert(format!("key-{i}").into_bytes().into(), value(i, 0))
            .unwrap();
    }
    assert_eq!(map.len(), 2000);
    assert!(map.disk_len() > 1000, "most keys spilled: {map:?}");
    assert!(map.bytes() <= map.budget(), "{map:?}");
    assert!(dir.join("spill-0.dat").exists());
    for i in (0..2000u64).rev() {
        let key = format!("key-{i}").into_bytes();
        assert_eq!(map.get(&key).unwrap(), Some(&value(i, 0)), "key {i}");
        assert!(map.bytes() <= map.budget());
    }
    assert_eq!(map.get(b"key-2000").unwrap(), None);
    assert_eq!(map.len(), 2000, "reading back moves, never copies");
    assert_eq!(all(&mut map).len(), 2000);
    drop(map);
    assert!(!dir.exists(), "the spill directory goes with the map");
    assert!(
        !dir.parent().unwrap().exists(),
        "and the process's, once empty"
    );
}

#[test]
fn any_mix_of_operations_matches_a_plain_map_across_memory_and_disk() {
    for narrow in [false, true] {
        NARROW_HASH.set(narrow);
        let (_tmp, dir) = dir("step-1");
        let mut map = SpillMap::new("test", 8 << 10, dir);
        map.min_garbage = 4 << 10;
        let mut model = BTreeMap::new();
        let mut seed = 0x2545_f491_4f6c_dd1du64;
        for round in 0..20_000u64 {
            seed ^= seed << 13;
            seed ^= seed >> 7;
            seed ^= seed << 17;
            let i = seed % 700;
            let key = format!("k{i}").into_bytes();
            match seed >> 60 {
                0..=5 => {
                    map.insert(key.clone().into(), value(i, round)).unwrap();
                    model.insert(key, value(i, round));
                }
                6..=8 => {
                    let before = map
                        .upsert(&key, |b| {
                            let mut v = b.cloned().unwrap_or_default();
                            v.push(b'+');
                            v
                        })
                        .unwrap();
                    assert_eq!(before.as_ref(), model.get(&key), "upsert {i}");
                    model.entry(key).or_default().push(b'+');
                }
                9..=11 => assert_eq!(map.remove(&key).unwrap(), model.remove(&key)),
                12 => assert_eq!(map.contains(&key).unwrap(), model.contains_key(&key)),
                13 => map.advance(),
                _ => assert_eq!(map.get(&key).unwrap(), model.get(&key), "get {i}"),
            }
            assert_eq!(map.len(), model.len());
            assert!(map.bytes() <= map.budget());
        }
        assert!(map.disk_len() > 0, "some keys are on disk at the end");
        let disk = map.disk.as_ref().unwrap();
        assert!(disk.number > 0, "the file was compacted at least once");
        if narrow {
            assert!(!disk.collided.is_empty(), "keys collided");
        }
        assert_eq!(all(&mut map), model);
        map.clear();
        assert_eq!((map.len(), all(&mut map).len()), (0, 0));
    }
    NARROW_HASH.set(false);
}

#[test]
fn keys_touched_in_this_generation_stay_in_memory_while_older_ones_spill() {
    let (_tmp, dir) = dir("step-2");
    let mut map = SpillMap::new("test", 64 << 10, dir);
    for i in 0..200u64 {
        map.insert(format!("hot-{i}").into_bytes().into(), value(i, 0))
            .unwrap();
    }
    map.advance();
    for i in 0..3000u64 {
        map.insert(format!("cold-{i}").into_bytes().into(), value(i, 0))
            .unwrap();
        if i % 100 == 0 {
            // The hot keys are touched in every generation; the cold ones once.
            for h in 0..200u64 {
                map.get(format!("hot-{h}").as_bytes()).unwrap();
            }
            map.advance();
        }
    }
    let hot_in_memory = (0..200u64)
        .filter(|h| map.mem.contains_key(format!("hot-{h}").as_bytes()))
        .count();
    assert_eq!(hot_in_memory, 200, "{map:?}");
    assert!(map.disk_len() > 2000, "{map:?}");
}

#[test]
fn a_damaged_spill_file_or_an_unusable_directory_is_an_error_naming_it() {
    let (tmp, dir) = dir("step-3");
    let mut map = SpillMap::new("test", 4 << 10, dir.clone());
    for i in 0..500u64 {
        map.insert(format!("key-{i}").into_bytes().into(), value(i, 0))
            .unwrap();
    }
    let file = dir.join("spill-0.dat");
    let mut bytes = std::fs::read(&file).unwrap();
    for b in bytes.iter_mut() {
        *b ^= 0x55;
    }
    std::fs::write(&file, &bytes).unwrap();
    let e = (0..500u64)
        .find_map(|i| map.get(format!("key-{i}").as_bytes()).err())
        .expect("a damaged record is not read as state");
    assert_eq!(e.file, file);
    assert!(e.to_string().contains("spill-0.dat"), "{e}");

    // A directory that cannot be made (a file is in the way).
    let blocked = tmp.path().join("a-file");
    std::fs::write(&blocked, b"").unwrap();
    let mut map = SpillMap::new("test", 1 << 10, blocked.join("step-0"));
    let e = (0..100u64)
        .find_map(|i| {
            map.insert(format!("key-{i}").into_bytes().into(), value(i, 0))
                .err()
        })
        .expect("no silent loss");
    assert!(e.to_string().contains("a-file/step-0"), "{e}");
}

#[test]
fn stale_spill_directories_of_dead_processes_are_cleared() {
    let tmp = tempfile::tempdir().unwrap();
    let mine = step_dir(Some(tmp.path()), "p/1", 0);
    std::fs::create_dir_all(&mine).unwrap();
    // No process has pid 4_000_000_000 (Linux caps pids far lower).
    let dead = tmp.path().join("sluice-spill-p-1-4000000000");
    let other = tmp.path().join("sluice-spill-q-4000000000");
    std::fs::create_dir_all(dead.join("step-0")).unwrap();
    std::fs::create_dir_all(&other).unwrap();
    clear_stale(Some(tmp.path()), "p/1");
    assert!(!dead.exists() && mine.exists() && other.exists());
}
