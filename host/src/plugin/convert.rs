//! Conversions between the host's [`RecordBatch`] and the WIT types of a call, shared by every
//! stage: the input batch and its context lowered for the guest, and the guest's output and
//! errors lifted back.

use super::*;

pub(crate) fn col(c: &BytesColumn) -> v0_1::types::BytesColumnParam<'_> {
    v0_1::types::BytesColumnParam {
        data: &c.data,
        ends: &c.ends,
    }
}

/// The batch as the WIT sees it: borrowed, so lowering copies straight from our buffers.
/// `ctx` as the WIT `batch-context` every per-partition call takes.
pub(crate) fn wit_context(ctx: &CallContext) -> v0_1::types::BatchContext<'_> {
    v0_1::types::BatchContext {
        stream: &ctx.stream,
        partition: ctx.partition,
        batch_id: ctx.batch_id,
        batch_time_ms: ctx.batch_time_ms,
        part: ctx.part,
    }
}

pub(crate) fn to_wit(b: &RecordBatch) -> v0_1::types::Batch<'_> {
    v0_1::types::Batch {
        values: col(&b.values),
        keys: b.keys.as_ref().map(|k| v0_1::types::KeysParam {
            column: col(&k.column),
            present: &k.present,
        }),
        timestamps: &b.timestamps,
        headers: b.headers.as_ref().map(|h| v0_1::types::Headers {
            record_ends: &h.record_ends,
            names: col(&h.names),
            values: col(&h.values),
        }),
    }
}

pub(crate) fn guest_failure(e: v0_1::types::Error) -> Failure {
    match e {
        v0_1::types::Error::Retryable(m) => Failure::Retryable(m),
        v0_1::types::Error::Fatal(m) => Failure::Fatal(m),
        v0_1::types::Error::BadRecord(b) => Failure::BadRecord {
            index: b.index,
            reason: b.reason,
        },
    }
}

pub(crate) fn receiver_failure(e: v0_1::receiver::sluice::plugin::types::Error) -> Failure {
    use v0_1::receiver::sluice::plugin::types::Error as E;
    match e {
        E::Retryable(m) => Failure::Retryable(m),
        E::Fatal(m) => Failure::Fatal(m),
        E::BadRecord(b) => Failure::BadRecord {
            index: b.index,
            reason: b.reason,
        },
    }
}

/// A transformation's output as the guest returned it, whichever way it was lifted (the fast
/// lift of `transform` in [`super::lift`], or the generated types of `migrate`).
#[derive(Debug)]
pub(crate) struct GuestOutput {
    pub values: BytesColumn,
    pub origins: Vec<u32>,
    pub keys: Option<Keys>,
    pub rejected: Vec<(u32, String)>,
}

fn keys_in(k: v0_1::types::KeysResult) -> Keys {
    Keys {
        column: BytesColumn {
            data: k.column.data.into(),
            ends: k.column.ends,
        },
        present: k.present,
    }
}

impl From<v0_1::types::Output> for GuestOutput {
    fn from(out: v0_1::types::Output) -> Self {
        GuestOutput {
            values: BytesColumn {
                data: out.values.data.into(),
                ends: out.values.ends,
            },
            origins: out.origins,
            keys: out.keys.map(keys_in),
            rejected: out
                .rejected
                .into_iter()
                .map(|r| (r.index, r.reason))
                .collect(),
        }
    }
}

impl GuestOutput {
    /// `transform`'s output lifted fast ([`super::lift`]); `lend` makes the values' bytes
    /// when the lift left them in place (at a host address, with a length).
    pub(crate) fn lifted(
        out: super::lift::Output,
        lend: impl FnOnce(usize, usize) -> Data,
    ) -> Self {
        let data = match out.values.data {
            super::lift::Bytes::Copied(v) => v.into(),
            super::lift::Bytes::InPlace { addr, len } => lend(addr, len),
        };
        GuestOutput {
            values: BytesColumn {
                data,
                ends: out.values.ends.0,
            },
            origins: out.origins.0,
            keys: out.keys.map(keys_in),
            rejected: out
                .rejected
                .into_iter()
                .map(|r| (r.index, r.reason))
                .collect(),
        }
    }
}

/// Whether `values` has exactly `input`'s shape: the same end offsets and as many bytes. The
/// input batch is valid, so such a column is too and needs no check of its own (the common
/// case of a map that keeps every value's length, such as `uppercase` or `identity`).
pub(crate) fn same_shape(values: &BytesColumn, input: &BytesColumn) -> bool {
    values.data.len() == input.data.len() && values.ends == input.ends
}

/// Builds the host's view of a transformation's output, checking it against the contract and
/// inheriting timestamps, headers and keys through `origins`.
pub(crate) fn from_wit_output(
    input: &RecordBatch,
    out: impl Into<GuestOutput>,
) -> Result<TransformOutput, String> {
    let out = out.into();
    let values = out.values;
    if !same_shape(&values, &input.values) {
        values.validate("output values")?;
    }
    let n = values.len();
    let origins = out.origins;
    if origins.is_empty() {
        // Empty origins mean a map, or (with no values at all) a filter that kept nothing.
        if n != input.len() && n != 0 {
            return Err(format!(
                "returned {n} records for {} input records with no origins; origins may be empty only for a map",
                input.len()
            ));
        }
    } else {
        if origins.len() != n {
            return Err(format!("{} origins for {n} output records", origins.len()));
        }
        if let Some(bad) = origins.iter().find(|&&o| o as usize >= input.len()) {
            return Err(format!(
                "origin {bad} is out of range for {} input records",
                input.len()
            ));
        }
    }
    for (index, _) in &out.rejected {
        if *index as usize >= input.len() {
            return Err(format!(
                "rejected record {} is out of range for {} input records",
                index,
                input.len()
            ));
        }
    }
    let origin = |i: usize| {
        if origins.is_empty() {
            i
        } else {
            origins[i] as usize
        }
    };
    let timestamps = if input.timestamps.is_empty() {
        Vec::new()
    } else if origins.is_empty() {
        input.timestamps.clone()
    } else {
        origins
            .iter()
            .map(|&o| input.timestamps[o as usize])
            .collect()
    };
    let keys = match out.keys {
        Some(keys) => {
            keys.column.validate("output keys")?;
            if keys.column.len() != n || keys.present.len() < n.div_ceil(8) {
                return Err(format!(
                    "returned {} keys and a {}-byte presence bitmap for {n} records",
                    keys.column.len(),
                    keys.present.len()
                ));
            }
            Some(keys)
        }
        None => input.keys.as_ref().map(|_| {
            let mut keys = Keys::default();
            for i in 0..n {
                keys.push(input.key(origin(i)));
            }
            keys
        }),
    };
    let headers = input.headers.as_ref().map(|h| {
        let mut out = Headers::default();
        for i in 0..n {
            let o = origin(i);
            let start = if o == 0 {
                0
            } else {
                h.record_ends[o - 1] as usize
            };
            let end = h.record_ends[o] as usize;
            out.names.extend_from(&h.names, start..end);
            out.values.extend_from(&h.values, start..end);
            out.record_ends.push(out.names.len() as u32);
        }
        out
    });
    Ok(TransformOutput {
        batch: RecordBatch {
            values,
            keys,
            timestamps,
            headers,
        },
        origins,
        rejected: out.rejected,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn input() -> RecordBatch {
        let mut b = RecordBatch::default();
        for (i, v) in ["ab", "", "cde"].iter().enumerate() {
            b.push(None, v.as_bytes(), Some(10 + i as i64));
        }
        b
    }

    fn map(data: &[u8], ends: &[u32]) -> GuestOutput {
        GuestOutput {
            values: BytesColumn {
                data: data.to_vec().into(),
                ends: ends.to_vec(),
            },
            origins: Vec::new(),
            keys: None,
            rejected: Vec::new(),
        }
    }

    #[test]
    fn a_map_with_the_input_shape_is_taken_as_it_is_with_timestamps_inherited() {
        let input = input();
        let out = from_wit_output(&input, map(b"ABCDE", &[2, 2, 5])).unwrap();
        assert_eq!(out.batch.value(2), b"CDE");
        assert_eq!(out.batch.timestamps, input.timestamps);
        assert!(out.origins.is_empty());
    }

    #[test]
    fn the_input_offsets_over_a_shorter_buffer_are_a_contract_error_not_a_crash() {
        let input = input();
        assert!(!same_shape(&map(b"ABCD", &[2, 2, 5]).values, &input.values));
        let err = from_wit_output(&input, map(b"ABCD", &[2, 2, 5])).unwrap_err();
        assert!(err.contains("the last end offset is 5"), "{err}");
    }

    #[test]
    fn a_map_that_changes_lengths_is_checked_and_kept() {
        let input = input();
        let out = from_wit_output(&input, map(b"xyz", &[1, 2, 3])).unwrap();
        assert_eq!(out.batch.value(1), b"y");
        let err = from_wit_output(&input, map(b"xyz", &[2, 1, 3])).unwrap_err();
        assert!(err.contains("is below the one before"), "{err}");
    }
}
