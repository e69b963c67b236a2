//! How a run tells the world how far it got, without knowing who listens: the CLI draws
//! a progress bar from these calls, a service can count metrics from the same ones.

/// Receives a run's progress. Calls come from the run's task, in order; they must be
/// cheap (they are made once per page read and once per customer written).
pub trait Observer: Send + Sync {
    /// Reading Opter started.
    fn reading(&self) {}
    /// Opter said how many customers the read holds.
    fn read_total(&self, _total: u64) {}
    /// This many customers have been read so far.
    fn read_so_far(&self, _read: u64) {}
    /// Writing started: this many customers are to be written to `product`.
    fn writing(&self, _product: &str, _total: u64) {}
    /// One more customer's write has an outcome.
    fn written(&self) {}
    /// The run is over (finished or stopped).
    fn done(&self) {}
}

/// An observer that ignores everything.
pub struct Quiet;

impl Observer for Quiet {}
