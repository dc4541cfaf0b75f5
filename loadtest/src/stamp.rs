//! Correlation stamps carried by every message this tool sends.
//!
//! The body of a message is `<client>:<n>:<scheduled µs>` followed by padding,
//! and the `ref` of the `send` is `<n>:<scheduled µs>`. The scheduled time is in
//! microseconds since the run's origin `Instant`, which every client of the
//! process shares, so a receiver computes end-to-end latency from the body alone:
//! no lookup table, no cross-machine clock. Parsing is a few integer scans over
//! the borrowed body's head (the padding is never scanned: only its last byte
//! is checked); nothing is allocated on the receive path, and writing a stamp
//! appends to the caller's buffer, so a send costs one allocation, its frame.

/// Who sent a message, which of its messages it is, and when it was due.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Stamp {
    pub client: u32,
    pub n: u32,
    /// Microseconds since the run's origin at which the send was scheduled.
    pub scheduled_us: u64,
}

const PAD: u8 = b'.';

impl Stamp {
    /// The message body, padded with '.' to at least `size` bytes.
    pub fn body(&self, size: usize) -> String {
        let mut body = String::with_capacity(size.max(32));
        self.write_body(&mut body, size);
        body
    }

    /// Appends [`Stamp::body`] to `out`.
    pub fn write_body(&self, out: &mut String, size: usize) {
        let start = out.len();
        let mut number = itoa::Buffer::new();
        out.push_str(number.format(self.client));
        out.push(':');
        self.write_reference(out);
        let written = out.len() - start;
        if written < size {
            out.extend(std::iter::repeat_n(PAD as char, size - written));
        }
    }

    /// The `ref` of the `send` frame, echoed by `ack` and by `error`.
    pub fn reference(&self) -> String {
        let mut reference = String::with_capacity(24);
        self.write_reference(&mut reference);
        reference
    }

    /// Appends [`Stamp::reference`] to `out`.
    pub fn write_reference(&self, out: &mut String) {
        let mut number = itoa::Buffer::new();
        out.push_str(number.format(self.n));
        out.push(':');
        out.push_str(number.format(self.scheduled_us));
    }

    /// Reads a body written by [`Stamp::body`]; `None` for foreign messages.
    /// After the three numbers comes either nothing or padding; only the
    /// padding's last byte is checked, so a 4 KiB body costs what a short one does.
    pub fn parse_body(body: &str) -> Option<Self> {
        let bytes = body.as_bytes();
        let (client, rest) = leading_number(bytes)?;
        let (n, rest) = leading_number(rest.strip_prefix(b":")?)?;
        let (scheduled_us, rest) = leading_number(rest.strip_prefix(b":")?)?;
        let padded = rest.first() == Some(&PAD) && rest.last() == Some(&PAD);
        (rest.is_empty() || padded).then_some(Self {
            client: u32::try_from(client).ok()?,
            n: u32::try_from(n).ok()?,
            scheduled_us,
        })
    }

    /// Reads a `ref` written by [`Stamp::reference`]: `(n, scheduled µs)`.
    pub fn parse_reference(reference: &str) -> Option<(u32, u64)> {
        let (n, rest) = leading_number(reference.as_bytes())?;
        let (scheduled, rest) = leading_number(rest.strip_prefix(b":")?)?;
        rest.is_empty()
            .then_some((u32::try_from(n).ok()?, scheduled))
    }
}

/// The decimal number at the start of `text` (at least one digit, no sign, no
/// overflow) and what follows it.
pub(crate) fn leading_number(text: &[u8]) -> Option<(u64, &[u8])> {
    let digits = text.iter().take_while(|b| b.is_ascii_digit()).count();
    let (head, rest) = text.split_at(digits);
    let value = match digits {
        0 => return None,
        // Below 10^19: no u64 overflow possible, so no checks per digit.
        1..=19 => head
            .iter()
            .fold(0u64, |acc, &d| acc * 10 + u64::from(d - b'0')),
        _ => head.iter().try_fold(0u64, |acc, &d| {
            acc.checked_mul(10)?.checked_add(u64::from(d - b'0'))
        })?,
    };
    Some((value, rest))
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
        for body in [
            "hello",
            "",
            "1:2",
            "1:2:x",
            "a:b:c",
            "1:2:3:4",
            "-1:2:3",
            "1:2:3.x",
            "4294967296:1:1",
            "1:2:99999999999999999999",
        ] {
            assert_eq!(Stamp::parse_body(body), None, "{body}");
        }
        for reference in ["c1-17", "1:", ":1", "1:2:3", "1:2x"] {
            assert_eq!(Stamp::parse_reference(reference), None, "{reference}");
        }
    }
}
