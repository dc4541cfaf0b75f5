//! The delivery audit: did every member get every message of its room, exactly
//! once, in seq order, with no gap?
//!
//! It is a pure module over event streams (`joined`, `message`, `ack`), with no
//! I/O and no clock, so it can be tested on synthetic streams and runs in O(1)
//! memory per member in the normal case.
//!
//! The rule (docs/protocol.md): a room's seqs are 1, 2, 3, … with no gap. A
//! member that joined when the room's last seq was `B` must receive every seq in
//! `B+1 ..= L`, where `L` is the room's last seq at the end of the run (the
//! highest seq anyone was acked or delivered). So `expected = L - B` per member.
//!
//! Per member the audit keeps `next`, the seq it expects next in order, and the
//! list of seqs it skipped over (`holes`), normally empty:
//! * `seq == next`: in order.
//! * `seq > next`: a gap; `next..seq` become holes (maybe filled later).
//! * `seq < next` and in a hole: arrived late, counted *out of order*.
//! * `seq < next` otherwise: seen before, a *duplicate* (or, at or below the
//!   join point, *unexpected*: history the member was never owed).
//!
//! Recovery: after a close with 1001/4000/4001 the client rejoins with
//! `since = highest seq seen` and the server replays `since+1 ..= last_seq`
//! before live traffic; those replayed deliveries count as *recovered*, and
//! they still count toward `delivered`, so a recovery that loses nothing leaves
//! `missing == 0`.
//!
//! A message that was acked to its sender but is missing at any member is
//! *lost_acked*: the server broke its durability promise.

use std::collections::HashMap;
use std::collections::hash_map::Entry;
use std::ops::Range;

use hdrhistogram::Histogram;
use serde::{Deserialize, Serialize};

use crate::stamp::Stamp;
use crate::stamp_audit::StampMember;
use crate::wire::Inbound;

/// How one delivery was classified.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Receipt {
    /// The next seq, as it should be.
    InOrder,
    /// Delivered, but `skipped` seqs before it have not arrived (yet).
    AfterGap { skipped: u64 },
    /// Filled an earlier gap: delivered, but out of order.
    OutOfOrder,
    /// Already delivered to this member.
    Duplicate,
    /// At or below the seq the member joined at: not owed to it.
    Unexpected,
}

/// One client's view of its room, across reconnects.
#[derive(Debug, Clone, Default)]
pub struct Member {
    /// `joined.last_seq` of the first join; `None` until then.
    baseline: Option<u64>,
    /// When the first join happened, µs since the run's origin.
    joined_us: Option<u64>,
    /// The seq expected next in order (highest seen + 1).
    next: u64,
    /// Seqs skipped over and not received since.
    holes: Holes,
    /// After a rejoin: deliveries up to this seq are the replay of what was missed.
    replay_upto: u64,
    delivered: u64,
    duplicated: u64,
    out_of_order: u64,
    recovered: u64,
    unexpected: u64,
}

impl Member {
    pub fn new() -> Self {
        Self::default()
    }

    pub fn has_joined(&self) -> bool {
        self.baseline.is_some()
    }

    /// The `since` to rejoin with: the highest seq seen (or the join point).
    pub fn since(&self) -> u64 {
        self.next.saturating_sub(1)
    }

    /// The highest seq seen so far (the join point before any message).
    pub fn highest(&self) -> u64 {
        self.since()
    }

    /// A `joined` frame for this member's room at `at_us` (since the run's
    /// origin). The first one fixes the join point; later ones are rejoins
    /// after a reconnect, made with `since()`.
    pub fn joined(&mut self, last_seq: u64, at_us: u64) {
        match self.baseline {
            None => {
                self.baseline = Some(last_seq);
                self.joined_us = Some(at_us);
                self.next = last_seq + 1;
            }
            Some(_) => self.replay_upto = last_seq,
        }
    }

    /// A `message` frame with this seq.
    pub fn receive(&mut self, seq: u64) -> Receipt {
        let Some(baseline) = self.baseline else {
            // `joined` always precedes messages; count a violation as unexpected.
            self.unexpected += 1;
            return Receipt::Unexpected;
        };
        let receipt = if seq == self.next {
            self.next += 1;
            Receipt::InOrder
        } else if seq > self.next {
            let skipped = seq - self.next;
            self.holes.push(self.next..seq);
            self.next = seq + 1;
            Receipt::AfterGap { skipped }
        } else if self.holes.take(seq) {
            self.out_of_order += 1;
            Receipt::OutOfOrder
        } else if seq <= baseline {
            self.unexpected += 1;
            return Receipt::Unexpected;
        } else {
            self.duplicated += 1;
            return Receipt::Duplicate;
        };
        self.delivered += 1;
        if seq <= self.replay_upto {
            self.recovered += 1;
        }
        receipt
    }

    /// The seqs this member is missing if the room ended at `room_last`.
    fn missing(&self, room_last: u64) -> impl Iterator<Item = Range<u64>> + '_ {
        let tail = self.next..room_last + 1;
        self.holes.iter().chain((!tail.is_empty()).then_some(tail))
    }
}

/// Numbers of a stream skipped over and not received since: sorted, disjoint,
/// non-empty ranges, normally none. Shared by the seq audit and the stamp
/// audit (`stamp_audit`), which tracks each sender's message numbers.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Holes(Vec<Range<u64>>);

impl Holes {
    /// Adds a hole above every existing one.
    pub fn push(&mut self, hole: Range<u64>) {
        self.0.push(hole);
    }

    /// Adds a hole below every existing one.
    pub fn push_front(&mut self, hole: Range<u64>) {
        self.0.insert(0, hole);
    }

    /// Removes `n` from the holes; false if it was not in one.
    pub fn take(&mut self, n: u64) -> bool {
        let Some(i) = self.0.iter().position(|h| h.contains(&n)) else {
            return false;
        };
        let hole = self.0.remove(i);
        let (low, high) = (hole.start..n, n + 1..hole.end);
        if !high.is_empty() {
            self.0.insert(i, high);
        }
        if !low.is_empty() {
            self.0.insert(i, low);
        }
        true
    }

    pub fn contains(&self, n: u64) -> bool {
        self.0.iter().any(|h| h.contains(&n))
    }

    /// How many numbers the holes hold.
    pub fn count(&self) -> u64 {
        self.0.iter().map(|h| h.end - h.start).sum()
    }

    pub fn iter(&self) -> impl Iterator<Item = Range<u64>> + '_ {
        self.0.iter().cloned()
    }
}

/// One client's audit record: by seq for the native protocol, by stamp for
/// a protocol without seqs.
#[derive(Debug, Clone)]
pub enum Audited {
    Seq(Member),
    Stamp(StampMember),
}

impl Audited {
    /// Whether `inbound` confirms this client's join to `room`: `joined`
    /// for the native protocol (fixing the join point at its `last_seq`),
    /// the client's own join probe for Socket.IO.
    pub fn join_confirmed(
        &mut self,
        inbound: &Inbound,
        room: &str,
        client: u32,
        at_us: u64,
    ) -> bool {
        match (self, inbound) {
            (Audited::Seq(member), Inbound::Joined { room: r, last_seq }) if r == room => {
                member.joined(*last_seq, at_us);
                true
            }
            (Audited::Stamp(member), Inbound::Probe { room: r, client: c })
                if r == room && *c == client =>
            {
                member.confirmed(at_us);
                true
            }
            _ => false,
        }
    }

    /// The `since` of a rejoin (the native protocol's; 0 for Socket.IO,
    /// which has no replay).
    pub fn since(&self) -> u64 {
        match self {
            Audited::Seq(member) => member.since(),
            Audited::Stamp(_) => 0,
        }
    }
}

/// Totals of the audit, as reported.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct AuditReport {
    /// Members (client × room) that joined at least once.
    pub members: u64,
    /// Deliveries owed: for each member, the room's seqs after its join point.
    pub expected: u64,
    /// Distinct owed seqs received (each counted once per member).
    pub delivered: u64,
    /// Owed deliveries never received: `expected - delivered`.
    pub missing: u64,
    /// Deliveries of a seq the member had already received.
    pub duplicated: u64,
    /// Deliveries that arrived after a higher seq (they filled a gap).
    pub out_of_order: u64,
    /// Deliveries replayed by a rejoin with `since` after a reconnect.
    pub recovered: u64,
    /// Deliveries at or below the member's join point (history not owed).
    pub unexpected: u64,
    /// Members with at least one missing delivery.
    pub incomplete_members: u64,
    /// Messages acked to their sender but missing at one member or more.
    pub lost_acked: u64,
    /// Acks beyond the first for a seq: the server acked one seq twice.
    pub duplicate_acks: u64,
    /// Seqs that carried two different messages (by their `(client, k)` stamp).
    pub seq_conflicts: u64,
    /// Messages (by stamp) that arrived or were acked under two different seqs.
    pub stamp_conflicts: u64,
    /// Deliveries that never happened, timed as lower bounds (run end −
    /// scheduled time) in the delivery histogram.
    pub delivery_lower_bounds: u64,
}

/// The room side of the audit: which seqs were acked, which message each seq
/// carried, and the room's last seq.
#[derive(Debug, Clone, Default)]
pub struct RoomLedger {
    /// Every `ack` received, with the message it answered.
    acked: Vec<(u64, Stamp)>,
    last_seq: u64,
    /// The message each seq carried when first seen (by a delivery or an ack).
    carried: HashMap<u64, Stamp>,
    /// Every message written to the room, for a protocol without acks
    /// (`stamp_audit`); empty otherwise.
    written: Vec<Stamp>,
    /// Seqs seen carrying a message other than the one first seen with them.
    conflicting: Vec<u64>,
}

impl RoomLedger {
    /// An `ack` of this seq reached the sender of `stamp`.
    pub fn acked(&mut self, seq: u64, stamp: Stamp) {
        self.acked.push((seq, stamp));
        self.seen(seq, stamp);
    }

    /// A delivery of `seq` carrying `stamp`.
    pub fn seen(&mut self, seq: u64, stamp: Stamp) {
        self.last_seq = self.last_seq.max(seq);
        match self.carried.entry(seq) {
            Entry::Occupied(first) if *first.get() != stamp => self.conflicting.push(seq),
            Entry::Occupied(_) => {}
            Entry::Vacant(slot) => {
                slot.insert(stamp);
            }
        }
    }

    /// A seq seen without a stamp of this run (the room's end is still known).
    pub fn seen_seq(&mut self, seq: u64) {
        self.last_seq = self.last_seq.max(seq);
    }

    /// A message was written to the room (protocols without acks only).
    pub fn written(&mut self, stamp: Stamp) {
        self.written.push(stamp);
    }

    pub fn written_mut(&mut self) -> &mut Vec<Stamp> {
        &mut self.written
    }

    pub fn merge(&mut self, other: RoomLedger) {
        self.acked.extend(other.acked);
        self.written.extend(other.written);
        self.conflicting.extend(other.conflicting);
        for (seq, stamp) in other.carried {
            self.seen(seq, stamp);
        }
    }

    /// The acked messages: seq → the message acked with it.
    pub fn acked_by_seq(&self) -> HashMap<u64, Stamp> {
        let mut by_seq = HashMap::with_capacity(self.acked.len());
        for &(seq, stamp) in &self.acked {
            by_seq.entry(seq).or_insert(stamp);
        }
        by_seq
    }

    /// The first ack of each seq; `acked` must be sorted by seq.
    fn acked_messages(&self) -> impl Iterator<Item = (u64, Stamp)> + '_ {
        let mut last = None;
        self.acked.iter().copied().filter(move |(seq, _)| {
            let first = last != Some(*seq);
            last = Some(*seq);
            first
        })
    }
}

/// A message this run sent (or was due to send) that was never answered: no
/// `ack`, no `error`. Its latencies are unknown but at least `end - scheduled`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct LostSend {
    pub room: usize,
    pub stamp: Stamp,
}

/// Audits `members` (room index, member) against the room ledgers. Deliveries
/// that never happened (a member's missing seqs, and lost sends nobody
/// received) enter `delivery` as lower bounds, `end_us - scheduled`, as wrk2
/// does; the count of those is returned in `delivery_lower_bounds`.
pub fn audit<'a>(
    rooms: &mut [RoomLedger],
    members: impl Iterator<Item = (usize, &'a Member)> + Clone,
    lost: &[LostSend],
    end_us: u64,
    delivery: &mut Histogram<u64>,
) -> AuditReport {
    for (room, member) in members.clone() {
        rooms[room].seen_seq(member.highest());
    }
    let mut report = AuditReport::default();
    let mut bounds = LowerBounds::new(delivery, end_us);
    // Per room, the seqs missing at some member (bitset over seq).
    let mut missing_somewhere: Vec<Vec<u64>> = rooms
        .iter()
        .map(|r| vec![0; (r.last_seq as usize + 1).div_ceil(64)])
        .collect();
    // Per room, when each member first joined.
    let mut joined_at: Vec<Vec<u64>> = vec![Vec::new(); rooms.len()];
    for (room, member) in members {
        let Some(baseline) = member.baseline else {
            continue;
        };
        joined_at[room].extend(member.joined_us);
        let last = rooms[room].last_seq;
        report.members += 1;
        report.expected += last.saturating_sub(baseline);
        report.delivered += member.delivered;
        report.duplicated += member.duplicated;
        report.out_of_order += member.out_of_order;
        report.recovered += member.recovered;
        report.unexpected += member.unexpected;
        let mut missing = 0;
        for range in member.missing(last) {
            missing += range.end - range.start;
            for seq in range {
                missing_somewhere[room][(seq / 64) as usize] |= 1 << (seq % 64);
                if let Some(stamp) = rooms[room].carried.get(&seq) {
                    bounds.record(stamp.scheduled_us);
                }
            }
        }
        report.missing += missing;
        report.incomplete_members += u64::from(missing > 0);
    }
    let mut seq_of: Vec<HashMap<(u32, u32), u64>> = vec![HashMap::new(); rooms.len()];
    for ((ledger, missing), seq_of) in rooms.iter_mut().zip(&missing_somewhere).zip(&mut seq_of) {
        ledger.acked.sort_unstable_by_key(|(seq, _)| *seq);
        report.duplicate_acks += ledger
            .acked
            .windows(2)
            .filter(|pair| pair[0].0 == pair[1].0)
            .count() as u64;
        report.lost_acked += ledger
            .acked_messages()
            .filter(|&(seq, _)| missing[(seq / 64) as usize] & (1 << (seq % 64)) != 0)
            .count() as u64;
        ledger.conflicting.sort_unstable();
        ledger.conflicting.dedup();
        report.seq_conflicts += ledger.conflicting.len() as u64;
        for (&seq, stamp) in &ledger.carried {
            match seq_of.entry((stamp.client, stamp.n)) {
                Entry::Occupied(other) if *other.get() != seq => report.stamp_conflicts += 1,
                Entry::Occupied(_) => {}
                Entry::Vacant(slot) => {
                    slot.insert(seq);
                }
            }
        }
    }
    // Lost sends that no member received: owed to every member that had
    // joined by their scheduled time.
    for send in lost {
        if seq_of[send.room].contains_key(&(send.stamp.client, send.stamp.n)) {
            continue; // it has a seq: its missing deliveries were timed above
        }
        bounds.owed_since(send.stamp.scheduled_us, &joined_at[send.room]);
    }
    report.delivery_lower_bounds = bounds.count;
    report
}

/// Deliveries that never happened, entered in the delivery histogram as
/// lower bounds, `end_us - scheduled`, as wrk2 does.
pub struct LowerBounds<'h> {
    histogram: &'h mut Histogram<u64>,
    end_us: u64,
    /// Lower bounds recorded.
    pub count: u64,
}

impl<'h> LowerBounds<'h> {
    pub fn new(histogram: &'h mut Histogram<u64>, end_us: u64) -> Self {
        Self {
            histogram,
            end_us,
            count: 0,
        }
    }

    /// One delivery of a message scheduled at `scheduled_us` never happened.
    pub fn record(&mut self, scheduled_us: u64) {
        self.histogram
            .saturating_record(self.end_us.saturating_sub(scheduled_us));
        self.count += 1;
    }

    /// A message scheduled at `scheduled_us` that nobody received was owed
    /// to every member that had joined by then (`joined`, µs).
    pub fn owed_since(&mut self, scheduled_us: u64, joined: &[u64]) {
        for &at in joined {
            if at <= scheduled_us {
                self.record(scheduled_us);
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn run(member: &mut Member, seqs: &[u64]) -> Vec<Receipt> {
        seqs.iter().map(|&s| member.receive(s)).collect()
    }

    fn report(room: RoomLedger, members: &[Member]) -> AuditReport {
        audited(
            room,
            members,
            &[],
            &mut crate::recorder::latency_histogram(),
        )
    }

    /// The audit with lost sends, run end at 1 s, delivery lower bounds into `h`.
    fn audited(
        room: RoomLedger,
        members: &[Member],
        lost: &[LostSend],
        h: &mut Histogram<u64>,
    ) -> AuditReport {
        let mut rooms = vec![room];
        audit(
            &mut rooms,
            members.iter().map(|m| (0, m)),
            lost,
            1_000_000,
            h,
        )
    }

    /// The message of seq `s` in these tests: client 0's `s`-th, due at `s` ms.
    fn stamp(s: u64) -> Stamp {
        Stamp {
            client: 0,
            n: s as u32,
            scheduled_us: s * 1000,
        }
    }

    fn acked(seqs: impl IntoIterator<Item = u64>) -> RoomLedger {
        let mut room = RoomLedger::default();
        seqs.into_iter().for_each(|s| room.acked(s, stamp(s)));
        room
    }

    #[test]
    fn a_clean_stream_is_complete() {
        let mut m = Member::new();
        m.joined(10, 0);
        assert!(
            run(&mut m, &[11, 12, 13])
                .iter()
                .all(|r| *r == Receipt::InOrder)
        );
        let r = report(acked([11, 12, 13]), &[m]);
        assert_eq!((r.expected, r.delivered, r.missing), (3, 3, 0));
        assert_eq!(
            r,
            AuditReport {
                members: 1,
                expected: 3,
                delivered: 3,
                ..Default::default()
            }
        );
    }

    #[test]
    fn a_gap_is_missing_and_loses_an_acked_message() {
        let mut m = Member::new();
        m.joined(0, 0);
        assert_eq!(run(&mut m, &[1, 2, 4, 5]).last(), Some(&Receipt::InOrder));
        assert_eq!(m.clone().receive(7), Receipt::AfterGap { skipped: 1 });
        let r = report(acked(1..=5), &[m]);
        assert_eq!((r.expected, r.delivered, r.missing), (5, 4, 1));
        assert_eq!((r.incomplete_members, r.lost_acked), (1, 1));
    }

    #[test]
    fn a_missing_tail_counts_even_when_no_member_saw_it() {
        let mut m = Member::new();
        m.joined(0, 0);
        run(&mut m, &[1, 2]);
        // seqs 3 and 4 were acked but reached nobody.
        let r = report(acked(1..=4), &[m]);
        assert_eq!((r.expected, r.missing, r.lost_acked), (4, 2, 2));
    }

    #[test]
    fn a_duplicate_is_counted_once_and_not_delivered_twice() {
        let mut m = Member::new();
        m.joined(0, 0);
        assert_eq!(
            run(&mut m, &[1, 2, 2, 3]),
            [
                Receipt::InOrder,
                Receipt::InOrder,
                Receipt::Duplicate,
                Receipt::InOrder
            ]
        );
        let r = report(acked(1..=3), &[m]);
        assert_eq!((r.delivered, r.duplicated, r.missing), (3, 1, 0));
    }

    #[test]
    fn a_reorder_is_out_of_order_but_not_missing() {
        let mut m = Member::new();
        m.joined(0, 0);
        assert_eq!(
            run(&mut m, &[1, 3, 2, 5, 4, 4]),
            [
                Receipt::InOrder,
                Receipt::AfterGap { skipped: 1 },
                Receipt::OutOfOrder,
                Receipt::AfterGap { skipped: 1 },
                Receipt::OutOfOrder,
                Receipt::Duplicate,
            ]
        );
        let r = report(acked(1..=5), &[m]);
        assert_eq!(
            (r.delivered, r.out_of_order, r.duplicated, r.missing),
            (5, 2, 1, 0)
        );
    }

    #[test]
    fn holes_split_when_filled_in_the_middle() {
        let mut m = Member::new();
        m.joined(0, 0);
        run(&mut m, &[1, 6, 3]);
        assert_eq!(m.holes, Holes(vec![2..3, 4..6]));
        let r = report(acked(1..=6), &[m]);
        assert_eq!((r.delivered, r.missing, r.out_of_order), (3, 3, 1));
    }

    #[test]
    fn history_before_the_join_is_unexpected() {
        let mut m = Member::new();
        m.joined(5, 0);
        assert_eq!(m.receive(4), Receipt::Unexpected);
        assert_eq!(m.receive(6), Receipt::InOrder);
        let r = report(acked(1..=6), &[m]);
        assert_eq!(
            (r.expected, r.delivered, r.unexpected, r.missing),
            (1, 1, 1, 0)
        );
    }

    #[test]
    fn a_message_before_joined_is_unexpected() {
        let mut m = Member::new();
        assert_eq!(m.receive(1), Receipt::Unexpected);
        let r = report(acked([1]), &[m]);
        assert_eq!(r.members, 0);
    }

    #[test]
    fn recovery_after_a_reconnect_loses_nothing() {
        let mut m = Member::new();
        m.joined(0, 0);
        run(&mut m, &[1, 2, 3]);
        // Closed with 4000 while 4..=6 were published; rejoin with since.
        assert_eq!(m.since(), 3);
        m.joined(6, 0);
        assert!(
            run(&mut m, &[4, 5, 6, 7])
                .iter()
                .all(|r| *r == Receipt::InOrder)
        );
        let r = report(acked(1..=7), &[m]);
        assert_eq!(
            (r.expected, r.delivered, r.recovered, r.missing),
            (7, 7, 3, 0)
        );
        assert_eq!(r.lost_acked, 0);
    }

    #[test]
    fn a_failed_recovery_is_missing() {
        let mut m = Member::new();
        m.joined(0, 0);
        run(&mut m, &[1, 2]);
        m.joined(5, 0);
        // The replay skipped 3 and 4 and resumed at 5.
        assert_eq!(m.receive(5), Receipt::AfterGap { skipped: 2 });
        let r = report(acked(1..=5), &[m]);
        assert_eq!(
            (r.delivered, r.recovered, r.missing, r.lost_acked),
            (3, 1, 2, 2)
        );
    }

    #[test]
    fn members_are_audited_against_their_own_join_point() {
        let (mut early, mut late) = (Member::new(), Member::new());
        early.joined(0, 0);
        run(&mut early, &[1, 2, 3, 4]);
        late.joined(2, 0);
        run(&mut late, &[3, 4]);
        let r = report(acked(1..=4), &[early, late]);
        assert_eq!(
            (r.members, r.expected, r.delivered, r.missing),
            (2, 6, 6, 0)
        );
    }

    #[test]
    fn an_unacked_message_missing_somewhere_is_missing_but_not_lost_acked() {
        let (mut a, mut b) = (Member::new(), Member::new());
        a.joined(0, 0);
        b.joined(0, 0);
        run(&mut a, &[1, 2]);
        run(&mut b, &[1]);
        // seq 2 reached `a`, but its ack never reached the sender.
        let r = report(acked([1]), &[a, b]);
        assert_eq!((r.expected, r.missing, r.lost_acked), (4, 1, 0));
    }

    #[test]
    fn two_acks_of_one_seq_are_reported() {
        let mut m = Member::new();
        m.joined(0, 0);
        run(&mut m, &[1, 2]);
        let mut room = acked([1, 2]);
        room.acked(2, stamp(2));
        let r = report(room, &[m]);
        assert_eq!((r.duplicate_acks, r.lost_acked, r.missing), (1, 0, 0));
    }

    #[test]
    fn a_seq_carrying_two_messages_is_a_conflict() {
        let mut m = Member::new();
        m.joined(0, 0);
        run(&mut m, &[1, 2]);
        let mut room = acked([1, 2]);
        // Another member received seq 2 with another client's message.
        room.seen(
            2,
            Stamp {
                client: 9,
                ..stamp(2)
            },
        );
        room.seen(
            2,
            Stamp {
                client: 9,
                ..stamp(2)
            },
        );
        let r = report(room, &[m]);
        assert_eq!((r.seq_conflicts, r.stamp_conflicts), (1, 0));
    }

    #[test]
    fn one_message_under_two_seqs_is_a_conflict_even_when_the_seqs_look_perfect() {
        let mut m = Member::new();
        m.joined(0, 0);
        // Seqs 1, 2 both carry message 1: in order, nothing missing by seq.
        assert!(run(&mut m, &[1, 2]).iter().all(|r| *r == Receipt::InOrder));
        let mut room = acked([1]);
        room.seen(2, stamp(1));
        let r = report(room, &[m]);
        assert_eq!((r.missing, r.duplicated), (0, 0));
        assert_eq!((r.seq_conflicts, r.stamp_conflicts), (0, 1));
    }

    #[test]
    fn conflicts_found_by_different_threads_survive_the_merge() {
        let (mut a, mut b) = (acked([1]), RoomLedger::default());
        b.seen(
            1,
            Stamp {
                client: 3,
                ..stamp(1)
            },
        );
        a.merge(b);
        let r = report(a, &[]);
        assert_eq!(r.seq_conflicts, 1);
    }

    #[test]
    fn missing_deliveries_are_timed_as_lower_bounds() {
        let mut m = Member::new();
        m.joined(0, 0);
        run(&mut m, &[1]);
        let mut h = crate::recorder::latency_histogram();
        // seq 2 (due at 2 ms) never arrived; the run ended at 1 s.
        let r = audited(acked([1, 2]), &[m], &[], &mut h);
        assert_eq!((r.missing, r.delivery_lower_bounds), (1, 1));
        assert_eq!(h.len(), 1);
        assert!(h.equivalent(h.max(), 998_000), "{}", h.max());
    }

    #[test]
    fn lost_sends_nobody_received_are_owed_to_members_joined_before() {
        let (mut early, mut late) = (Member::new(), Member::new());
        early.joined(0, 0);
        late.joined(0, 500_000);
        let lost = LostSend {
            room: 0,
            stamp: Stamp {
                client: 1,
                n: 0,
                scheduled_us: 200_000,
            },
        };
        let mut h = crate::recorder::latency_histogram();
        let r = audited(RoomLedger::default(), &[early, late], &[lost], &mut h);
        // Only the member that had joined by 200 ms was owed it.
        assert_eq!(r.delivery_lower_bounds, 1);
        assert!(h.equivalent(h.max(), 800_000), "{}", h.max());
        // A lost send that has a seq is timed through the members missing it.
        let mut m = Member::new();
        m.joined(0, 0);
        let mut room = RoomLedger::default();
        room.seen(1, stamp(1));
        let lost = LostSend {
            room: 0,
            stamp: stamp(1),
        };
        let r = audited(room, &[m], &[lost], &mut h);
        assert_eq!((r.missing, r.delivery_lower_bounds), (1, 1));
    }
}
