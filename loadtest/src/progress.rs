//! The live progress line on a terminal: clients connected, messages sent,
//! deliveries received, and the delivery p99 of the last moments.
//!
//! It reads only the figures each generator thread publishes a few times a
//! second (`shared::Live`), so drawing never touches the hot path. Off a
//! terminal (CI, pipes) it is hidden and the summary is the only output.

use std::io::IsTerminal;
use std::sync::atomic::Ordering;
use std::time::Duration;

use indicatif::{ProgressBar, ProgressStyle};

use crate::recorder::latency_histogram;
use crate::shared::Shared;

pub struct Progress {
    bar: ProgressBar,
}

impl Progress {
    pub fn new(enabled: bool) -> Self {
        let bar = if enabled && std::io::stderr().is_terminal() {
            let bar = ProgressBar::new_spinner();
            if let Ok(style) =
                ProgressStyle::with_template("{spinner} {elapsed_precise} {wide_msg}")
            {
                bar.set_style(style);
            }
            bar.enable_steady_tick(Duration::from_millis(200));
            bar
        } else {
            ProgressBar::hidden()
        };
        Self { bar }
    }

    /// Whether the line is shown (it needs the threads' current latencies).
    pub fn shown(&self) -> bool {
        !self.bar.is_hidden()
    }

    pub fn update(&self, shared: &Shared) {
        if self.bar.is_hidden() {
            return;
        }
        let (mut open, mut sent, mut delivered) = (0, 0, 0);
        let mut window = latency_histogram();
        for live in &shared.live {
            open += live.open.load(Ordering::Relaxed);
            sent += live.sent.load(Ordering::Relaxed);
            delivered += live.messages.load(Ordering::Relaxed);
            if let Ok(h) = live.window.lock() {
                let _ = window.add(&*h);
            }
        }
        let p99 = match window.is_empty() {
            true => "-".to_owned(),
            false => format!("{:.1} ms", window.value_at_quantile(0.99) as f64 / 1000.0),
        };
        let plan = &shared.plan;
        self.bar.set_message(format!(
            "connected {open}/{}  sent {sent}/{}  delivered {delivered}  delivery p99 {p99}",
            plan.own_clients(),
            plan.planned_messages()
        ));
    }

    pub fn finish(&self) {
        self.bar.finish_and_clear();
    }
}
