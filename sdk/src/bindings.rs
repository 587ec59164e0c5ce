//! The generated WIT bindings and the glue the `export_*!` macros expand to. Not a public API:
//! plugins use the hand-written types of this crate.

use std::cell::RefCell;

use crate::{
    BadRecord, Batch, BatchBuilder, BatchParts, Column, Context, Error, HeaderColumns, KeyColumn,
    Migrate, Output, Params, Receiver, SelfTest, Sink, Transform,
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
    let input = batch_in(input)?;
    let mut out = Output::for_input(&input);
    plugin
        .transform(&context_in(ctx), &input, &mut out)
        .map_err(error_out)?;
    let parts = out.finish(input).map_err(error_out)?;
    Ok(wit::Output {
        values: column_out(parts.values),
        origins: parts.origins,
        keys: parts.keys.map(keys_out),
        rejected: parts.rejected.into_iter().map(bad_record_out).collect(),
    })
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
