//! The progress bar a run draws on a terminal, fed by the run's observer calls.

use indicatif::{ProgressDrawTarget, ProgressStyle};

use crate::sync::Observer;

/// A progress bar on stderr; indicatif draws nothing when stderr is not a terminal.
pub struct ProgressBar(indicatif::ProgressBar);

impl ProgressBar {
    pub fn on_stderr() -> ProgressBar {
        let bar = indicatif::ProgressBar::with_draw_target(None, ProgressDrawTarget::stderr());
        bar.set_style(
            ProgressStyle::with_template("{msg:20} [{bar:40}] {pos}/{len} ({eta})")
                .expect("static template")
                .progress_chars("=> "),
        );
        ProgressBar(bar)
    }
}

impl Observer for ProgressBar {
    fn reading(&self) {
        self.0.set_message("reading Opter");
    }

    fn read_total(&self, total: u64) {
        self.0.set_length(total);
    }

    fn read_so_far(&self, read: u64) {
        self.0.set_position(read);
    }

    fn writing(&self, product: &str, total: u64) {
        self.0.set_message(format!("writing to {product}"));
        self.0.set_length(total);
        self.0.set_position(0);
    }

    fn written(&self) {
        self.0.inc(1);
    }

    fn done(&self) {
        self.0.finish_and_clear();
    }
}
