//! The macros that export a plugin type as a component world.

/// Exports a [`Transform`](crate::Transform) type as this component's `transformer` world.
///
/// Call it once in the plugin crate's `lib.rs`. Each instance keeps one value of the type,
/// made by [`Transform::init`](crate::Transform::init). The exports exist only when building
/// for WebAssembly; natively (in tests) the macro expands to nothing, so the crate can test the
/// type directly.
///
/// ```
/// use sluice_sdk::{Batch, Context, Error, Output, Params, Transform, export_transform};
///
/// struct Identity;
///
/// impl Transform for Identity {
///     fn init(params: &Params) -> Result<Self, String> {
///         params.allow_only(&[])?;
///         Ok(Identity)
///     }
///     fn transform(&mut self, _: &Context, input: &Batch, out: &mut Output) -> Result<(), Error> {
///         out.pass_through(input);
///         Ok(())
///     }
/// }
///
/// export_transform!(Identity);
/// ```
///
/// `export_transform!(T, self_test)` makes a component of world `tested-transformer` instead:
/// the same, plus the `self-test` export, which calls [`SelfTest::self_test`](crate::SelfTest::self_test)
/// on a freshly initialised instance before the host lets the version go live.
///
/// `export_transform!(T, migrate)` (or `export_transform!(T, self_test, migrate)`) adds the
/// `migrate` export (world `migrating-transformer`), which calls
/// [`Migrate::migrate`](crate::Migrate::migrate) to convert the step's keyed state
/// ([`crate::state`]) when a new version changes its layout.
#[macro_export]
macro_rules! export_transform {
    ($plugin:ty) => {
        #[cfg(target_arch = "wasm32")]
        const _: () = {
            $crate::export_transform!(@guest $plugin);
            $crate::__private::transformer::export!(
                __SluiceExport with_types_in $crate::__private::transformer
            );
        };
    };
    ($plugin:ty, self_test) => {
        #[cfg(target_arch = "wasm32")]
        const _: () = {
            $crate::export_transform!(@guest $plugin);
            $crate::__private::transformer::export!(
                __SluiceExport with_types_in $crate::__private::transformer
            );
            $crate::export_transform!(@self_test $plugin);
        };
    };
    ($plugin:ty, migrate) => {
        #[cfg(target_arch = "wasm32")]
        const _: () = {
            $crate::export_transform!(@guest $plugin);
            $crate::__private::transformer::export!(
                __SluiceExport with_types_in $crate::__private::transformer
            );
            $crate::export_transform!(@migrate $plugin);
        };
    };
    ($plugin:ty, self_test, migrate) => {
        #[cfg(target_arch = "wasm32")]
        const _: () = {
            $crate::export_transform!(@guest $plugin);
            $crate::__private::transformer::export!(
                __SluiceExport with_types_in $crate::__private::transformer
            );
            $crate::export_transform!(@self_test $plugin);
            $crate::export_transform!(@migrate $plugin);
        };
    };
    (@self_test $plugin:ty) => {
        impl $crate::__private::SelfTestGuest for __SluiceExport {
            fn run(
                params: $crate::__private::wit::Params,
            ) -> ::core::result::Result<(), ::std::string::String> {
                __SLUICE_STATE.with(|s| $crate::__private::self_test::<$plugin>(s, params))
            }
        }
        $crate::__private::self_tested::export!(
            __SluiceExport with_types_in $crate::__private::self_tested
        );
    };
    (@migrate $plugin:ty) => {
        impl $crate::__private::MigrateGuest for __SluiceExport {
            fn migrate(
                from_version: ::std::string::String,
                state: $crate::__private::wit::Batch,
            ) -> ::core::result::Result<$crate::__private::wit::Output, $crate::__private::wit::Error>
            {
                __SLUICE_STATE
                    .with(|s| $crate::__private::migrate::<$plugin>(s, from_version, state))
            }
        }
        $crate::__private::migrating::export!(
            __SluiceExport with_types_in $crate::__private::migrating
        );
    };
    (@guest $plugin:ty) => {
        $crate::__lend_output!();
        ::std::thread_local! {
            static __SLUICE_STATE: $crate::__private::State<$plugin> =
                const { $crate::__private::State::<$plugin>::new(::core::option::Option::None) };
        }
        struct __SluiceExport;
        impl $crate::__private::TransformGuest for __SluiceExport {
            fn init(
                params: $crate::__private::wit::Params,
            ) -> ::core::result::Result<(), ::std::string::String> {
                __SLUICE_STATE.with(|s| $crate::__private::transform_init::<$plugin>(s, params))
            }
            fn transform(
                ctx: $crate::__private::wit::BatchContext,
                input: $crate::__private::wit::Batch,
            ) -> ::core::result::Result<$crate::__private::wit::Output, $crate::__private::wit::Error>
            {
                __SLUICE_STATE.with(|s| $crate::__private::transform::<$plugin>(s, ctx, input))
            }
        }
    };
}

/// Exports a [`Sink`](crate::Sink) type as this component's `sink` world.
///
/// Call it once in the plugin crate's `lib.rs`; see [`export_transform!`] for how the state is
/// kept and why the macro expands to nothing natively.
///
/// ```
/// use sluice_sdk::{Batch, Context, Error, Params, Sink, export_sink};
///
/// struct Discard;
///
/// impl Sink for Discard {
///     fn init(_: &Params) -> Result<Self, String> {
///         Ok(Discard)
///     }
///     fn write(&mut self, _: &Context, _: &Batch) -> Result<(), Error> {
///         Ok(())
///     }
///     fn commit(&mut self, _: &str, _: u64) -> Result<(), Error> {
///         Ok(())
///     }
/// }
///
/// export_sink!(Discard);
/// ```
#[macro_export]
macro_rules! export_sink {
    ($plugin:ty) => {
        #[cfg(target_arch = "wasm32")]
        const _: () = {
            ::std::thread_local! {
                static __SLUICE_STATE: $crate::__private::State<$plugin> =
                    const { $crate::__private::State::<$plugin>::new(::core::option::Option::None) };
            }
            struct __SluiceExport;
            impl $crate::__private::SinkGuest for __SluiceExport {
                fn init(
                    params: $crate::__private::wit::Params,
                ) -> ::core::result::Result<(), ::std::string::String> {
                    __SLUICE_STATE.with(|s| $crate::__private::sink_init::<$plugin>(s, params))
                }
                fn write(
                    ctx: $crate::__private::wit::BatchContext,
                    input: $crate::__private::wit::Batch,
                ) -> ::core::result::Result<(), $crate::__private::wit::Error> {
                    __SLUICE_STATE.with(|s| $crate::__private::sink_write::<$plugin>(s, ctx, input))
                }
                fn commit(
                    stream: ::std::string::String,
                    batch_id: u64,
                ) -> ::core::result::Result<(), $crate::__private::wit::Error> {
                    __SLUICE_STATE
                        .with(|s| $crate::__private::sink_commit::<$plugin>(s, stream, batch_id))
                }
            }
            $crate::__private::sink::export!(__SluiceExport with_types_in $crate::__private::sink);
        };
    };
}

/// Exports a [`Receiver`](crate::Receiver) type as this component's `receiver` world.
///
/// Call it once in the plugin crate's `lib.rs`; see [`export_transform!`] for how the state is
/// kept and why the macro expands to nothing natively.
///
/// ```
/// use sluice_sdk::{BatchBuilder, Error, Params, Poll, Receiver, export_receiver};
///
/// /// Counts from 0 to 9, once.
/// struct Count { next: u32 }
///
/// impl Receiver for Count {
///     fn init(_: &Params) -> Result<Self, String> {
///         Ok(Count { next: 0 })
///     }
///     fn partitions(&self) -> u32 {
///         1
///     }
///     fn open(&mut self, _: u32, position: Option<String>) -> Result<(), Error> {
///         self.next = position.map_or(Ok(0), |p| p.parse()).map_err(|_| Error::fatal("bad position"))?;
///         Ok(())
///     }
///     fn poll(&mut self, _: u32, max: u32, _: u32, out: &mut BatchBuilder) -> Result<Poll, Error> {
///         while self.next < 10 && (out.len() as u32) < max {
///             out.push(self.next.to_string().as_bytes());
///             self.next += 1;
///         }
///         Ok(Poll { position: Some(self.next.to_string()), end: self.next == 10 })
///     }
/// }
///
/// export_receiver!(Count);
/// ```
#[macro_export]
macro_rules! export_receiver {
    ($plugin:ty) => {
        #[cfg(target_arch = "wasm32")]
        const _: () = {
            ::std::thread_local! {
                static __SLUICE_STATE: $crate::__private::State<$plugin> =
                    const { $crate::__private::State::<$plugin>::new(::core::option::Option::None) };
            }
            struct __SluiceExport;
            impl $crate::__private::ReceiverGuest for __SluiceExport {
                fn init(
                    params: $crate::__private::wit::Params,
                ) -> ::core::result::Result<(), ::std::string::String> {
                    __SLUICE_STATE.with(|s| $crate::__private::receiver_init::<$plugin>(s, params))
                }
                fn partitions() -> u32 {
                    __SLUICE_STATE.with(|s| $crate::__private::receiver_partitions::<$plugin>(s))
                }
                fn open(
                    partition: u32,
                    position: ::core::option::Option<::std::string::String>,
                ) -> ::core::result::Result<(), $crate::__private::wit::Error> {
                    __SLUICE_STATE
                        .with(|s| $crate::__private::receiver_open::<$plugin>(s, partition, position))
                }
                fn poll(
                    partition: u32,
                    max_records: u32,
                    max_bytes: u32,
                ) -> ::core::result::Result<
                    $crate::__private::receiver::exports::sluice::plugin::source::Polled,
                    $crate::__private::wit::Error,
                > {
                    __SLUICE_STATE.with(|s| {
                        $crate::__private::receiver_poll::<$plugin>(s, partition, max_records, max_bytes)
                    })
                }
            }
            $crate::__private::receiver::export!(
                __SluiceExport with_types_in $crate::__private::receiver
            );
        };
    };
}

/// Exports an [`Aggregator`](crate::Aggregator) type as this component's `aggregator` world.
///
/// Call it once in the plugin crate's `lib.rs`; see [`export_transform!`] for how the state is
/// kept and why the macro expands to nothing natively, and [`Aggregator`](crate::Aggregator)
/// for an example.
#[macro_export]
macro_rules! export_aggregator {
    ($plugin:ty) => {
        #[cfg(target_arch = "wasm32")]
        const _: () = {
            ::std::thread_local! {
                static __SLUICE_STATE: $crate::__private::State<$plugin> =
                    const { $crate::__private::State::<$plugin>::new(::core::option::Option::None) };
            }
            struct __SluiceExport;
            impl $crate::__private::AggregatorGuest for __SluiceExport {
                fn init(
                    params: $crate::__private::wit::Params,
                ) -> ::core::result::Result<(), ::std::string::String> {
                    __SLUICE_STATE.with(|s| $crate::__private::aggregate_init::<$plugin>(s, params))
                }
                fn can_retract() -> bool {
                    __SLUICE_STATE.with(|s| $crate::__private::aggregate_can_retract::<$plugin>(s))
                }
                fn add(
                    ctx: $crate::__private::wit::BatchContext,
                    input: $crate::__private::wit::Batch,
                ) -> ::core::result::Result<
                    $crate::__private::Partials,
                    $crate::__private::wit::Error,
                > {
                    __SLUICE_STATE.with(|s| $crate::__private::aggregate_add::<$plugin>(s, ctx, input))
                }
                fn merge(
                    keys: $crate::__private::wit::BytesColumn,
                    left: $crate::__private::wit::BytesColumn,
                    right: $crate::__private::wit::BytesColumn,
                ) -> ::core::result::Result<
                    $crate::__private::wit::BytesColumn,
                    $crate::__private::wit::Error,
                > {
                    __SLUICE_STATE.with(|s| {
                        $crate::__private::aggregate_pairwise::<$plugin>(s, false, keys, left, right)
                    })
                }
                fn retract(
                    keys: $crate::__private::wit::BytesColumn,
                    acc: $crate::__private::wit::BytesColumn,
                    expired: $crate::__private::wit::BytesColumn,
                ) -> ::core::result::Result<
                    $crate::__private::wit::BytesColumn,
                    $crate::__private::wit::Error,
                > {
                    __SLUICE_STATE.with(|s| {
                        $crate::__private::aggregate_pairwise::<$plugin>(s, true, keys, acc, expired)
                    })
                }
                fn finish(
                    keys: $crate::__private::wit::BytesColumn,
                    accs: $crate::__private::wit::BytesColumn,
                ) -> ::core::result::Result<
                    $crate::__private::wit::BytesColumn,
                    $crate::__private::wit::Error,
                > {
                    __SLUICE_STATE.with(|s| $crate::__private::aggregate_finish::<$plugin>(s, keys, accs))
                }
            }
            $crate::__private::aggregator::export!(
                __SluiceExport with_types_in $crate::__private::aggregator
            );
        };
    };
}
