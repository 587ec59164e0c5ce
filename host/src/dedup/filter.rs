//! The live window ([`Filter`], shared by the receivers) and the committed one ([`Recorder`],
//! kept by the driver batch by batch).

use std::sync::Mutex;
use std::sync::atomic::{AtomicU64, Ordering};

use super::{Detection, IdGroup, IdHash, SeenIds, Window, id_of};
use crate::batch::RecordBatch;

/// Redeliveries received and duplicates dropped since the last batch report.
#[derive(Debug, Default, Clone, Copy, PartialEq, Eq)]
pub struct Counts {
    /// Deliveries the broker marked as redelivered (`delivery-count > 0` or not the first
    /// acquirer), dropped or not.
    pub redeliveries: u64,
    /// Records dropped because their id was in the window.
    pub duplicates: u64,
}

/// The receivers' live window, one for the whole source (a redelivery may come on another
/// link of the same queue), and the counts each batch reports.
#[derive(Debug)]
pub struct Filter {
    window: Option<Mutex<Window>>,
    redeliveries: AtomicU64,
    duplicates: AtomicU64,
}

impl Filter {
    /// A filter doing `detection`, starting from the committed window (`None`: empty).
    pub fn new(detection: Detection, committed: Option<Window>) -> Filter {
        let window = match detection {
            Detection::Count => None,
            Detection::ById(s) => Some(Mutex::new(committed.unwrap_or_else(|| Window::new(s)))),
        };
        Filter {
            window,
            redeliveries: AtomicU64::new(0),
            duplicates: AtomicU64::new(0),
        }
    }

    /// Whether records are dropped by id (else redeliveries are only counted).
    pub fn detects(&self) -> bool {
        self.window.is_some()
    }

    /// How many ids the live window holds.
    pub fn len(&self) -> usize {
        self.window.as_ref().map_or(0, |w| lock(w).len())
    }

    /// Whether the live window is empty (or there is none).
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// A restart: the ids of records replayed from the write-ahead log count as seen (at
    /// `now_ms`), before any new delivery is let in.
    pub fn replayed(&self, records: &RecordBatch, now_ms: i64) {
        if let Some(w) = &self.window {
            let mut w = lock(w);
            for i in 0..records.len() {
                if let Some(id) = id_of(records, i) {
                    w.insert(id, now_ms);
                }
            }
            w.evict(now_ms);
        }
    }

    /// The records of `chunk` to drop, ascending: those whose id is in the window or earlier
    /// in the chunk. The others' ids join the window as of `now_ms`. Called once per chunk,
    /// before it is appended.
    pub fn sift(&self, chunk: &RecordBatch, now_ms: i64) -> Vec<usize> {
        let Some(w) = &self.window else {
            return Vec::new();
        };
        let ids: Vec<Option<IdHash>> = (0..chunk.len()).map(|i| id_of(chunk, i)).collect();
        let mut w = lock(w);
        w.evict(now_ms);
        let drop: Vec<usize> = ids
            .into_iter()
            .enumerate()
            .filter_map(|(i, id)| id.filter(|id| !w.insert(*id, now_ms)).map(|_| i))
            .collect();
        w.evict(now_ms);
        self.duplicates
            .fetch_add(drop.len() as u64, Ordering::Relaxed);
        drop
    }

    /// Counts `n` deliveries the broker marked as redelivered.
    pub fn redelivered(&self, n: u64) {
        self.redeliveries.fetch_add(n, Ordering::Relaxed);
    }

    /// The counts since the last call (a batch closing), reset.
    pub fn take_counts(&self) -> Counts {
        Counts {
            redeliveries: self.redeliveries.swap(0, Ordering::Relaxed),
            duplicates: self.duplicates.swap(0, Ordering::Relaxed),
        }
    }
}

fn lock(w: &Mutex<Window>) -> std::sync::MutexGuard<'_, Window> {
    w.lock().unwrap_or_else(|e| e.into_inner())
}

/// The committed window: the ids of the blocks of every batch recorded so far, and of no other
/// record. Kept by the driver; its changes go into the checkpoint entries.
#[derive(Debug)]
pub struct Recorder {
    window: Window,
    pending: Vec<IdHash>,
}

impl Recorder {
    /// Goes on from `window` (rebuilt from the checkpoint log).
    pub fn new(window: Window) -> Self {
        Recorder {
            window,
            pending: Vec::new(),
        }
    }

    /// The window as of the last recorded batch.
    pub fn window(&self) -> &Window {
        &self.window
    }

    /// Notes the ids of a block of the open batch.
    pub fn note(&mut self, records: &RecordBatch) {
        self.pending
            .extend((0..records.len()).filter_map(|i| id_of(records, i)));
    }

    /// The open batch is recorded at batch time `time_ms`: its new ids join the window, the
    /// old ones go. Returns what its entry holds: the ids it added, or (`full`) the whole
    /// window after it. [`Window::apply`] of that does exactly the same.
    pub fn record(&mut self, time_ms: i64, full: bool) -> SeenIds {
        let mut added = Vec::new();
        for id in self.pending.drain(..) {
            if self.window.insert(id, time_ms) {
                added.push(id);
            }
        }
        self.window.evict(time_ms);
        if full {
            return self.window.snapshot();
        }
        SeenIds {
            full: false,
            groups: if added.is_empty() {
                Vec::new()
            } else {
                vec![IdGroup::new(time_ms, &added)]
            },
        }
    }

    /// The open batch was recorded before (a recomputed batch): its ids are in the window
    /// already, so what was noted is dropped.
    pub fn discard(&mut self) {
        self.pending.clear();
    }
}
