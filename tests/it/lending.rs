//! A transformation's output read where the guest left it (lent), not copied out: exact
//! while held, whatever the guest's heap looks like, and its instance back in the pool once
//! the batch lets go.

use std::collections::BTreeMap;

use sluice::batch::RecordBatch;
use sluice::plugin::limits::Grants;
use sluice_tests::*;

use crate::plugins::ctx;

/// `n` records of 100 bytes of mixed-case text, different for each `seed`.
fn text_batch(n: usize, seed: u8) -> RecordBatch {
    let mut b = RecordBatch::default();
    let mut value = [0u8; 100];
    for i in 0..n {
        for (j, v) in value.iter_mut().enumerate() {
            *v = b"aBcD eFgH,iJ"[(i + j + seed as usize) % 12];
        }
        b.push(None, &value, Some(i as i64));
    }
    b
}

#[test]
fn a_lent_output_stays_exact_while_the_stage_serves_other_calls_and_its_instance_comes_back() {
    let tmp = tempfile::tempdir().unwrap();
    let rt = runtime_with_cache(tmp.path());
    let p = rt
        .load_file(&plugins_dir().join("uppercase.wasm"), &Grants::default())
        .unwrap();
    assert!(p.info().lends_output, "the SDK's transformers lend");
    let stage = p.transformer(&BTreeMap::new()).unwrap();
    // Six 2 MB outputs held at once: the first ones lent (their instances kept out of the
    // pool), the rest copied once the stage's lending bound is reached.
    let inputs: Vec<RecordBatch> = (0..6).map(|s| text_batch(20_000, s)).collect();
    let held: Vec<_> = inputs
        .iter()
        .map(|b| stage.transform(&ctx(0, 1), b).unwrap())
        .collect();
    let lent = held
        .iter()
        .filter(|o| o.batch.values.data.is_lent())
        .count();
    assert!(held[0].batch.values.data.is_lent(), "a 2 MB output is lent");
    assert!(
        lent < held.len(),
        "lending is bounded: {lent} of {} lent",
        held.len()
    );
    // Other calls meanwhile, on other instances, with other data.
    for s in 10..30 {
        let other = text_batch(20_000, s);
        let out = stage.transform(&ctx(1, 2), &other).unwrap();
        assert_eq!(out.batch.value(7), &other.value(7).to_ascii_uppercase()[..]);
    }
    for (out, input) in held.iter().zip(&inputs) {
        assert_eq!(
            &out.batch.values.data[..],
            &input.values.data.to_ascii_uppercase()[..],
            "a held output is byte for byte its input upper-cased"
        );
        assert_eq!(out.batch.values.ends, input.values.ends);
        assert_eq!(out.batch.timestamps, input.timestamps);
    }
    // Let go, the lent instances go back to the pool: no new instance for the next calls.
    drop(held);
    let made = stage.0.instances_made();
    for s in 0..50 {
        let out = stage.transform(&ctx(2, 3), &inputs[s % 6]).unwrap();
        assert!(out.batch.values.data.is_lent());
    }
    assert_eq!(
        stage.0.instances_made(),
        made,
        "the calls reused pooled instances"
    );
    // A small output is copied: holding an instance for it would cost more.
    let small = stage.transform(&ctx(0, 4), &text_batch(100, 1)).unwrap();
    assert!(!small.batch.values.data.is_lent());
    assert_eq!(
        small.batch.value(3),
        &text_batch(100, 1).value(3).to_ascii_uppercase()[..]
    );
}

#[test]
fn a_filters_lent_output_built_in_the_guest_stays_exact_after_its_post_return() {
    // `grep` builds its output in a buffer of its own (not the input's, as `uppercase` does),
    // freed by the component's `post-return` right after the call: the SDK's allocator must
    // keep it as it was until the next call.
    let tmp = tempfile::tempdir().unwrap();
    let rt = runtime_with_cache(tmp.path());
    let p = rt
        .load_file(&plugins_dir().join("grep.wasm"), &Grants::default())
        .unwrap();
    let stage = p.transformer(&params(&[("pattern", "D eF")])).unwrap();
    let inputs: Vec<RecordBatch> = (0..3).map(|s| text_batch(20_000, s)).collect();
    let held: Vec<_> = inputs
        .iter()
        .map(|b| stage.transform(&ctx(0, 1), b).unwrap())
        .collect();
    for s in 5..15 {
        stage.transform(&ctx(1, 2), &text_batch(20_000, s)).unwrap();
    }
    for (out, input) in held.iter().zip(&inputs) {
        assert!(out.batch.values.data.is_lent());
        let expected: Vec<&[u8]> = (0..input.len())
            .map(|i| input.value(i))
            .filter(|v| v.windows(4).any(|w| w == b"D eF"))
            .collect();
        assert!(expected.len() > 10_000, "most records match");
        assert_eq!(out.batch.len(), expected.len());
        for (i, v) in expected.iter().enumerate() {
            assert_eq!(out.batch.value(i), *v, "record {i} of the output");
        }
    }
}

#[test]
fn a_lent_output_stays_exact_when_the_guest_keeps_allocations_on_both_sides_of_it() {
    // The fixture keeps small allocations alive across calls just before and just after the
    // output it builds, so when `post-return` frees the output's values buffer, the guest's
    // allocator cannot merge it into free space around it: it files it in a free list and
    // writes the list's links into its first bytes, unless the SDK holds the free back until
    // the next call. Batches of many sizes, so the buffers' ends fall everywhere too.
    let tmp = tempfile::tempdir().unwrap();
    let rt = runtime_with_cache(tmp.path());
    let p = rt
        .load_file(
            &fixtures_dir().join("keeps-allocations.wasm"),
            &Grants::default(),
        )
        .unwrap();
    assert!(p.info().lends_output);
    let stage = p.transformer(&BTreeMap::new()).unwrap();
    let mut lent = 0;
    for call in 0..40usize {
        let n = 700 + call * 337 + (call % 7) * 13;
        let input = text_batch(n, call as u8);
        let out = stage.transform(&ctx(0, call as u64), &input).unwrap();
        lent += usize::from(out.batch.values.data.is_lent());
        assert_eq!(out.batch.len(), n);
        assert_eq!(out.batch.values.ends, input.values.ends, "call {call}");
        if out.batch.values.data[..] != input.values.data[..] {
            let at = (out.batch.values.data.iter())
                .zip(input.values.data.iter())
                .position(|(a, b)| a != b);
            panic!("call {call} ({n} records): the output differs from its input at byte {at:?}");
        }
    }
    assert!(
        lent >= 35,
        "the outputs of 64 KiB or more were lent: {lent} of 40"
    );
}
