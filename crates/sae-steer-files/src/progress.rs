//! Progress of long jobs, reported by the library and drawn by the caller
//! (see [`Progress`]).

use std::fmt;
use std::ops::Deref;
use std::sync::Arc;

/// Where a long job reports how far it is.
///
/// A library function that runs for a while (building a cache, training,
/// scoring every image) reports what it does to a [`Progress`] sink instead
/// of drawing anything itself: the command-line programs hand it a sink that
/// draws progress bars (`sae_steer_cli::cli::IndicatifProgress`), tests
/// and embedders hand it [`NoProgress`], which shows nothing, or one of their
/// own (counting units, feeding a web page).
///
/// A job reports one or more *phases*, one after the other:
/// [`Progress::start`] opens a phase of `total` units of which `done` were
/// done before (by the run a resumed job continues), [`Progress::advance`]
/// counts units as they finish, and [`Progress::finish`] closes the phase. Over a phase that runs
/// to its end, `done` plus the advances add up to `total`. Phases do not
/// nest: a `start` while a phase is open replaces it. Library code opens a
/// phase with [`Phase::start`], which finishes it when dropped, so a job
/// that stops on an error closes its phase too.
///
/// Functions that take an options struct find the sink in it, as a
/// [`SharedProgress`] field named `progress` whose default is silent;
/// functions without one take `progress: &dyn Progress`.
///
/// Every method takes `&self`, and a sink is `Send + Sync`: jobs advance it
/// from worker threads.
pub trait Progress: Send + Sync {
    /// Opens a phase: `what` names it ("caching", "feature statistics"),
    /// `unit` is what it counts ("images", "steps"; may be empty), `total`
    /// is the units of the whole phase and `done` those already done when
    /// it starts (0, or where a resumed job picks up).
    fn start(&self, what: &str, unit: &str, total: u64, done: u64);

    /// `n` more units of the open phase are done.
    fn advance(&self, n: u64);

    /// A short status of the open phase (the latest loss, say), replacing
    /// the previous one. Ignored by default.
    fn status(&self, text: &str) {
        let _ = text;
    }

    /// A line for the user while the job runs (an image skipped, a metrics
    /// row), written above any bar. Ignored by default.
    fn note(&self, line: &str) {
        let _ = line;
    }

    /// The open phase is over (complete, or left because the job stopped).
    fn finish(&self);
}

/// An open phase of a [`Progress`] sink: [`Phase::start`] starts it, and
/// dropping it finishes it (on every way out of the job, errors included).
#[must_use = "dropping the phase finishes it at once"]
pub struct Phase<'a> {
    progress: &'a dyn Progress,
}

impl<'a> Phase<'a> {
    /// Opens a phase on `progress` (see [`Progress::start`]).
    pub fn start(
        progress: &'a dyn Progress,
        what: &str,
        unit: &str,
        total: u64,
        done: u64,
    ) -> Self {
        progress.start(what, unit, total, done);
        Self { progress }
    }

    /// See [`Progress::advance`].
    pub fn advance(&self, n: u64) {
        self.progress.advance(n);
    }

    /// See [`Progress::status`].
    pub fn status(&self, text: &str) {
        self.progress.status(text);
    }

    /// See [`Progress::note`].
    pub fn note(&self, line: &str) {
        self.progress.note(line);
    }
}

impl Drop for Phase<'_> {
    fn drop(&mut self) {
        self.progress.finish();
    }
}

impl fmt::Debug for Phase<'_> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("Phase(..)")
    }
}

/// A sink that shows nothing: what tests and embedders without a display
/// pass, and what every options struct holds by default.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct NoProgress;

impl Progress for NoProgress {
    fn start(&self, _what: &str, _unit: &str, _total: u64, _done: u64) {}
    fn advance(&self, _n: u64) {}
    fn finish(&self) {}
}

/// A [`Progress`] sink shared by reference counting, as options structs
/// hold it: cloning the struct shares the sink, [`Default`] is
/// [`NoProgress`], and it dereferences to `dyn Progress`, so
/// `options.progress.advance(1)` and `f(&*options.progress)` work.
#[derive(Clone)]
pub struct SharedProgress(Arc<dyn Progress>);

impl SharedProgress {
    /// Shares `sink`.
    pub fn new(sink: impl Progress + 'static) -> Self {
        Self(Arc::new(sink))
    }

    /// The silent sink, [`NoProgress`].
    pub fn silent() -> Self {
        Self::new(NoProgress)
    }
}

impl Default for SharedProgress {
    fn default() -> Self {
        Self::silent()
    }
}

impl fmt::Debug for SharedProgress {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("SharedProgress(..)")
    }
}

impl Deref for SharedProgress {
    type Target = dyn Progress;

    fn deref(&self) -> &Self::Target {
        &*self.0
    }
}

impl From<Arc<dyn Progress>> for SharedProgress {
    fn from(sink: Arc<dyn Progress>) -> Self {
        Self(sink)
    }
}

impl<P: Progress + 'static> From<Arc<P>> for SharedProgress {
    fn from(sink: Arc<P>) -> Self {
        Self(sink)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::Mutex;

    #[derive(Default)]
    struct Counter {
        phases: Mutex<Vec<(String, u64, u64)>>,
        advanced: Mutex<u64>,
        finished: Mutex<usize>,
    }

    impl Progress for Counter {
        fn start(&self, what: &str, _unit: &str, total: u64, done: u64) {
            self.phases
                .lock()
                .unwrap()
                .push((what.to_string(), total, done));
        }
        fn advance(&self, n: u64) {
            *self.advanced.lock().unwrap() += n;
        }
        fn finish(&self) {
            *self.finished.lock().unwrap() += 1;
        }
    }

    /// A job as the library writes one: it only sees `&dyn Progress`.
    fn job(progress: &dyn Progress, total: u64, done: u64) {
        let phase = Phase::start(progress, "job", "units", total, done);
        for _ in done..total {
            phase.advance(1);
        }
        phase.status("ignored by the counter");
        phase.note("so is this");
    }

    fn failing_job(progress: &dyn Progress) -> Result<(), String> {
        let phase = Phase::start(progress, "failing", "units", 3, 0);
        phase.advance(1);
        Err("stopped".into())
    }

    #[test]
    fn a_shared_sink_reaches_the_caller_through_clones() {
        let counter = Arc::new(Counter::default());
        let shared = SharedProgress::from(counter.clone());
        let copy = shared.clone();
        job(&*copy, 10, 3);
        job(&*shared, 4, 0);
        assert_eq!(
            *counter.phases.lock().unwrap(),
            vec![("job".to_string(), 10, 3), ("job".to_string(), 4, 0)]
        );
        assert_eq!(*counter.advanced.lock().unwrap(), 7 + 4);
        assert_eq!(*counter.finished.lock().unwrap(), 2);
    }

    #[test]
    fn a_job_that_fails_still_finishes_its_phase() {
        let counter = Counter::default();
        assert!(failing_job(&counter).is_err());
        assert_eq!(counter.phases.lock().unwrap().len(), 1);
        assert_eq!(*counter.advanced.lock().unwrap(), 1);
        assert_eq!(*counter.finished.lock().unwrap(), 1);
    }

    #[test]
    fn the_default_is_silent() {
        // Nothing to observe but that it runs and says what it is.
        let silent = SharedProgress::default();
        job(&*silent, 5, 0);
        job(&NoProgress, 5, 2);
        assert_eq!(format!("{silent:?}"), "SharedProgress(..)");
    }
}
