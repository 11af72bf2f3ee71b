//! The progress bar of `kiln run` (drawn on stderr only when it is a terminal).

use std::time::Duration;

use indicatif::{ProgressBar, ProgressStyle};
use kiln_coordinator::{Progress, ProgressObserver};
use kiln_protocol::Outcome;

/// An indicatif bar fed by the collector.
pub struct BarProgress {
    bar: ProgressBar,
}

impl BarProgress {
    pub fn new() -> Self {
        let bar = ProgressBar::new(0);
        let style = ProgressStyle::with_template(
            "{spinner} [{elapsed_precise}] {bar:40.cyan/blue} {pos}/{len} episodes  {msg}",
        )
        .unwrap_or_else(|_| ProgressStyle::default_bar());
        bar.set_style(style);
        bar.enable_steady_tick(Duration::from_millis(200));
        Self { bar }
    }

    pub fn finish(&self) {
        self.bar.finish_and_clear();
    }
}

impl ProgressObserver for BarProgress {
    fn started(&self, progress: Progress) {
        self.bar.set_length(progress.total as u64);
        self.bar.set_position(progress.done as u64);
        if progress.done > 0 {
            self.bar
                .set_message(format!("{} recorded earlier", progress.done));
        }
    }

    fn recorded(&self, _outcome: &Outcome, progress: Progress) {
        self.bar.set_position(progress.done as u64);
        self.bar.set_message(format!(
            "{} successful, {} errors",
            progress.successes_now, progress.errors_now
        ));
    }
}
