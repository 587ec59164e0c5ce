//! The stages that call a loaded [`Plugin`]: [`TransformStage`], [`SinkStage`] and
//! [`ReceiverStage`], and the conversions between the host's [`RecordBatch`] and the WIT
//! types of each call. Each call goes through [`Stage`]'s pooled instances, limits and
//! classified errors.

use super::*;
use convert::*;

/// A transformation step of a pipeline.
#[derive(Debug)]
pub struct TransformStage(pub Stage);

/// What a transformation made of one partition's batch.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct TransformOutput {
    /// The output records, with timestamps, headers and (unless the plugin set new ones) keys
    /// inherited from the input records they came from.
    pub batch: RecordBatch,
    /// For each output record, the input record it came from; empty when output `i` came from
    /// input `i` (a map).
    pub origins: Vec<u32>,
    /// Input records the plugin rejected, with its reason.
    pub rejected: Vec<(u32, String)>,
}

impl TransformStage {
    /// The stage's plugin.
    pub fn plugin(&self) -> &Plugin {
        &self.0.plugin
    }

    /// What this stage's healthy calls cost so far (for poison isolation's budgets).
    pub fn cost(&self) -> &CallCost {
        &self.0.cost
    }

    /// Calls `transform` with one partition's batch.
    pub fn transform(&self, ctx: &CallContext, input: &RecordBatch) -> CallResult<TransformOutput> {
        let limits = self.0.plugin.inner.info.limits;
        self.transform_within(ctx, input, &limits)
    }

    /// [`transform_within`](Self::transform_within) with the step's keyed state open for the
    /// batch (`None`: the call sees none): the call reads it, and what it writes joins the
    /// batch's writes only when it succeeds.
    pub fn transform_keyed(
        &self,
        ctx: &CallContext,
        input: &RecordBatch,
        limits: &Limits,
        keyed: Option<&Arc<crate::state::keyed::KeyedBatch>>,
    ) -> CallResult<TransformOutput> {
        let Some(keyed) = keyed else {
            return self.transform_within(ctx, input, limits);
        };
        let mut writes = None;
        let out = self.transform_calling(
            ctx,
            input,
            limits,
            |store| {
                store.data_mut().keyed = Some(state::KeyedCall::new(keyed.clone()));
            },
            |store| {
                writes = store.data_mut().keyed.take().map(|k| k.writes);
            },
        )?;
        if let Some(w) = writes {
            keyed.apply(w);
        }
        Ok(out)
    }

    /// [`transform`](Self::transform) under `limits` instead of the plugin's (poison
    /// isolation's sub-calls run under shorter ones). A call that succeeds is counted in the
    /// stage's [`cost`](Self::cost).
    pub fn transform_within(
        &self,
        ctx: &CallContext,
        input: &RecordBatch,
        limits: &Limits,
    ) -> CallResult<TransformOutput> {
        self.transform_calling(ctx, input, limits, |_| {}, |_| {})
    }

    /// `transform` with `before` run on the store before the call and `after` after a call
    /// that did not trap and returned its output (not an error).
    fn transform_calling(
        &self,
        ctx: &CallContext,
        input: &RecordBatch,
        limits: &Limits,
        before: impl FnOnce(&mut Store<HostState>),
        after: impl FnOnce(&mut Store<HostState>),
    ) -> CallResult<TransformOutput> {
        let site = self
            .0
            .site("transform", Some(ctx.partition), Some(ctx.batch_id));
        let wit_ctx = wit_context(ctx);
        let wit_batch = to_wit(input);
        // A place among the stage's lent instances, when its plugin lends and one is free.
        let slot = if self.0.plugin.inner.info.lends_output {
            self.0.home.slot()
        } else {
            None
        };
        let lend = slot.is_some();
        // Keep the instance when its output was left in place (lent).
        let in_place = |out: &Result<lift::Output, _>| {
            out.as_ref()
                .is_ok_and(|o| matches!(o.values.data, lift::Bytes::InPlace { .. }))
        };
        let call = |bound: &Bound, store: &mut Store<HostState>| match bound {
            Bound::Transformer(_, _, transform) => {
                before(&mut *store);
                let lending = lend.then(lift::lending);
                let out = lift::call_transform(*transform, &mut *store, wit_ctx, wit_batch);
                drop(lending);
                if matches!(out, Ok(Ok(_))) {
                    after(store);
                } else {
                    store.data_mut().keyed = None;
                }
                out
            }
            _ => unreachable!("a transform stage holds a transformer"),
        };
        let (out, elapsed, memory, kept) =
            self.0.call_keeping(site.clone(), limits, call, in_place)?;
        if out.is_ok() {
            self.0.cost.record(input.len(), elapsed, memory);
            self.0
                .plugin
                .metrics()
                .records
                .fetch_add(input.len() as u64, std::sync::atomic::Ordering::Relaxed);
        }
        let fail = |failure| PluginError {
            site: site.clone(),
            failure,
        };
        let out = out.map_err(|e| fail(guest_failure(e)))?;
        let out = GuestOutput::lifted(out, |addr, len| {
            // Left in place only while lending (a slot taken), and then the instance is kept.
            let ((inst, reuse), slot) = kept.zip(slot).expect("a lending call keeps both");
            Data::Lent(slot.lend(inst, reuse, addr, len))
        });
        from_wit_output(input, out).map_err(|m| fail(Failure::Contract(m)))
    }
}

/// A sink step of a pipeline.
#[derive(Debug)]
pub struct SinkStage(pub Stage);

impl SinkStage {
    /// The stage's plugin.
    pub fn plugin(&self) -> &Plugin {
        &self.0.plugin
    }

    /// Calls `write` with one partition's batch.
    pub fn write(&self, ctx: &CallContext, input: &RecordBatch) -> CallResult<()> {
        let site = self
            .0
            .site("write", Some(ctx.partition), Some(ctx.batch_id));
        let wit_ctx = wit_context(ctx);
        let wit_batch = to_wit(input);
        let r = self.0.call(site.clone(), |bound, store| match bound {
            Bound::Sink(s) => s
                .sluice_plugin_deliver()
                .call_write(store, wit_ctx, wit_batch),
            _ => unreachable!("a sink stage holds a sink"),
        })?;
        if r.is_ok() {
            let records = &self.0.plugin.metrics().records;
            records.fetch_add(input.len() as u64, std::sync::atomic::Ordering::Relaxed);
        }
        r.map_err(|e| PluginError {
            site,
            failure: guest_failure(e),
        })
    }

    /// Calls `commit` for a batch whose every partition was written.
    pub fn commit(&self, stream: &str, batch_id: u64) -> CallResult<()> {
        let site = self.0.site("commit", None, Some(batch_id));
        let r = self.0.call(site.clone(), |bound, store| match bound {
            Bound::Sink(s) => s
                .sluice_plugin_deliver()
                .call_commit(store, stream, batch_id),
            _ => unreachable!("a sink stage holds a sink"),
        })?;
        r.map_err(|e| PluginError {
            site,
            failure: guest_failure(e),
        })
    }
}

/// A receiver plugin. Its instance keeps the read position, so after a failed call the caller
/// must `open` again (the next call gets a fresh instance).
#[derive(Debug)]
pub struct ReceiverStage(pub Stage);

/// What one `poll` returned.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct Polled {
    /// The records.
    pub records: RecordBatch,
    /// The position after them.
    pub position: Option<String>,
    /// Whether the partition is finished.
    pub end: bool,
}

impl ReceiverStage {
    /// The stage's plugin.
    pub fn plugin(&self) -> &Plugin {
        &self.0.plugin
    }

    /// How many partitions the source has.
    pub fn partitions(&self) -> CallResult<u32> {
        let site = self.0.site("partitions", None, None);
        self.0.call(site, |bound, store| match bound {
            Bound::Receiver(r) => r.sluice_plugin_source().call_partitions(store),
            _ => unreachable!("a receiver stage holds a receiver"),
        })
    }

    /// Opens `partition` at `position`.
    pub fn open(&self, partition: u32, position: Option<&str>) -> CallResult<()> {
        let site = self.0.site("open", Some(partition), None);
        let r = self.0.call(site.clone(), |bound, store| match bound {
            Bound::Receiver(r) => r
                .sluice_plugin_source()
                .call_open(store, partition, position),
            _ => unreachable!("a receiver stage holds a receiver"),
        })?;
        r.map_err(|e| PluginError {
            site,
            failure: receiver_failure(e),
        })
    }

    /// Polls `partition` for records.
    pub fn poll(&self, partition: u32, max_records: u32, max_bytes: u32) -> CallResult<Polled> {
        let site = self.0.site("poll", Some(partition), None);
        let r = self.0.call(site.clone(), |bound, store| match bound {
            Bound::Receiver(r) => {
                r.sluice_plugin_source()
                    .call_poll(store, partition, max_records, max_bytes)
            }
            _ => unreachable!("a receiver stage holds a receiver"),
        })?;
        let fail = |failure| PluginError {
            site: site.clone(),
            failure,
        };
        let p = r.map_err(|e| fail(receiver_failure(e)))?;
        let b = p.records;
        let records = RecordBatch {
            values: BytesColumn {
                data: b.values.data.into(),
                ends: b.values.ends,
            },
            keys: b.keys.map(|k| Keys {
                column: BytesColumn {
                    data: k.column.data.into(),
                    ends: k.column.ends,
                },
                present: k.present,
            }),
            timestamps: b.timestamps,
            headers: b.headers.map(|h| Headers {
                record_ends: h.record_ends,
                names: BytesColumn {
                    data: h.names.data.into(),
                    ends: h.names.ends,
                },
                values: BytesColumn {
                    data: h.values.data.into(),
                    ends: h.values.ends,
                },
            }),
        };
        records.validate().map_err(|m| fail(Failure::Contract(m)))?;
        Ok(Polled {
            records,
            position: p.position,
            end: p.end,
        })
    }
}
