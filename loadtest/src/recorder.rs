//! What one generator thread measured: HdrHistograms of latency and plain
//! counters.
//!
//! Each thread owns one `Recorder` (no locks, no atomics on the hot path); the
//! threads' recorders are merged once at the end. Latencies are recorded in
//! microseconds, from 1 µs up to one hour at 3 significant digits; larger
//! values saturate at the top rather than being dropped.

use std::collections::BTreeMap;

use hdrhistogram::Histogram;

/// Highest trackable latency: one hour, in µs.
const MAX_LATENCY_US: u64 = 3_600_000_000;

pub fn latency_histogram() -> Histogram<u64> {
    Histogram::new_with_bounds(1, MAX_LATENCY_US, 3).expect("static histogram bounds are valid")
}

/// Counts of events, summed over clients and threads.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Counters {
    /// Clients whose first connection was attempted.
    pub attempted: u64,
    /// Clients whose first connection reached `joined`.
    pub connected: u64,
    /// Connections currently open (a gauge for the progress display).
    pub open: u64,
    /// Successful reconnects (rejoin with `since`).
    pub reconnects: u64,
    /// Reconnect attempts that failed.
    pub reconnect_failures: u64,
    /// `send` frames written.
    pub sent: u64,
    /// Messages whose slot fell after the send window (`--duration`): not due.
    pub after_window: u64,
    /// `ack` frames for our sends.
    pub acked: u64,
    /// `error` frames answering one of our sends (the message was not accepted).
    pub rejected: u64,
    /// `message` frames received (every delivery, including duplicates).
    pub messages: u64,
    /// `message` frames whose body carried no stamp of this run.
    pub foreign: u64,
    /// `presence` frames received.
    pub presence: u64,
    /// Frames that were not valid protocol JSON, or binary.
    pub bad_frames: u64,
    /// `--churn`: connections that reached `joined`, that left as planned,
    /// and that failed to join or dropped before leaving.
    pub churn_joins: u64,
    pub churn_leaves: u64,
    pub churn_failures: u64,
}

impl Counters {
    fn merge(&mut self, o: &Counters) {
        let Counters {
            attempted,
            connected,
            open,
            reconnects,
            reconnect_failures,
            sent,
            after_window,
            acked,
            rejected,
            messages,
            foreign,
            presence,
            bad_frames,
            churn_joins,
            churn_leaves,
            churn_failures,
        } = o;
        self.attempted += attempted;
        self.connected += connected;
        self.open += open;
        self.reconnects += reconnects;
        self.reconnect_failures += reconnect_failures;
        self.sent += sent;
        self.after_window += after_window;
        self.acked += acked;
        self.rejected += rejected;
        self.messages += messages;
        self.foreign += foreign;
        self.presence += presence;
        self.bad_frames += bad_frames;
        self.churn_joins += churn_joins;
        self.churn_leaves += churn_leaves;
        self.churn_failures += churn_failures;
    }
}

/// First and last instant of a series, in µs since the run's origin.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Span {
    pub first: Option<u64>,
    pub last: Option<u64>,
}

impl Span {
    pub fn mark(&mut self, at_us: u64) {
        self.first = Some(self.first.map_or(at_us, |f| f.min(at_us)));
        self.last = Some(self.last.map_or(at_us, |l| l.max(at_us)));
    }

    fn merge(&mut self, o: Span) {
        o.first.into_iter().chain(o.last).for_each(|t| self.mark(t));
    }

    /// `last - first` in seconds, 0 when empty.
    pub fn seconds(&self) -> f64 {
        match (self.first, self.last) {
            (Some(f), Some(l)) => (l - f) as f64 / 1e6,
            _ => 0.0,
        }
    }
}

pub struct Recorder {
    /// TCP connect + WebSocket handshake + `joined`, first connection only.
    pub connect: Histogram<u64>,
    /// Scheduled send → `ack`.
    pub ack: Histogram<u64>,
    /// Scheduled send → receipt, per member, first delivery of each seq only.
    pub delivery: Histogram<u64>,
    /// Scheduled send → actual write (how late the generator itself was).
    pub send_lag: Histogram<u64>,
    /// How long a task that became ready waited for its generator thread
    /// (see `lag_probe`): the generator's own share of every receive time.
    pub receive_lag: Histogram<u64>,
    /// Samples of `ack` that are lower bounds for sends never answered.
    pub ack_lower_bounds: u64,
    /// Per instance (`--url` index): deliveries to the clients connected to
    /// it, acks to the senders connected to it. Grown on first use.
    pub by_target: Vec<TargetLatency>,
    /// Deliveries whose sender and receiver were on the same instance.
    pub same_instance: Histogram<u64>,
    /// Deliveries that crossed from one instance to another (via Redis).
    pub cross_instance: Histogram<u64>,
    pub counters: Counters,
    /// Why first connections failed (`refused`, `timeout`, `http 404`, …).
    pub connect_errors: BTreeMap<String, u64>,
    /// `error` frames by `code`.
    pub errors: BTreeMap<String, u64>,
    /// Closes seen by clients, by close code (`abnormal`: no close frame).
    pub closes: BTreeMap<String, u64>,
    /// Deliveries received in each whole second since the origin.
    pub per_second: Vec<u64>,
    /// Scheduled times of the sends made.
    pub scheduled: Span,
    /// Actual times of the sends made.
    pub written: Span,
    /// Times of deliveries.
    pub delivered: Span,
}

impl Default for Recorder {
    fn default() -> Self {
        Self {
            connect: latency_histogram(),
            ack: latency_histogram(),
            delivery: latency_histogram(),
            send_lag: latency_histogram(),
            receive_lag: latency_histogram(),
            ack_lower_bounds: 0,
            by_target: Vec::new(),
            same_instance: latency_histogram(),
            cross_instance: latency_histogram(),
            counters: Counters::default(),
            connect_errors: BTreeMap::new(),
            errors: BTreeMap::new(),
            closes: BTreeMap::new(),
            per_second: Vec::new(),
            scheduled: Span::default(),
            written: Span::default(),
            delivered: Span::default(),
        }
    }
}

pub(crate) fn bump(map: &mut BTreeMap<String, u64>, key: &str, by: u64) {
    match map.get_mut(key) {
        Some(n) => *n += by,
        None => {
            map.insert(key.to_owned(), by);
        }
    }
}

/// The latencies seen through one instance.
#[derive(Clone)]
pub struct TargetLatency {
    pub delivery: Histogram<u64>,
    pub ack: Histogram<u64>,
}

impl Recorder {
    /// The figures of instance `index`, created on first use.
    pub fn target(&mut self, index: usize) -> &mut TargetLatency {
        if self.by_target.len() <= index {
            self.by_target.resize(
                index + 1,
                TargetLatency {
                    delivery: latency_histogram(),
                    ack: latency_histogram(),
                },
            );
        }
        &mut self.by_target[index]
    }

    /// A timed delivery to a client on instance `receiver` of a message whose
    /// sender was on instance `sender`.
    pub fn delivery_via(&mut self, receiver: usize, sender: usize, latency_us: u64) {
        self.target(receiver).delivery.saturating_record(latency_us);
        match receiver == sender {
            true => self.same_instance.saturating_record(latency_us),
            false => self.cross_instance.saturating_record(latency_us),
        }
    }

    pub fn connect_error(&mut self, kind: &str) {
        bump(&mut self.connect_errors, kind, 1);
    }

    pub fn error_frame(&mut self, code: &str) {
        bump(&mut self.errors, code, 1);
    }

    pub fn close(&mut self, code: &str) {
        bump(&mut self.closes, code, 1);
    }

    /// A delivery at `at_us` since the origin.
    pub fn delivery_at(&mut self, at_us: u64) {
        let second = (at_us / 1_000_000) as usize;
        if self.per_second.len() <= second {
            self.per_second.resize(second + 1, 0);
        }
        self.per_second[second] += 1;
        self.delivered.mark(at_us);
    }

    pub fn merge(&mut self, o: &Recorder) {
        for (mine, theirs) in [
            (&mut self.connect, &o.connect),
            (&mut self.ack, &o.ack),
            (&mut self.delivery, &o.delivery),
            (&mut self.send_lag, &o.send_lag),
            (&mut self.receive_lag, &o.receive_lag),
            (&mut self.same_instance, &o.same_instance),
            (&mut self.cross_instance, &o.cross_instance),
        ] {
            mine.add(theirs)
                .expect("histograms with equal bounds always add");
        }
        self.counters.merge(&o.counters);
        self.ack_lower_bounds += o.ack_lower_bounds;
        for (i, theirs) in o.by_target.iter().enumerate() {
            let mine = self.target(i);
            for (a, b) in [
                (&mut mine.delivery, &theirs.delivery),
                (&mut mine.ack, &theirs.ack),
            ] {
                a.add(b).expect("histograms with equal bounds always add");
            }
        }
        for (mine, theirs) in [
            (&mut self.connect_errors, &o.connect_errors),
            (&mut self.errors, &o.errors),
            (&mut self.closes, &o.closes),
        ] {
            theirs.iter().for_each(|(k, n)| bump(mine, k, *n));
        }
        if self.per_second.len() < o.per_second.len() {
            self.per_second.resize(o.per_second.len(), 0);
        }
        self.per_second
            .iter_mut()
            .zip(&o.per_second)
            .for_each(|(a, b)| *a += b);
        self.scheduled.merge(o.scheduled);
        self.written.merge(o.written);
        self.delivered.merge(o.delivered);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn merging_adds_everything() {
        let (mut a, mut b) = (Recorder::default(), Recorder::default());
        a.delivery.record(100).unwrap();
        b.delivery.record(300).unwrap();
        a.counters.sent = 2;
        b.counters.sent = 3;
        a.error_frame("rate_limited");
        b.error_frame("rate_limited");
        b.close("4000");
        a.delivery_at(500_000);
        b.delivery_at(2_500_000);
        b.scheduled.mark(7);
        a.merge(&b);
        assert_eq!(a.delivery.len(), 2);
        assert_eq!(a.counters.sent, 5);
        assert_eq!(a.errors["rate_limited"], 2);
        assert_eq!(a.closes["4000"], 1);
        assert_eq!(a.per_second, [1, 0, 1]);
        assert_eq!(a.delivered.seconds(), 2.0);
        assert_eq!(
            a.scheduled,
            Span {
                first: Some(7),
                last: Some(7)
            }
        );
    }
}
