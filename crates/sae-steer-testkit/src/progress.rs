//! A [`Progress`] sink that records what a job reported, for tests that
//! check a job's progress adds up to the work it did.

use std::sync::{Mutex, MutexGuard};

use sae_steer_files::Progress;

/// One call a job made on its sink.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ProgressEvent {
    Start {
        what: String,
        unit: String,
        total: u64,
        done: u64,
    },
    Advance(u64),
    Status(String),
    Note(String),
    Finish,
}

/// A phase as the events describe it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PhaseRecord {
    pub what: String,
    pub unit: String,
    pub total: u64,
    /// Units done before the phase started (a resumed job).
    pub done: u64,
    /// The sum of the phase's advances.
    pub advanced: u64,
    /// Whether the phase was finished (rather than replaced or left open).
    pub finished: bool,
}

impl PhaseRecord {
    /// `done` plus the advances reach `total`, and the phase was finished.
    pub fn is_complete(&self) -> bool {
        self.finished && self.done + self.advanced == self.total
    }
}

/// Records every call; share it with `SharedProgress::from(Arc::clone(..))`
/// or pass `&recorder` where a `&dyn Progress` is wanted.
#[derive(Debug, Default)]
pub struct RecordingProgress {
    events: Mutex<Vec<ProgressEvent>>,
}

impl RecordingProgress {
    pub fn new() -> Self {
        Self::default()
    }

    fn log(&self) -> MutexGuard<'_, Vec<ProgressEvent>> {
        self.events.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// Every call so far, in order.
    pub fn events(&self) -> Vec<ProgressEvent> {
        self.log().clone()
    }

    /// The phases so far, in order. Panics on an advance or a finish
    /// outside a phase: a job must report within the phases it opens.
    pub fn phases(&self) -> Vec<PhaseRecord> {
        let mut phases: Vec<PhaseRecord> = Vec::new();
        let mut open = false;
        for event in self.log().iter() {
            match event {
                ProgressEvent::Start {
                    what,
                    unit,
                    total,
                    done,
                } => {
                    phases.push(PhaseRecord {
                        what: what.clone(),
                        unit: unit.clone(),
                        total: *total,
                        done: *done,
                        advanced: 0,
                        finished: false,
                    });
                    open = true;
                }
                ProgressEvent::Advance(n) => {
                    assert!(open, "advance({n}) outside a phase");
                    if let Some(p) = phases.last_mut() {
                        p.advanced += n;
                    }
                }
                ProgressEvent::Finish => {
                    assert!(open, "finish() outside a phase");
                    if let Some(p) = phases.last_mut() {
                        p.finished = true;
                    }
                    open = false;
                }
                ProgressEvent::Status(_) | ProgressEvent::Note(_) => {}
            }
        }
        phases
    }

    /// The notes so far, in order.
    pub fn notes(&self) -> Vec<String> {
        self.log()
            .iter()
            .filter_map(|e| match e {
                ProgressEvent::Note(line) => Some(line.clone()),
                _ => None,
            })
            .collect()
    }

    /// Forgets everything recorded so far.
    pub fn clear(&self) {
        self.log().clear();
    }
}

impl Progress for RecordingProgress {
    fn start(&self, what: &str, unit: &str, total: u64, done: u64) {
        self.log().push(ProgressEvent::Start {
            what: what.into(),
            unit: unit.into(),
            total,
            done,
        });
    }

    fn advance(&self, n: u64) {
        self.log().push(ProgressEvent::Advance(n));
    }

    fn status(&self, text: &str) {
        self.log().push(ProgressEvent::Status(text.into()));
    }

    fn note(&self, line: &str) {
        self.log().push(ProgressEvent::Note(line.into()));
    }

    fn finish(&self) {
        self.log().push(ProgressEvent::Finish);
    }
}
