//! Scenario shapes beyond the seed's batches: a ramp of client counts over
//! stages (`--stages 30s:1000,60s:5000`) and uneven room sizes
//! (`--room-sizes 2x200,60x10`).
//!
//! Both are pure functions of the command line, decided before the first
//! connection like the rest of the plan, so every client computes its own
//! start time and room without coordination, and the shapes are unit-tested.

use std::time::Duration;

use crate::cli::{MAX_CLIENTS, parse_duration};

/// One stage of a ramp: over `duration`, the number of started clients goes
/// linearly from the previous stage's target to `target`.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Stage {
    pub duration: Duration,
    pub target: u32,
}

/// A ramp of client counts (k6-style stages; clients only ever join).
#[derive(Debug, Clone, PartialEq)]
pub struct Stages(Vec<Stage>);

impl Stages {
    /// Value parser for `--stages`: `DURATION:CLIENTS[,DURATION:CLIENTS…]`,
    /// targets never decreasing, the last one at least 1.
    pub fn parse(text: &str) -> Result<Self, String> {
        let mut stages = Vec::new();
        let mut previous = 0;
        for part in text.split(',') {
            let (duration, target) = part
                .trim()
                .split_once(':')
                .ok_or_else(|| format!("stage '{part}' is not DURATION:CLIENTS (e.g. 30s:1000)"))?;
            let duration = parse_duration(duration)?;
            let target: u32 = target
                .trim()
                .parse()
                .ok()
                .filter(|t| *t <= MAX_CLIENTS)
                .ok_or_else(|| format!("'{target}' is not a client count in 0..={MAX_CLIENTS}"))?;
            if target < previous {
                return Err(format!(
                    "stage '{part}' goes down from {previous} clients: clients only join, \
                     so targets must not decrease"
                ));
            }
            previous = target;
            stages.push(Stage { duration, target });
        }
        if previous == 0 {
            return Err("the stages never start a client".into());
        }
        Ok(Self(stages))
    }

    /// Clients at the end of the ramp.
    pub fn clients(&self) -> u32 {
        self.0.last().map_or(0, |s| s.target)
    }

    /// When client `i` (0-based) starts: the moment the ramp reaches `i + 1`
    /// clients.
    pub fn start_of(&self, client: u32) -> Duration {
        let wanted = u64::from(client) + 1;
        let (mut at, mut before) = (Duration::ZERO, 0u64);
        for stage in &self.0 {
            let target = u64::from(stage.target);
            if wanted <= target {
                let share = (wanted - before) as f64 / (target - before) as f64;
                return at + stage.duration.mul_f64(share);
            }
            at += stage.duration;
            before = target;
        }
        at
    }
}

/// Room sizes given one by one or as `COUNTxSIZE` groups.
#[derive(Debug, Clone, PartialEq)]
pub struct RoomSizes(Vec<u32>);

/// The most rooms `--room-sizes` may describe.
const MAX_ROOMS: usize = 1_000_000;

impl RoomSizes {
    /// Value parser for `--room-sizes`: e.g. `2x200,60x10` (2 rooms of 200,
    /// 60 of 10) or `500,100,10`.
    pub fn parse(text: &str) -> Result<Self, String> {
        let mut sizes = Vec::new();
        for part in text.split(',') {
            let part = part.trim();
            let (count, size) = part.split_once('x').unwrap_or(("1", part));
            let number = |s: &str| {
                s.trim()
                    .parse::<u32>()
                    .ok()
                    .filter(|n| (1..=MAX_CLIENTS).contains(n))
                    .ok_or_else(|| format!("'{part}' is not SIZE or COUNTxSIZE (e.g. 2x200), sizes and counts at least 1"))
            };
            let (count, size) = (number(count)? as usize, number(size)?);
            if sizes.len() + count > MAX_ROOMS {
                return Err(format!("more than {MAX_ROOMS} rooms"));
            }
            sizes.extend(std::iter::repeat_n(size, count));
        }
        let total: u64 = sizes.iter().map(|&s| u64::from(s)).sum();
        if total > u64::from(MAX_CLIENTS) {
            return Err(format!(
                "the rooms hold {total} clients, more than {MAX_CLIENTS}"
            ));
        }
        Ok(Self(sizes))
    }

    pub fn rooms(&self) -> u32 {
        self.0.len() as u32
    }

    pub fn clients(&self) -> u32 {
        self.0.iter().sum()
    }

    pub fn sizes(&self) -> impl Iterator<Item = u32> + '_ {
        self.0.iter().copied()
    }

    /// Every client's `(room, index among the room's members)`. Clients are
    /// dealt round-robin over the rooms that still have room, so every batch
    /// touches many rooms and the small rooms fill first.
    pub fn placement(&self) -> Vec<(u32, u32)> {
        let mut members = vec![0u32; self.0.len()];
        let mut open: Vec<u32> = (0..self.rooms()).collect();
        let mut placement = Vec::with_capacity(self.clients() as usize);
        while !open.is_empty() {
            open.retain(|&room| {
                let r = room as usize;
                placement.push((room, members[r]));
                members[r] += 1;
                members[r] < self.0[r]
            });
        }
        placement
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn stages_ramp_linearly_and_hold() {
        let s = Stages::parse("10s:100, 10s:100, 20s:300").unwrap();
        assert_eq!(s.clients(), 300);
        assert_eq!(s.start_of(0), Duration::from_millis(100));
        assert_eq!(s.start_of(99), Duration::from_secs(10));
        // The hold stage starts nobody; the third stage adds 200 over 20 s.
        assert_eq!(s.start_of(100), Duration::from_millis(20_100));
        assert_eq!(s.start_of(299), Duration::from_secs(40));
        let starts: Vec<_> = (0..300).map(|c| s.start_of(c)).collect();
        assert!(starts.windows(2).all(|w| w[0] <= w[1]));
    }

    #[test]
    fn bad_stages_are_rejected_clearly() {
        let err = |t| Stages::parse(t).unwrap_err();
        assert!(err("30s").contains("DURATION:CLIENTS"));
        assert!(err("30:100").contains("no unit"));
        assert!(err("10s:100,10s:50").contains("must not decrease"));
        assert!(err("10s:0").contains("never start"));
        assert!(err("10s:x").contains("client count"));
        assert!(err("10s:2000000").contains("client count"));
    }

    #[test]
    fn rooms_of_uneven_sizes_are_filled_exactly() {
        let r = RoomSizes::parse("2x5, 3").unwrap();
        assert_eq!((r.rooms(), r.clients()), (3, 13));
        let placement = r.placement();
        assert_eq!(placement.len(), 13);
        let mut sizes = [0; 3];
        for &(room, member) in &placement {
            assert_eq!(
                member, sizes[room as usize],
                "members are numbered in order"
            );
            sizes[room as usize] += 1;
        }
        assert_eq!(sizes, [5, 5, 3]);
        // The first clients are spread over every room.
        assert_eq!(&placement[..3], &[(0, 0), (1, 0), (2, 0)]);
    }

    #[test]
    fn bad_room_sizes_are_rejected_clearly() {
        for bad in ["", "0", "2x0", "0x5", "ax5", "2x", "x", "1x2000000"] {
            assert!(RoomSizes::parse(bad).is_err(), "{bad}");
        }
    }
}
