//! Host bindings of the WIT contract, one module per contract version.
//!
//! `v0_1` binds `sluice:plugin@0.1.0`. The three worlds share the `types` and `host`
//! interfaces, which are generated once (with the transformer world) and reused by the others,
//! so a batch has one Rust type whichever kind of plugin it goes to. A future `0.2` is bound in
//! its own module beside this one, from its frozen copy under `wit/deps/`, and keeps loading.

/// `sluice:plugin@0.1.0`.
pub mod v0_1 {
    /// The transformer world, and with it the shared `types` and `host` interfaces.
    pub mod transformer {
        wasmtime::component::bindgen!({
            path: "../wit",
            world: "sluice:plugin/transformer@0.1.0",
            ownership: Borrowing { duplicate_if_necessary: true },
        });
    }

    /// The sink world.
    pub mod sink {
        wasmtime::component::bindgen!({
            path: "../wit",
            world: "sluice:plugin/sink@0.1.0",
            ownership: Borrowing { duplicate_if_necessary: true },
            with: {
                "sluice:plugin/types": super::transformer::sluice::plugin::types,
                "sluice:plugin/host": super::transformer::sluice::plugin::host,
            },
        });
    }

    /// The receiver world. It returns batches where the other worlds only take them, so it
    /// gets its own (owned) copies of the shared types; the `host` interface is still shared.
    pub mod receiver {
        wasmtime::component::bindgen!({
            path: "../wit",
            world: "sluice:plugin/receiver@0.1.0",
            with: {
                "sluice:plugin/host": super::transformer::sluice::plugin::host,
            },
        });
    }

    /// The aggregator world (user-defined aggregates), sharing `types` and `host` as the
    /// sink does.
    pub mod aggregator {
        wasmtime::component::bindgen!({
            path: "../wit",
            world: "sluice:plugin/aggregator@0.1.0",
            ownership: Borrowing { duplicate_if_necessary: true },
            with: {
                "sluice:plugin/types": super::transformer::sluice::plugin::types,
                "sluice:plugin/host": super::transformer::sluice::plugin::host,
            },
        });
    }

    /// The `migrate` export alone (world `migrating`): bound on the instance of a transformer
    /// that exports it (world `migrating-transformer`), sharing the transformer's types.
    pub mod migrating {
        wasmtime::component::bindgen!({
            path: "../wit",
            world: "sluice:plugin/migrating@0.1.0",
            ownership: Borrowing { duplicate_if_necessary: true },
            with: {
                "sluice:plugin/types": super::transformer::sluice::plugin::types,
            },
        });
    }

    pub use transformer::sluice::plugin::host;
    pub use transformer::sluice::plugin::keyed_state;
    pub use transformer::sluice::plugin::types;
}
