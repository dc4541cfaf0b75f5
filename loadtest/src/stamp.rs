//! Correlation stamps carried by every message this tool sends.
//!
//! The body of a message is `<client>:<n>:<scheduled µs>` followed by padding,
//! and the `ref` of the `send` is `<n>:<scheduled µs>`. The scheduled time is in
//! microseconds since the run's origin `Instant`, which every client of the
//! process shares, so a receiver computes end-to-end latency from the body alone:
//! no lookup table, no cross-machine clock. Parsing is a few integer scans over
//! the borrowed body; nothing is allocated on the receive path.

/// Who sent a message, which of its messages it is, and when it was due.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Stamp {
    pub client: u32,
    pub n: u32,
    /// Microseconds since the run's origin at which the send was scheduled.
    pub scheduled_us: u64,
}

const PAD: char = '.';

impl Stamp {
    /// The message body, padded with '.' to at least `size` bytes.
    pub fn body(&self, size: usize) -> String {
        let mut body = format!("{}:{}:{}", self.client, self.n, self.scheduled_us);
        if body.len() < size {
            body.extend(std::iter::repeat_n(PAD, size - body.len()));
        }
        body
    }

    /// The `ref` of the `send` frame, echoed by `ack` and by `error`.
    pub fn reference(&self) -> String {
        format!("{}:{}", self.n, self.scheduled_us)
    }

    /// Reads a body written by [`Stamp::body`]; `None` for foreign messages.
    pub fn parse_body(body: &str) -> Option<Self> {
        let mut parts = body.trim_end_matches(PAD).splitn(3, ':');
        Some(Self {
            client: parts.next()?.parse().ok()?,
            n: parts.next()?.parse().ok()?,
            scheduled_us: parts.next()?.parse().ok()?,
        })
    }

    /// Reads a `ref` written by [`Stamp::reference`]: `(n, scheduled µs)`.
    pub fn parse_reference(reference: &str) -> Option<(u32, u64)> {
        let (n, scheduled) = reference.split_once(':')?;
        Some((n.parse().ok()?, scheduled.parse().ok()?))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn round_trips() {
        let s = Stamp {
            client: 42,
            n: 7,
            scheduled_us: 1_234_567,
        };
        assert_eq!(s.body(0), "42:7:1234567");
        assert_eq!(s.body(20).len(), 20);
        assert_eq!(Stamp::parse_body(&s.body(0)), Some(s));
        assert_eq!(Stamp::parse_body(&s.body(100)), Some(s));
        assert_eq!(Stamp::parse_reference(&s.reference()), Some((7, 1_234_567)));
    }

    #[test]
    fn foreign_text_is_not_a_stamp() {
        for body in ["hello", "", "1:2", "1:2:x", "a:b:c", "1:2:3:4", "-1:2:3"] {
            assert_eq!(Stamp::parse_body(body), None, "{body}");
        }
        assert_eq!(Stamp::parse_reference("c1-17"), None);
    }
}
