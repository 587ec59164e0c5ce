//! sluice's end-to-end tests, in one binary (one link, one process to share the built
//! components). Each module covers one part; test names read as sentences.

mod admin;
mod aggregator;
mod amqp;
mod amqp_bodies;
mod amqps;
mod batch_job;
mod broker_wordcount;
mod bytes;
mod cli;
mod dead_letters;
mod driver;
mod engine;
mod event_window;
mod eventhubs;
mod eventhubs_checkpoints;
mod eventhubs_dialect;
mod ha;
mod keyed_state;
mod kill;
mod lookup;
mod memory;
mod nexmark;
mod oversize;
mod plugin_workflow;
mod plugins;
mod poison;
mod recovery;
mod replay;
mod self_test;
mod shadow;
mod spill;
mod supervise;
mod swap;
mod wal;
mod window;
