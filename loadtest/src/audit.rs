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
//! Recovery: after a close with 1001/4000 the client rejoins with
//! `since = highest seq seen` and the server replays `since+1 ..= last_seq`
//! before live traffic; those replayed deliveries count as *recovered*, and
//! they still count toward `delivered`, so a recovery that loses nothing leaves
//! `missing == 0`.
//!
//! A message that was acked to its sender but is missing at any member is
//! *lost_acked*: the server broke its durability promise.

use std::ops::Range;

use serde::Serialize;

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
    /// The seq expected next in order (highest seen + 1).
    next: u64,
    /// Seqs skipped over and not received since; sorted, disjoint, non-empty.
    holes: Vec<Range<u64>>,
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

    /// A `joined` frame for this member's room. The first one fixes the join
    /// point; later ones are rejoins after a reconnect, made with `since()`.
    pub fn joined(&mut self, last_seq: u64) {
        match self.baseline {
            None => {
                self.baseline = Some(last_seq);
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
        } else if self.take_hole(seq) {
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

    /// Removes `seq` from the holes; false if it was not in one.
    fn take_hole(&mut self, seq: u64) -> bool {
        let Some(i) = self.holes.iter().position(|h| h.contains(&seq)) else {
            return false;
        };
        let hole = self.holes.remove(i);
        let (low, high) = (hole.start..seq, seq + 1..hole.end);
        if !high.is_empty() {
            self.holes.insert(i, high);
        }
        if !low.is_empty() {
            self.holes.insert(i, low);
        }
        true
    }

    /// The seqs this member is missing if the room ended at `room_last`.
    fn missing(&self, room_last: u64) -> impl Iterator<Item = Range<u64>> + '_ {
        let tail = self.next..room_last + 1;
        self.holes
            .iter()
            .cloned()
            .chain((!tail.is_empty()).then_some(tail))
    }
}

/// Totals of the audit, as reported.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize)]
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
}

/// The room side of the audit: which seqs were acked, and the room's last seq.
#[derive(Debug, Clone, Default)]
pub struct RoomLedger {
    acked: Vec<u64>,
    last_seq: u64,
}

impl RoomLedger {
    /// An `ack` of this seq reached its sender.
    pub fn acked(&mut self, seq: u64) {
        self.acked.push(seq);
        self.last_seq = self.last_seq.max(seq);
    }

    /// Any seq seen in the room (a delivery), so the room's end is known even
    /// when acks were lost.
    pub fn seen(&mut self, seq: u64) {
        self.last_seq = self.last_seq.max(seq);
    }

    pub fn merge(&mut self, other: RoomLedger) {
        self.acked.extend(other.acked);
        self.last_seq = self.last_seq.max(other.last_seq);
    }
}

/// Audits `members` (room index, member) against the room ledgers.
pub fn audit<'a>(
    rooms: &mut [RoomLedger],
    members: impl Iterator<Item = (usize, &'a Member)> + Clone,
) -> AuditReport {
    for (room, member) in members.clone() {
        rooms[room].seen(member.highest());
    }
    let mut report = AuditReport::default();
    // Per room, the seqs missing at some member (bitset over seq).
    let mut missing_somewhere: Vec<Vec<u64>> = rooms
        .iter()
        .map(|r| vec![0; (r.last_seq as usize + 1).div_ceil(64)])
        .collect();
    for (room, member) in members {
        let Some(baseline) = member.baseline else {
            continue;
        };
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
            }
        }
        report.missing += missing;
        report.incomplete_members += u64::from(missing > 0);
    }
    for (ledger, missing) in rooms.iter_mut().zip(&missing_somewhere) {
        ledger.acked.sort_unstable();
        ledger.acked.dedup();
        report.lost_acked += ledger
            .acked
            .iter()
            .filter(|&&seq| missing[(seq / 64) as usize] & (1 << (seq % 64)) != 0)
            .count() as u64;
    }
    report
}

#[cfg(test)]
mod tests {
    use super::*;

    fn run(member: &mut Member, seqs: &[u64]) -> Vec<Receipt> {
        seqs.iter().map(|&s| member.receive(s)).collect()
    }

    fn report(room: RoomLedger, members: &[Member]) -> AuditReport {
        let mut rooms = vec![room];
        audit(&mut rooms, members.iter().map(|m| (0, m)))
    }

    fn acked(seqs: impl IntoIterator<Item = u64>) -> RoomLedger {
        let mut room = RoomLedger::default();
        seqs.into_iter().for_each(|s| room.acked(s));
        room
    }

    #[test]
    fn a_clean_stream_is_complete() {
        let mut m = Member::new();
        m.joined(10);
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
        m.joined(0);
        assert_eq!(run(&mut m, &[1, 2, 4, 5]).last(), Some(&Receipt::InOrder));
        assert_eq!(m.clone().receive(7), Receipt::AfterGap { skipped: 1 });
        let r = report(acked(1..=5), &[m]);
        assert_eq!((r.expected, r.delivered, r.missing), (5, 4, 1));
        assert_eq!((r.incomplete_members, r.lost_acked), (1, 1));
    }

    #[test]
    fn a_missing_tail_counts_even_when_no_member_saw_it() {
        let mut m = Member::new();
        m.joined(0);
        run(&mut m, &[1, 2]);
        // seqs 3 and 4 were acked but reached nobody.
        let r = report(acked(1..=4), &[m]);
        assert_eq!((r.expected, r.missing, r.lost_acked), (4, 2, 2));
    }

    #[test]
    fn a_duplicate_is_counted_once_and_not_delivered_twice() {
        let mut m = Member::new();
        m.joined(0);
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
        m.joined(0);
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
        m.joined(0);
        run(&mut m, &[1, 6, 3]);
        assert_eq!(m.holes, [2..3, 4..6]);
        let r = report(acked(1..=6), &[m]);
        assert_eq!((r.delivered, r.missing, r.out_of_order), (3, 3, 1));
    }

    #[test]
    fn history_before_the_join_is_unexpected() {
        let mut m = Member::new();
        m.joined(5);
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
        m.joined(0);
        run(&mut m, &[1, 2, 3]);
        // Closed with 4000 while 4..=6 were published; rejoin with since.
        assert_eq!(m.since(), 3);
        m.joined(6);
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
        m.joined(0);
        run(&mut m, &[1, 2]);
        m.joined(5);
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
        early.joined(0);
        run(&mut early, &[1, 2, 3, 4]);
        late.joined(2);
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
        a.joined(0);
        b.joined(0);
        run(&mut a, &[1, 2]);
        run(&mut b, &[1]);
        // seq 2 reached `a`, but its ack never reached the sender.
        let r = report(acked([1]), &[a, b]);
        assert_eq!((r.expected, r.missing, r.lost_acked), (4, 1, 0));
    }
}
