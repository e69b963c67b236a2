//! Property tests of the library alone: they need no sandbox, so they also run without
//! the `sandbox` feature.

mod hostile;
mod privacy;
