//! `--timeseries FILE`: one JSON object per line for every second of the run.
//!
//! Each generator thread keeps the current second's latencies next to its
//! recorder ([`Window`]) and, at every whole second since the run's origin,
//! hands the finished second over ([`Interval`]: counter deltas and the two
//! histograms) through a channel. The main thread merges the threads'
//! intervals of one second ([`Merger`]) and, once every thread has reported
//! it, writes its line ([`JsonLines`]) and, with `--hdr-log`, its histograms
//! (`hdr_log`), so memory stays a few intervals in flight whatever the run's
//! length. An event counts in the second during which its thread handled it.

use std::collections::BTreeMap;
use std::io::Write;

use hdrhistogram::Histogram;
use serde::Serialize;

use crate::recorder::{Counters, latency_histogram};

/// The latencies of the current second on one thread.
pub struct Window {
    pub delivery: Histogram<u64>,
    pub ack: Histogram<u64>,
}

impl Default for Window {
    fn default() -> Self {
        Self {
            delivery: latency_histogram(),
            ack: latency_histogram(),
        }
    }
}

/// One thread's figures for one second.
pub struct Interval {
    /// Seconds since the origin at the end of the interval (1 for the first).
    pub second: u64,
    pub counts: Counts,
    pub window: Window,
}

/// Events of one interval.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize)]
pub struct Counts {
    pub sent: u64,
    pub acked: u64,
    pub delivered: u64,
    pub errors: u64,
    pub connects: u64,
    pub reconnects: u64,
}

impl Counts {
    /// What happened between two snapshots of a thread's counters
    /// (`errors_*`: the sum of its error frames).
    pub fn between(
        before: &Counters,
        after: &Counters,
        errors_before: u64,
        errors_after: u64,
    ) -> Self {
        Self {
            sent: after.sent - before.sent,
            acked: after.acked - before.acked,
            delivered: after.messages - before.messages,
            errors: errors_after - errors_before,
            connects: after.connected - before.connected,
            reconnects: after.reconnects - before.reconnects,
        }
    }

    fn add(&mut self, o: &Counts) {
        self.sent += o.sent;
        self.acked += o.acked;
        self.delivered += o.delivered;
        self.errors += o.errors;
        self.connects += o.connects;
        self.reconnects += o.reconnects;
    }
}

/// One line of the file. Latencies in milliseconds, `null` for a second
/// without samples.
#[derive(Debug, Serialize)]
pub struct Line {
    pub t: u64,
    #[serde(flatten)]
    pub counts: Counts,
    pub delivery_p50_ms: Option<f64>,
    pub delivery_p99_ms: Option<f64>,
    pub ack_p50_ms: Option<f64>,
    pub ack_p99_ms: Option<f64>,
}

fn quantile_ms(h: &Histogram<u64>, q: f64) -> Option<f64> {
    (!h.is_empty()).then(|| h.value_at_quantile(q) as f64 / 1000.0)
}

impl Line {
    fn new(second: u64, counts: Counts, window: &Window) -> Self {
        Self {
            t: second,
            counts,
            delivery_p50_ms: quantile_ms(&window.delivery, 0.50),
            delivery_p99_ms: quantile_ms(&window.delivery, 0.99),
            ack_p50_ms: quantile_ms(&window.ack, 0.50),
            ack_p99_ms: quantile_ms(&window.ack, 0.99),
        }
    }
}

/// One second of the run, merged over the threads.
pub struct Second {
    /// Seconds since the origin at its end (1 for the first).
    pub t: u64,
    pub counts: Counts,
    pub window: Window,
}

/// Merges the threads' intervals into seconds, handed out once all threads
/// have reported them (or at the end, whatever arrived).
pub struct Merger {
    threads: usize,
    pending: BTreeMap<u64, (usize, Counts, Window)>,
}

impl Merger {
    pub fn new(threads: usize) -> Self {
        Self {
            threads,
            pending: BTreeMap::new(),
        }
    }

    /// Adds one thread's interval; returns the seconds now complete, in order.
    pub fn add(&mut self, interval: Interval) -> Vec<Second> {
        let entry = self
            .pending
            .entry(interval.second)
            .or_insert_with(|| (0, Counts::default(), Window::default()));
        entry.0 += 1;
        entry.1.add(&interval.counts);
        merge_into(&mut entry.2, &interval.window);
        let mut complete = Vec::new();
        while let Some(entry) = self.pending.first_entry() {
            if entry.get().0 < self.threads {
                break;
            }
            let (t, (_, counts, window)) = entry.remove_entry();
            complete.push(Second { t, counts, window });
        }
        complete
    }

    /// The seconds left, in order.
    pub fn finish(self) -> Vec<Second> {
        self.pending
            .into_iter()
            .map(|(t, (_, counts, window))| Second { t, counts, window })
            .collect()
    }
}

/// The `--timeseries` file: one [`Line`] per second.
pub struct JsonLines<W: Write>(pub W);

impl<W: Write> JsonLines<W> {
    pub fn write(&mut self, second: &Second) -> std::io::Result<()> {
        let line = serde_json::to_string(&Line::new(second.t, second.counts, &second.window))
            .expect("plain numbers always serialize");
        writeln!(self.0, "{line}")
    }
}

fn merge_into(mine: &mut Window, theirs: &Window) {
    for (a, b) in [
        (&mut mine.delivery, &theirs.delivery),
        (&mut mine.ack, &theirs.ack),
    ] {
        a.add(b).expect("histograms with equal bounds always add");
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn interval(second: u64, delivered: u64, latency_us: &[u64]) -> Interval {
        let mut window = Window::default();
        latency_us
            .iter()
            .for_each(|&us| window.delivery.record(us).unwrap());
        Interval {
            second,
            counts: Counts {
                delivered,
                ..Default::default()
            },
            window,
        }
    }

    fn lines(out: &[u8]) -> Vec<serde_json::Value> {
        String::from_utf8_lossy(out)
            .lines()
            .map(|l| serde_json::from_str(l).unwrap())
            .collect()
    }

    #[test]
    fn a_second_is_written_once_every_thread_reported_it() {
        let mut merger = Merger::new(2);
        assert!(merger.add(interval(1, 3, &[1_000])).is_empty());
        assert!(merger.add(interval(2, 5, &[])).is_empty());
        let complete = merger.add(interval(1, 4, &[3_000]));
        assert_eq!(complete.len(), 1);
        let mut out = JsonLines(Vec::new());
        for second in complete.iter().chain(&merger.finish()) {
            out.write(second).unwrap();
        }
        let lines = lines(&out.0);
        assert_eq!(lines.len(), 2);
        assert_eq!(lines[0]["t"], 1);
        assert_eq!(lines[0]["delivered"], 7);
        let p99 = lines[0]["delivery_p99_ms"].as_f64().unwrap();
        assert!((p99 - 3.0).abs() < 0.01, "{p99}");
        // Second 2 was reported by one thread only, and written at the end.
        assert_eq!(lines[1]["t"], 2);
        assert_eq!(lines[1]["delivered"], 5);
        assert_eq!(lines[1]["delivery_p50_ms"], serde_json::Value::Null);
        for key in [
            "sent",
            "acked",
            "errors",
            "connects",
            "reconnects",
            "ack_p50_ms",
            "ack_p99_ms",
        ] {
            assert!(lines[0].get(key).is_some(), "{key}");
        }
    }
}
