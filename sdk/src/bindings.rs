//! The generated WIT bindings and the glue the `export_*!` macros expand to. Not a public API:
//! plugins use the hand-written types of this crate.

use std::cell::RefCell;

use crate::{
    Aggregator, BadRecord, Batch, BatchBuilder, BatchParts, Column, Context, Error, HeaderColumns,
    KeyColumn, Migrate, Output, Params, Receiver, SelfTest, Sink, Transform,
};

/// The `transformer` world; it also holds the `types` and `host` interfaces the other worlds
/// share.
pub mod transformer {
    wit_bindgen::generate!({
        path: "../wit",
        world: "transformer",
        pub_export_macro: true,
    });
}

/// The `self-tested` world: the `self-test` export alone, joined by `export_transform!(T,
/// self_test)` with the `transformer` world into one component of world `tested-transformer`.
pub mod self_tested {
    wit_bindgen::generate!({
        path: "../wit",
        world: "self-tested",
        pub_export_macro: true,
        with: {
            "sluice:plugin/types@0.1.0": crate::__private::transformer::sluice::plugin::types,
        },
    });
}

/// The `migrating` world: the `migrate` export alone, joined by `export_transform!(T,
/// migrate)` with the `transformer` world into one component of world
/// `migrating-transformer`.
pub mod migrating {
    wit_bindgen::generate!({
        path: "../wit",
        world: "migrating",
        pub_export_macro: true,
        with: {
            "sluice:plugin/types@0.1.0": crate::__private::transformer::sluice::plugin::types,
        },
    });
}

/// The `sink` world.
pub mod sink {
    wit_bindgen::generate!({
        path: "../wit",
        world: "sink",
        pub_export_macro: true,
        with: {
            "sluice:plugin/types@0.1.0": crate::__private::transformer::sluice::plugin::types,
            "sluice:plugin/host@0.1.0": crate::__private::transformer::sluice::plugin::host,
        },
    });
}

/// The `receiver` world.
pub mod receiver {
    wit_bindgen::generate!({
        path: "../wit",
        world: "receiver",
        pub_export_macro: true,
        with: {
            "sluice:plugin/types@0.1.0": crate::__private::transformer::sluice::plugin::types,
            "sluice:plugin/host@0.1.0": crate::__private::transformer::sluice::plugin::host,
        },
    });
}

/// The `aggregator` world.
pub mod aggregator {
    wit_bindgen::generate!({
        path: "../wit",
        world: "aggregator",
        pub_export_macro: true,
        with: {
            "sluice:plugin/types@0.1.0": crate::__private::transformer::sluice::plugin::types,
            "sluice:plugin/host@0.1.0": crate::__private::transformer::sluice::plugin::host,
        },
    });
}

pub use aggregator::exports::sluice::plugin::aggregate::Guest as AggregatorGuest;
pub use aggregator::exports::sluice::plugin::aggregate::Partials;
pub use migrating::exports::sluice::plugin::migrate::Guest as MigrateGuest;
pub use receiver::exports::sluice::plugin::source::Guest as ReceiverGuest;
pub use self_tested::exports::sluice::plugin::self_test::Guest as SelfTestGuest;
pub use sink::exports::sluice::plugin::deliver::Guest as SinkGuest;
pub use transformer::exports::sluice::plugin::transform::Guest as TransformGuest;
pub use transformer::sluice::plugin::host;
pub use transformer::sluice::plugin::keyed_state;
pub use transformer::sluice::plugin::types as wit;

/// Where a macro-exported plugin keeps its instance's state (the guest is single-threaded).
pub type State<T> = RefCell<Option<T>>;

fn column_in(column: wit::BytesColumn) -> Column {
    Column {
        data: column.data,
        ends: column.ends,
    }
}

fn column_out(column: Column) -> wit::BytesColumn {
    wit::BytesColumn {
        data: column.data,
        ends: column.ends,
    }
}

fn keys_out(keys: KeyColumn) -> wit::Keys {
    wit::Keys {
        column: column_out(keys.column),
        present: keys.present,
    }
}

fn batch_in(batch: wit::Batch) -> Result<Batch, wit::Error> {
    Batch::from_parts(BatchParts {
        values: column_in(batch.values),
        keys: batch.keys.map(|k| KeyColumn {
            column: column_in(k.column),
            present: k.present,
        }),
        timestamps: batch.timestamps,
        headers: batch.headers.map(|h| HeaderColumns {
            record_ends: h.record_ends,
            names: column_in(h.names),
            values: column_in(h.values),
        }),
    })
    .map_err(|e| wit::Error::Fatal(format!("the host sent a {e}")))
}

fn batch_out(batch: Batch) -> wit::Batch {
    let parts = batch.into_parts();
    wit::Batch {
        values: column_out(parts.values),
        keys: parts.keys.map(keys_out),
        timestamps: parts.timestamps,
        headers: parts.headers.map(|h| wit::Headers {
            record_ends: h.record_ends,
            names: column_out(h.names),
            values: column_out(h.values),
        }),
    }
}

fn bad_record_out(bad: BadRecord) -> wit::BadRecord {
    wit::BadRecord {
        index: bad.index,
        reason: bad.reason,
    }
}

fn error_out(error: Error) -> wit::Error {
    match error {
        Error::Retryable(m) => wit::Error::Retryable(m),
        Error::Fatal(m) => wit::Error::Fatal(m),
        Error::BadRecord(bad) => wit::Error::BadRecord(bad_record_out(bad)),
    }
}

fn context_in(ctx: wit::BatchContext) -> Context {
    Context::new(ctx.stream, ctx.partition, ctx.batch_id, ctx.batch_time_ms).with_part(ctx.part)
}

fn not_initialised() -> wit::Error {
    wit::Error::Fatal("the plugin was called before `init` succeeded".to_string())
}

fn init<T>(
    state: &State<T>,
    params: wit::Params,
    init: impl FnOnce(&Params) -> Result<T, String>,
) -> Result<(), String> {
    let plugin = init(&Params::new(params))?;
    *state.borrow_mut() = Some(plugin);
    Ok(())
}

/// `transform.init`.
pub fn transform_init<T: Transform>(state: &State<T>, params: wit::Params) -> Result<(), String> {
    init(state, params, T::init)
}

/// `transform.transform`.
pub fn transform<T: Transform>(
    state: &State<T>,
    ctx: wit::BatchContext,
    input: wit::Batch,
) -> Result<wit::Output, wit::Error> {
    let mut state = state.borrow_mut();
    let plugin = state.as_mut().ok_or_else(not_initialised)?;
    let ctx = context_in(ctx);
    let mut input = input;
    if plugin
        .map_in_place(&ctx, &mut input.values.data)
        .map_err(error_out)?
    {
        // The host's batch is valid, so its offsets describe the rewritten buffer too; the
        // lowered buffers go back without a copy, and the host sees its own offsets again.
        let out = wit::Output {
            values: input.values,
            origins: Vec::new(),
            keys: None,
            rejected: Vec::new(),
        };
        crate::lend::output_out();
        return Ok(out);
    }
    let input = batch_in(input)?;
    let mut out = Output::for_input(&input);
    plugin
        .transform(&ctx, &input, &mut out)
        .map_err(error_out)?;
    let parts = out.finish(input).map_err(error_out)?;
    let out = wit::Output {
        values: column_out(parts.values),
        origins: parts.origins,
        keys: parts.keys.map(keys_out),
        rejected: parts.rejected.into_iter().map(bad_record_out).collect(),
    };
    crate::lend::output_out();
    Ok(out)
}

/// `migrate.migrate`, on the instance `init` made.
pub fn migrate<T: Migrate>(
    state: &State<T>,
    from_version: String,
    input: wit::Batch,
) -> Result<wit::Output, wit::Error> {
    let mut state = state.borrow_mut();
    let plugin = state.as_mut().ok_or_else(not_initialised)?;
    let input = batch_in(input)?;
    let mut out = Output::for_input(&input);
    plugin
        .migrate(&from_version, &input, &mut out)
        .map_err(error_out)?;
    let parts = out.finish(input).map_err(error_out)?;
    Ok(wit::Output {
        values: column_out(parts.values),
        origins: parts.origins,
        keys: None,
        rejected: parts.rejected.into_iter().map(bad_record_out).collect(),
    })
}

/// A column of `values`, for the keyed-state imports.
pub fn column_of<V: AsRef<[u8]>>(values: impl IntoIterator<Item = V>) -> wit::BytesColumn {
    let mut data = Vec::new();
    let mut ends = Vec::new();
    for v in values {
        data.extend_from_slice(v.as_ref());
        ends.push(data.len() as u32);
    }
    wit::BytesColumn { data, ends }
}

/// `self-test.run`, on the instance `init` made.
pub fn self_test<T: SelfTest>(state: &State<T>, params: wit::Params) -> Result<(), String> {
    let mut state = state.borrow_mut();
    let plugin = state
        .as_mut()
        .ok_or("the self-test was called before `init` succeeded")?;
    plugin.self_test(&Params::new(params))
}

/// `deliver.init`.
pub fn sink_init<T: Sink>(state: &State<T>, params: wit::Params) -> Result<(), String> {
    init(state, params, T::init)
}

/// `deliver.write`.
pub fn sink_write<T: Sink>(
    state: &State<T>,
    ctx: wit::BatchContext,
    input: wit::Batch,
) -> Result<(), wit::Error> {
    let mut state = state.borrow_mut();
    let plugin = state.as_mut().ok_or_else(not_initialised)?;
    let input = batch_in(input)?;
    plugin.write(&context_in(ctx), &input).map_err(error_out)
}

/// `deliver.commit`.
pub fn sink_commit<T: Sink>(
    state: &State<T>,
    stream: String,
    batch_id: u64,
) -> Result<(), wit::Error> {
    let mut state = state.borrow_mut();
    let plugin = state.as_mut().ok_or_else(not_initialised)?;
    plugin.commit(&stream, batch_id).map_err(error_out)
}

/// `source.init`.
pub fn receiver_init<T: Receiver>(state: &State<T>, params: wit::Params) -> Result<(), String> {
    init(state, params, T::init)
}

/// `source.partitions`. An instance that was not initialised has none.
pub fn receiver_partitions<T: Receiver>(state: &State<T>) -> u32 {
    state.borrow().as_ref().map_or(0, T::partitions)
}

/// `source.open`.
pub fn receiver_open<T: Receiver>(
    state: &State<T>,
    partition: u32,
    position: Option<String>,
) -> Result<(), wit::Error> {
    let mut state = state.borrow_mut();
    let plugin = state.as_mut().ok_or_else(not_initialised)?;
    plugin.open(partition, position).map_err(error_out)
}

/// `source.poll`.
pub fn receiver_poll<T: Receiver>(
    state: &State<T>,
    partition: u32,
    max_records: u32,
    max_bytes: u32,
) -> Result<receiver::exports::sluice::plugin::source::Polled, wit::Error> {
    let mut state = state.borrow_mut();
    let plugin = state.as_mut().ok_or_else(not_initialised)?;
    let mut out = BatchBuilder::new();
    let poll = plugin
        .poll(partition, max_records, max_bytes, &mut out)
        .map_err(error_out)?;
    Ok(receiver::exports::sluice::plugin::source::Polled {
        records: batch_out(out.finish()),
        position: poll.position,
        end: poll.end,
    })
}

/// The accumulators' frame: a tag byte before the plugin's encoding, so that an accumulator
/// is never zero bytes long (zero bytes stand for "no records" in the contract).
const ACC_TAG: u8 = 1;

fn acc_out<T: Aggregator>(plugin: &T, acc: &T::Acc, out: &mut Column, buf: &mut Vec<u8>) {
    buf.clear();
    buf.push(ACC_TAG);
    plugin.encode(acc, buf);
    out.push(buf);
}

fn acc_in<T: Aggregator>(plugin: &T, bytes: &[u8]) -> Result<T::Acc, wit::Error> {
    match bytes.split_first() {
        Some((&ACC_TAG, rest)) => plugin
            .decode(rest)
            .map_err(|e| wit::Error::Fatal(format!("an accumulator cannot be read: {e}"))),
        _ => Err(wit::Error::Fatal(
            "an accumulator the host sent was not written by this SDK".to_string(),
        )),
    }
}

fn with_plugin<T, R>(
    state: &State<T>,
    f: impl FnOnce(&T) -> Result<R, wit::Error>,
) -> Result<R, wit::Error> {
    let state = state.borrow();
    f(state.as_ref().ok_or_else(not_initialised)?)
}

/// `aggregate.init`.
pub fn aggregate_init<T: Aggregator>(state: &State<T>, params: wit::Params) -> Result<(), String> {
    init(state, params, T::init)
}

/// `aggregate.can-retract`. An instance that was not initialised cannot.
pub fn aggregate_can_retract<T: Aggregator>(state: &State<T>) -> bool {
    state.borrow().as_ref().is_some_and(T::can_retract)
}

/// `aggregate.add`: groups the records by key (a map-side combine), one accumulator per key
/// that kept at least one record.
pub fn aggregate_add<T: Aggregator>(
    state: &State<T>,
    _ctx: wit::BatchContext,
    input: wit::Batch,
) -> Result<Partials, wit::Error> {
    with_plugin(state, |plugin| {
        let input = batch_in(input)?;
        let mut index: std::collections::HashMap<&[u8], usize> = Default::default();
        let mut accs: Vec<(&[u8], T::Acc, bool)> = Vec::new();
        let mut rejected = Vec::new();
        for record in input.records() {
            let key = record.key().unwrap_or_default();
            let i = *index.entry(key).or_insert_with(|| {
                accs.push((key, T::Acc::default(), false));
                accs.len() - 1
            });
            match plugin.add(&mut accs[i].1, &record) {
                Ok(()) => accs[i].2 = true,
                Err(reason) => rejected.push(wit::BadRecord {
                    index: record.index(),
                    reason,
                }),
            }
        }
        let (mut keys, mut out, mut buf) = (Column::new(), Column::new(), Vec::new());
        for (key, acc, _) in accs.iter().filter(|a| a.2) {
            keys.push(key);
            acc_out(plugin, acc, &mut out, &mut buf);
        }
        Ok(Partials {
            keys: column_out(keys),
            accs: column_out(out),
            rejected,
        })
    })
}

/// Row `i` of each column, checked to hold as many rows as `keys`.
fn rows<'a>(keys: &'a Column, cols: [&'a Column; 2]) -> Result<usize, wit::Error> {
    let n = keys.len();
    if cols.iter().any(|c| c.len() != n) {
        return Err(wit::Error::Fatal(format!(
            "the host sent columns of {} and {} rows for {n} keys",
            cols[0].len(),
            cols[1].len()
        )));
    }
    Ok(n)
}

/// `aggregate.merge` and (with `retract`) `aggregate.retract`: row by row.
pub fn aggregate_pairwise<T: Aggregator>(
    state: &State<T>,
    retract: bool,
    keys: wit::BytesColumn,
    left: wit::BytesColumn,
    right: wit::BytesColumn,
) -> Result<wit::BytesColumn, wit::Error> {
    with_plugin(state, |plugin| {
        let (keys, left, right) = (column_in(keys), column_in(left), column_in(right));
        let n = rows(&keys, [&left, &right])?;
        let (mut out, mut buf) = (Column::new(), Vec::new());
        for i in 0..n {
            let mut acc = acc_in(plugin, left.get(i).unwrap_or_default())?;
            let other = acc_in(plugin, right.get(i).unwrap_or_default())?;
            if !retract {
                plugin.merge(&mut acc, &other);
            } else if !plugin.retract(&mut acc, &other).map_err(error_out)? {
                out.push(&[]);
                continue;
            }
            acc_out(plugin, &acc, &mut out, &mut buf);
        }
        Ok(column_out(out))
    })
}

/// `aggregate.finish`.
pub fn aggregate_finish<T: Aggregator>(
    state: &State<T>,
    keys: wit::BytesColumn,
    accs: wit::BytesColumn,
) -> Result<wit::BytesColumn, wit::Error> {
    with_plugin(state, |plugin| {
        let (keys, accs) = (column_in(keys), column_in(accs));
        let n = rows(&keys, [&accs, &accs])?;
        let mut out = Column::new();
        for i in 0..n {
            let acc = acc_in(plugin, accs.get(i).unwrap_or_default())?;
            let value = plugin
                .finish(keys.get(i).unwrap_or_default(), &acc)
                .map_err(error_out)?;
            out.push(&value);
        }
        Ok(column_out(out))
    })
}
