//! `--hdr-log FILE`: the latencies of every second of the run as an
//! HdrHistogram interval log, the format of HdrHistogram's own
//! `HistogramLogWriter` (V2 histograms, deflate-compressed, base64), so the
//! whole distribution of each second can be replayed by HdrHistogram's tools
//! (`HistogramLogProcessor`, the log plotters) or re-read with
//! `hdrhistogram::serialization::interval_log::IntervalLogIterator`, where
//! the JSON time series only keeps p50 and p99.
//!
//! The seconds are the time series' (`timeseries`): two histograms per
//! second, tagged `delivery` and `ack` (an empty one is written too, so every
//! second has both), values in microseconds, timestamps in seconds since the
//! run's start (`BaseTime`, also `StartTime`).

use std::io::{self, Write};
use std::time::{Duration, SystemTime};

use hdrhistogram::serialization::V2DeflateSerializer;
use hdrhistogram::serialization::interval_log::{IntervalLogWriter, IntervalLogWriterBuilder, Tag};

use crate::timeseries::Second;

/// An interval log being written.
pub struct HdrLog<'a, W: Write> {
    writer: IntervalLogWriter<'a, 'a, W, V2DeflateSerializer>,
}

impl<'a, W: Write> HdrLog<'a, W> {
    /// Writes the log's header for a run that started at `start`.
    pub fn begin(
        out: &'a mut W,
        serializer: &'a mut V2DeflateSerializer,
        start: SystemTime,
    ) -> io::Result<Self> {
        let writer = IntervalLogWriterBuilder::new()
            .add_comment("chat-load latencies per second; values in microseconds")
            .add_comment("tags: delivery (send to every member), ack (send to ack)")
            .with_start_time(start)
            .with_base_time(start)
            // The max column (for humans) in milliseconds.
            .with_max_value_divisor(1000.0)
            .begin_log_with(out, serializer)?;
        Ok(Self { writer })
    }

    /// Writes the histograms of one second.
    pub fn write(&mut self, second: &Second) -> io::Result<()> {
        let start = Duration::from_secs(second.t.saturating_sub(1));
        for (tag, histogram) in [
            ("delivery", &second.window.delivery),
            ("ack", &second.window.ack),
        ] {
            self.writer
                .write_histogram(histogram, start, Duration::from_secs(1), Tag::new(tag))
                .map_err(|e| io::Error::other(e.to_string()))?;
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use base64::Engine;
    use base64::engine::general_purpose::STANDARD;
    use hdrhistogram::Histogram;
    use hdrhistogram::serialization::Deserializer;
    use hdrhistogram::serialization::interval_log::{IntervalLogIterator, LogEntry};

    use super::*;
    use crate::timeseries::{Counts, Window};

    fn second(t: u64, delivery_us: &[u64]) -> Second {
        let mut window = Window::default();
        for &us in delivery_us {
            window.delivery.record(us).unwrap();
        }
        window.ack.record(500).unwrap();
        Second {
            t,
            counts: Counts::default(),
            window,
        }
    }

    #[test]
    fn the_log_reads_back_with_the_crates_reader() {
        let start = SystemTime::UNIX_EPOCH + Duration::from_secs(1_764_097_200);
        let seconds = [second(1, &[1_000, 2_000, 3_000]), second(2, &[])];
        let mut out = Vec::new();
        let mut serializer = V2DeflateSerializer::new();
        {
            let mut log = HdrLog::begin(&mut out, &mut serializer, start).unwrap();
            seconds.iter().for_each(|s| log.write(s).unwrap());
        }
        let text = String::from_utf8(out.clone()).unwrap();
        assert!(text.contains("#[BaseTime: 1764097200.000"), "{text}");
        let mut read = Vec::new();
        for entry in IntervalLogIterator::new(&out) {
            match entry.unwrap() {
                LogEntry::Interval(h) => {
                    let bytes = STANDARD.decode(h.encoded_histogram()).unwrap();
                    let histogram: Histogram<u64> = Deserializer::new()
                        .deserialize(&mut bytes.as_slice())
                        .unwrap();
                    read.push((
                        h.tag().unwrap().as_str().to_owned(),
                        h.start_timestamp(),
                        histogram,
                    ));
                }
                LogEntry::BaseTime(t) | LogEntry::StartTime(t) => {
                    assert_eq!(t, Duration::from_secs(1_764_097_200))
                }
            }
        }
        let summary: Vec<_> = read
            .iter()
            .map(|(tag, at, h)| (tag.as_str(), at.as_secs(), h.len()))
            .collect();
        assert_eq!(
            summary,
            [
                ("delivery", 0, 3),
                ("ack", 0, 1),
                ("delivery", 1, 0),
                ("ack", 1, 1)
            ]
        );
        // The whole distribution survives, not just a few quantiles.
        assert_eq!(read[0].2, seconds[0].window.delivery);
    }
}
