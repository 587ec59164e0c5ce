//! Timestamps in the log: one per record, or runs of equal ones (format version 2), and
//! segments of version 1 still read.

use super::*;

/// One segment holding `frames`, its header saying `version`.
fn segment(version: u32, frames: &[Vec<u8>]) -> Vec<u8> {
    let body: usize = frames.iter().map(Vec::len).sum();
    let mut seg = format::encode_header(frames.len() as u32, body as u64).to_vec();
    seg[8..12].copy_from_slice(&version.to_le_bytes());
    let crc = crc32fast::hash(&seg[0..28]);
    seg[28..32].copy_from_slice(&crc.to_le_bytes());
    for f in frames {
        seg.extend_from_slice(f);
    }
    seg
}

/// `n` records stamped as a receiver stamps them: `run` records a millisecond.
fn stamped(n: usize, run: usize) -> RecordBatch {
    let mut b = RecordBatch::default();
    for i in 0..n {
        b.push(
            None,
            format!("line {i}").as_bytes(),
            Some(1_700_000_000_000 + (i / run) as i64),
        );
    }
    b
}

#[test]
fn blocks_stamped_in_runs_round_trip_and_take_a_fraction_of_the_bytes() {
    for (n, run) in [
        (1, 1),
        (2, 1),
        (3, 2),
        (1000, 1000),
        (1000, 7),
        (1001, 250),
        (4096, 1),
    ] {
        let mut b = stamped(n, run);
        if n > 2 {
            // A clock that steps back keeps its order.
            b.timestamps[n - 2] = 5;
        }
        let frame = format::encode_block(1, 9, &b).unwrap();
        assert_eq!(
            frame.len(),
            format::frame_len(&b),
            "{n} records, runs of {run}"
        );
        let d = format::decode_segment(&segment(format::VERSION, std::slice::from_ref(&frame)))
            .unwrap();
        assert_eq!(d.damage, None);
        assert_eq!(d.blocks[0].records, b, "{n} records, runs of {run}");
        let each = format::frame_len(&b) - b.values.data.len() - 4 * n;
        assert!(
            each <= 8 * n + 40,
            "never larger than one timestamp a record"
        );
    }
    let b = stamped(10_000, 500);
    let without = format::frame_len(&RecordBatch {
        timestamps: Vec::new(),
        ..b.clone()
    });
    assert_eq!(
        format::frame_len(&b) - without,
        4 + 20 * 12,
        "20 runs of 12 bytes"
    );
}

#[test]
fn a_segment_of_version_1_reads_as_before() {
    let b = block(4, 50, true);
    let frame = format::encode_block(2, 100, &b).unwrap();
    let d = format::decode_segment(&segment(1, &[frame])).unwrap();
    assert_eq!(d.damage, None);
    assert_eq!(d.blocks[0].records, b);
}

/// Re-checksums the frame at the start of `frame` after its payload was changed.
fn reseal(frame: &mut [u8]) {
    let crc = crc32fast::hash(&frame[format::FRAME_HEADER_LEN..]);
    frame[4..8].copy_from_slice(&crc.to_le_bytes());
}

#[test]
fn runs_that_do_not_add_up_are_malformed_not_a_panic() {
    let b = stamped(100, 10);
    let frame = format::encode_block(0, 0, &b).unwrap();
    // The runs are the frame's last 4 + 10 * 12 bytes.
    let runs_at = frame.len() - (4 + 10 * 12);
    let count_of = move |run: usize| runs_at + 4 + run * 12;
    type Change = Box<dyn Fn(&mut Vec<u8>)>;
    let cases: Vec<(&str, Change)> = vec![
        // The counts still add up to the records: a run of 0 is refused on its own.
        (
            "a run of 0",
            Box::new(move |f| {
                f[count_of(3)..count_of(3) + 4].fill(0);
                f[count_of(9)] = 20;
            }),
        ),
        // Refused before anything is allocated for it (else 32 GiB of timestamps).
        (
            "a run past the records",
            Box::new(move |f| f[count_of(0)..count_of(0) + 4].fill(0xff)),
        ),
        (
            "runs short of the records",
            Box::new(move |f| f[count_of(9)] = 9),
        ),
        (
            "more runs than records",
            Box::new(move |f| f[runs_at] = 101),
        ),
        (
            "both kinds of timestamps",
            Box::new(|f| f[format::FRAME_HEADER_LEN + 1] |= 2),
        ),
    ];
    for (what, change) in cases {
        let mut f = frame.clone();
        change(&mut f);
        reseal(&mut f);
        let d = format::decode_segment(&segment(format::VERSION, &[f])).unwrap();
        assert!(
            matches!(
                d.damage.as_ref().map(|d| &d.damage),
                Some(Damage::Malformed(_))
            ),
            "{what}: {d:?}"
        );
        assert!(d.blocks.is_empty(), "{what}");
    }
    // Runs in a segment that says version 1 are not read as runs.
    let d = format::decode_segment(&segment(1, &[frame])).unwrap();
    assert!(
        matches!(d.damage.map(|d| d.damage), Some(Damage::Malformed(m)) if m.contains("flags"))
    );
}
