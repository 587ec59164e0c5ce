//! sluice's end-to-end tests, in one binary (one link, one process to share the built
//! components). Each module covers one part; test names read as sentences.

mod amqp;
mod cli;
mod engine;
mod eventhubs;
mod plugins;
mod supervise;
mod wal;
