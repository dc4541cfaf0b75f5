//! The delivery audit for a protocol without seqs (`--protocol socketio`):
//! by stamp, per member and per sender.
//!
//! With no seqs there is no room order to check and no join point to count
//! from, so the audit relies on what chat-load itself knows: every message a
//! client wrote (its stamp: client, number `n`, scheduled time), and when each
//! member's join was confirmed (its own join probe came back, see
//! `socketio`). The rules:
//! * a member is owed every message its own client wrote, and every message
//!   of its room scheduled after its join was confirmed: the server handled
//!   the join before it echoed the probe, and a message scheduled later was
//!   written later still. A message scheduled before that may or may not be
//!   delivered; if it is, it counts as *unexpected* (not owed), not delivered;
//! * one sender's messages travel over one connection, so they must arrive
//!   in `n` order: per sender, a member keeps the next `n` it expects and the
//!   numbers skipped over ([`Holes`]), as the seq audit does per room.
//!   A number below the next one that fills a hole (or lies below the first
//!   one seen) arrived *out of order*; one seen before is *duplicated*;
//! * `expected` is what was owed, `missing` what of it never arrived, timed
//!   as lower bounds like the native audit's. Messages due but never written
//!   count for the members confirmed by their scheduled time.
//!
//! Acks, seq and stamp conflicts do not exist in this protocol and stay 0.
//! Memory is one entry per (member, sender) pair, bounded by
//! [`MAX_SENDER_PAIRS`].

use std::collections::HashMap;
use std::sync::atomic::{AtomicU32, AtomicU64, Ordering};

use hdrhistogram::Histogram;

use crate::audit::{AuditReport, Holes, LostSend, LowerBounds, Receipt, RoomLedger};
use crate::stamp::Stamp;

/// The most (member, sender) pairs one run may audit by stamp: about
/// 50 bytes each, so about 200 MB (one room of 2,000 members, 40,000
/// clients in rooms of 100, or 200,000 in rooms of 20).
pub const MAX_SENDER_PAIRS: u64 = 4_000_000;

/// One sender's messages as one member received them.
#[derive(Debug, Clone)]
struct SenderTrack {
    /// The lowest `n` received.
    first: u64,
    /// The highest `n` received, plus one.
    next: u64,
    /// Numbers between `first` and `next` not received.
    holes: Holes,
}

impl SenderTrack {
    fn has(&self, n: u64) -> bool {
        (self.first..self.next).contains(&n) && !self.holes.contains(n)
    }
}

/// One client's view of its room, by stamp, across reconnects.
#[derive(Debug, Clone)]
pub struct StampMember {
    client: u32,
    /// When the first join was confirmed, µs since the run's origin.
    confirmed_us: Option<u64>,
    senders: HashMap<u32, SenderTrack>,
    duplicated: u64,
    out_of_order: u64,
    unexpected: u64,
    /// Members of the room before this index are known to be caught up.
    caught_up: usize,
}

impl StampMember {
    pub fn new(client: u32) -> Self {
        Self {
            client,
            confirmed_us: None,
            senders: HashMap::new(),
            duplicated: 0,
            out_of_order: 0,
            unexpected: 0,
            caught_up: 0,
        }
    }

    /// The server confirmed a join at `at_us`; the first one fixes what is owed.
    pub fn confirmed(&mut self, at_us: u64) {
        self.confirmed_us.get_or_insert(at_us);
    }

    /// Whether a message is owed to this member (see the module docs).
    fn owes(&self, stamp: &Stamp) -> bool {
        match self.confirmed_us {
            None => false,
            Some(confirmed) => stamp.client == self.client || stamp.scheduled_us > confirmed,
        }
    }

    /// A delivery of the message `stamp`.
    pub fn receive(&mut self, stamp: Stamp) -> Receipt {
        if !self.owes(&stamp) {
            self.unexpected += 1;
            return Receipt::Unexpected;
        }
        let n = u64::from(stamp.n);
        let Some(track) = self.senders.get_mut(&stamp.client) else {
            let track = SenderTrack {
                first: n,
                next: n + 1,
                holes: Holes::default(),
            };
            self.senders.insert(stamp.client, track);
            return Receipt::InOrder;
        };
        if n == track.next {
            track.next += 1;
            Receipt::InOrder
        } else if n > track.next {
            track.holes.push(track.next..n);
            let skipped = n - track.next;
            track.next = n + 1;
            Receipt::AfterGap { skipped }
        } else if n < track.first {
            track.holes.push_front(n + 1..track.first);
            track.first = n;
            self.out_of_order += 1;
            Receipt::OutOfOrder
        } else if track.holes.take(n) {
            self.out_of_order += 1;
            Receipt::OutOfOrder
        } else {
            self.duplicated += 1;
            Receipt::Duplicate
        }
    }

    fn has(&self, stamp: &Stamp) -> bool {
        self.senders
            .get(&stamp.client)
            .is_some_and(|t| t.has(u64::from(stamp.n)))
    }

    /// Whether this member has the last message of every member of its room
    /// (`members`, client ids) that it is owed, by what each one wrote
    /// (`sent`, by client id). Called once the room is all sent; resumes
    /// where the previous call stopped.
    pub fn caught_up(&mut self, members: &[u32], sent: &[SentMark]) -> bool {
        while let Some(&sender) = members.get(self.caught_up) {
            let last = sent.get(sender as usize).and_then(|mark| mark.last(sender));
            if let Some(last) = last
                && self.owes(&last)
                && !self.has(&last)
            {
                return false;
            }
            self.caught_up += 1;
        }
        true
    }
}

/// What one client has written so far, readable by every generator thread:
/// the number of messages and the scheduled time of the last one.
#[derive(Debug, Default)]
pub struct SentMark {
    count: AtomicU32,
    last_us: AtomicU64,
}

impl SentMark {
    /// Message `stamp` was written (messages are written in `n` order).
    pub fn wrote(&self, stamp: &Stamp) {
        self.last_us.store(stamp.scheduled_us, Ordering::Relaxed);
        self.count.store(stamp.n + 1, Ordering::Release);
    }

    /// The last message `client` (whose mark this is) wrote, if any.
    fn last(&self, client: u32) -> Option<Stamp> {
        let count = self.count.load(Ordering::Acquire);
        (count > 0).then(|| Stamp {
            client,
            n: count - 1,
            scheduled_us: self.last_us.load(Ordering::Relaxed),
        })
    }
}

/// The (member, sender) pairs a run of `room_sizes` audits.
pub fn sender_pairs(room_sizes: impl Iterator<Item = u64>) -> u64 {
    room_sizes.map(|size| size * size).sum()
}

/// Audits `members` (room index, member) against what was written to each
/// room (`RoomLedger::written`); missing deliveries and lost sends are timed
/// as lower bounds into `delivery`.
pub fn audit<'a>(
    rooms: &mut [RoomLedger],
    members: impl Iterator<Item = (usize, &'a StampMember)>,
    lost: &[LostSend],
    end_us: u64,
    delivery: &mut Histogram<u64>,
) -> AuditReport {
    // Per room and sender, its messages in `n` order.
    let by_sender: Vec<HashMap<u32, Vec<Stamp>>> = rooms
        .iter_mut()
        .map(|room| {
            let mut senders: HashMap<u32, Vec<Stamp>> = HashMap::new();
            for stamp in room.written_mut().drain(..) {
                senders.entry(stamp.client).or_default().push(stamp);
            }
            senders
                .values_mut()
                .for_each(|messages| messages.sort_unstable_by_key(|s| s.n));
            senders
        })
        .collect();
    let mut report = AuditReport::default();
    let mut bounds = LowerBounds::new(delivery, end_us);
    let mut joined_at: Vec<Vec<u64>> = vec![Vec::new(); rooms.len()];
    for (room, member) in members {
        let Some(confirmed) = member.confirmed_us else {
            continue;
        };
        joined_at[room].push(confirmed);
        report.members += 1;
        report.duplicated += member.duplicated;
        report.out_of_order += member.out_of_order;
        report.unexpected += member.unexpected;
        let mut missing = 0;
        for (&sender, messages) in &by_sender[room] {
            let owed_from = match sender == member.client {
                true => 0,
                false => messages.partition_point(|s| s.scheduled_us <= confirmed),
            };
            let owed = &messages[owed_from..];
            report.expected += owed.len() as u64;
            for stamp in owed.iter().filter(|s| !member.has(s)) {
                missing += 1;
                bounds.record(stamp.scheduled_us);
            }
        }
        report.missing += missing;
        report.incomplete_members += u64::from(missing > 0);
    }
    report.delivered = report.expected - report.missing;
    for send in lost {
        bounds.owed_since(send.stamp.scheduled_us, &joined_at[send.room]);
    }
    report.delivery_lower_bounds = bounds.count;
    report
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Message `n` of `client`, scheduled at `at` ms.
    fn stamp(client: u32, n: u32, at: u64) -> Stamp {
        Stamp {
            client,
            n,
            scheduled_us: at * 1000,
        }
    }

    fn member(client: u32, confirmed_ms: u64) -> StampMember {
        let mut m = StampMember::new(client);
        m.confirmed(confirmed_ms * 1000);
        m
    }

    /// The audit of one room where `written` was sent, run end at 1 s.
    fn audited(written: &[Stamp], members: &[StampMember], lost: &[LostSend]) -> AuditReport {
        let mut room = RoomLedger::default();
        written.iter().for_each(|s| room.written(*s));
        let mut h = crate::recorder::latency_histogram();
        let report = audit(
            &mut [room],
            members.iter().map(|m| (0, m)),
            lost,
            1_000_000,
            &mut h,
        );
        assert_eq!(h.len(), report.delivery_lower_bounds);
        report
    }

    #[test]
    fn a_clean_room_is_complete() {
        let written: Vec<_> = (0..3)
            .flat_map(|n| [stamp(1, n, 10 + u64::from(n)), stamp(2, n, 20)])
            .collect();
        let mut a = member(1, 5);
        let mut b = member(2, 5);
        for s in &written {
            assert_eq!(a.receive(*s), Receipt::InOrder);
            assert_eq!(b.receive(*s), Receipt::InOrder);
        }
        let r = audited(&written, &[a, b], &[]);
        assert_eq!(
            (r.members, r.expected, r.delivered, r.missing),
            (2, 12, 12, 0)
        );
        assert_eq!((r.duplicated, r.out_of_order, r.unexpected), (0, 0, 0));
    }

    #[test]
    fn drops_duplicates_and_reorders_are_caught_per_sender() {
        let written: Vec<_> = (0..5).map(|n| stamp(7, n, 10)).collect();
        let mut m = member(1, 5);
        assert_eq!(m.receive(written[1]), Receipt::InOrder);
        assert_eq!(m.receive(written[3]), Receipt::AfterGap { skipped: 1 });
        assert_eq!(m.receive(written[3]), Receipt::Duplicate);
        assert_eq!(m.receive(written[0]), Receipt::OutOfOrder);
        assert_eq!(m.receive(written[0]), Receipt::Duplicate);
        let r = audited(&written, &[m], &[]);
        // 2 and 4 never arrived; 0 came after 1; 3 and 0 came twice.
        assert_eq!((r.expected, r.delivered, r.missing), (5, 3, 2));
        assert_eq!(
            (r.duplicated, r.out_of_order, r.incomplete_members),
            (2, 1, 1)
        );
        assert_eq!(r.delivery_lower_bounds, 2);
    }

    #[test]
    fn only_messages_after_the_confirmed_join_are_owed() {
        // Sender 2 wrote at 10, 20, 30 ms; member 1 was confirmed at 20 ms.
        let written = [stamp(2, 0, 10), stamp(2, 1, 20), stamp(2, 2, 30)];
        let mut m = member(1, 20);
        assert_eq!(m.receive(written[1]), Receipt::Unexpected);
        assert_eq!(m.receive(written[2]), Receipt::InOrder);
        let r = audited(&written, &[m], &[]);
        assert_eq!(
            (r.expected, r.delivered, r.missing, r.unexpected),
            (1, 1, 0, 1)
        );
        // Its own messages are owed whatever their time.
        let own = [stamp(1, 0, 10)];
        let r = audited(&own, &[member(1, 20)], &[]);
        assert_eq!((r.expected, r.missing), (1, 1));
        // Nothing is owed before a join was confirmed.
        let mut unjoined = StampMember::new(1);
        assert_eq!(unjoined.receive(written[2]), Receipt::Unexpected);
        assert_eq!(audited(&written, &[unjoined], &[]).members, 0);
    }

    #[test]
    fn a_server_that_delivers_nothing_misses_everything() {
        let written: Vec<_> = (0..4).map(|n| stamp(2, n, 10)).collect();
        let r = audited(&written, &[member(1, 5), member(2, 5)], &[]);
        assert_eq!((r.expected, r.delivered, r.missing), (8, 0, 8));
        assert_eq!(r.incomplete_members, 2);
    }

    #[test]
    fn lost_sends_are_owed_to_members_confirmed_before() {
        let lost = [LostSend {
            room: 0,
            stamp: stamp(2, 0, 50),
        }];
        let r = audited(&[], &[member(1, 40), member(3, 60)], &lost);
        assert_eq!((r.expected, r.missing, r.delivery_lower_bounds), (0, 0, 1));
    }

    #[test]
    fn caught_up_waits_for_each_senders_last_owed_message() {
        let sent: Vec<SentMark> = (0..3).map(|_| SentMark::default()).collect();
        let mut m = member(0, 15);
        let members = [0, 1, 2];
        assert!(m.caught_up(&members, &sent), "nothing written yet");
        m.caught_up = 0;
        // Client 1 wrote two messages, the last one owed; client 2 one not owed.
        sent[1].wrote(&stamp(1, 0, 10));
        sent[1].wrote(&stamp(1, 1, 20));
        sent[2].wrote(&stamp(2, 0, 10));
        assert!(!m.caught_up(&members, &sent));
        m.receive(stamp(1, 1, 20));
        assert!(m.caught_up(&members, &sent));
    }
}
