//! The shape of a run, decided before the first connection: which client goes
//! to which room and instance, when it starts, from which source address, and
//! when each of its messages is due.
//!
//! Everything here is a pure function of the arguments, so the placement rules
//! are unit-tested and every client can compute its own share without
//! coordination:
//! * rooms: client `i` is in room `i % rooms`, so each room gets an even share
//!   and every batch touches every room;
//! * instances: the `m`-th member of room `r` connects to instance `(r + m) % urls`,
//!   so with two or more instances every room of two or more members spans
//!   instances and the Redis cross-instance path is part of every run;
//! * batches: client `i` starts at `(i / batch_size) * batch_interval`;
//! * timetable (open loop): after its `joined`, client `i` sends message `k` at
//!   `joined + phase(i) + k / rate`, where the phase spreads a batch's clients
//!   over one period instead of firing them all at once, in an order unrelated
//!   to the order they join in (see [`Plan::phase`]);
//! * shards (`--shard I/N`): generator `I` of `N` runs the clients numbered
//!   `I` modulo `N` and computes the same plan as the others, so the shards
//!   together run exactly the clients, rooms and timetable of one generator.

use std::net::{IpAddr, Ipv4Addr, SocketAddr};
use std::time::Duration;

use crate::auth::Tokens;
use crate::cli::{Args, Shard};
use crate::endpoint::Endpoint;
use crate::protocol::Protocol;
use crate::scenario::{RoomSizes, Stages};
use crate::tls::Tls;

/// One instance under load, resolved.
#[derive(Debug, Clone)]
pub struct Target {
    pub endpoint: Endpoint,
    pub addr: SocketAddr,
}

#[derive(Debug, Clone)]
pub struct Plan {
    pub run_id: String,
    pub targets: Vec<Target>,
    pub protocol: Protocol,
    pub clients: u32,
    pub rooms: u32,
    pub messages: u32,
    pub batch_size: u32,
    pub batch_interval: Duration,
    pub rate: f64,
    /// `1 / rate`, computed once: every client asks for it on every turn.
    period: Duration,
    pub closed_loop: bool,
    pub body_size: usize,
    pub source_ips: Option<u8>,
    pub max_reconnects: u32,
    pub connect_timeout: Duration,
    /// Since the origin: no message is sent after this.
    pub send_deadline: Duration,
    /// Since the origin: every client has closed by this.
    pub end_deadline: Duration,
    /// With `--jwt-secret`: mints each connection's `?token=`, valid past the end deadline.
    pub tokens: Option<Tokens>,
    /// With `--stages`: start times follow the ramp (one client per batch).
    pub stages: Option<Stages>,
    /// With a `wss://` URL: the TLS configuration of every connection.
    pub tls: Option<Tls>,
    /// With `--churn`: extra connections per second that join and leave.
    pub churn_rate: Option<f64>,
    /// How long each churner stays in its room.
    pub churn_stay: Duration,
    /// With `--room-sizes`: each client's `(room, member index)`.
    pub placement: Option<Vec<(u32, u32)>>,
    /// With `--shard`: the share of the clients this generator runs.
    pub shard: Option<Shard>,
}

impl Plan {
    pub fn new(args: &Args, run_id: String, targets: Vec<Target>) -> Self {
        let mut plan = Self {
            run_id,
            targets,
            protocol: args.protocol,
            clients: args.clients,
            rooms: args.rooms,
            messages: args.messages,
            batch_size: if args.stages.is_some() {
                1
            } else {
                args.batch_size
            },
            batch_interval: args.batch_interval,
            rate: args.rate,
            period: Duration::from_secs_f64(1.0 / args.rate),
            closed_loop: args.closed_loop,
            body_size: args.body_size as usize,
            source_ips: args.source_ips,
            max_reconnects: args.max_reconnects,
            connect_timeout: args.connect_timeout,
            send_deadline: Duration::ZERO,
            end_deadline: Duration::ZERO,
            tokens: None,
            stages: args.stages.clone(),
            tls: None,
            churn_rate: args.churn,
            churn_stay: args.churn_stay,
            placement: args.room_sizes.as_ref().map(RoomSizes::placement),
            shard: args.shard,
        };
        // Without --duration, sending may run until the last client's timetable
        // is over, plus one drain period of slack for closed-loop lag.
        let scheduled_end = plan.last_start()
            + args.connect_timeout
            + plan.period().mul_f64(f64::from(plan.messages))
            + args.drain_timeout;
        plan.send_deadline = args.duration.unwrap_or(scheduled_end);
        plan.end_deadline = plan.send_deadline + args.drain_timeout;
        plan.tokens = args
            .jwt_secret
            .as_ref()
            .map(|secret| Tokens::new(secret, plan.end_deadline));
        plan
    }

    /// The client's room and its index among the room's members.
    fn place(&self, client: u32) -> (u32, u32) {
        match &self.placement {
            Some(placement) => placement[client as usize],
            None => (client % self.rooms, client / self.rooms),
        }
    }

    pub fn room_of(&self, client: u32) -> u32 {
        self.place(client).0
    }

    pub fn target_of(&self, client: u32) -> usize {
        let (room, member) = self.place(client);
        ((u64::from(room) + u64::from(member)) % self.targets.len() as u64) as usize
    }

    pub fn start_of(&self, client: u32) -> Duration {
        match &self.stages {
            Some(stages) => stages.start_of(client),
            None => self.batch_interval * (client / self.batch_size),
        }
    }

    pub fn last_start(&self) -> Duration {
        self.start_of(self.clients - 1)
    }

    pub fn batches(&self) -> u32 {
        self.clients.div_ceil(self.batch_size)
    }

    /// Time between two sends of one client.
    pub fn period(&self) -> Duration {
        self.period
    }

    /// Offset of a client's first send after its `joined`: slot `s` of `batch_size`
    /// even slots of one period. Clients join in about their numbering order, over
    /// a spread that depends on the server, so the slot must not follow that order:
    /// a phase growing with the client number adds to the connect spread, and the
    /// sends of the first and last joiners pile up in one part of the period (a
    /// 1 s spread at a 2.5 s period made some seconds carry 3.6 times the load of
    /// others). So consecutive clients take slots a golden-ratio stride apart,
    /// a permutation of a batch's slots that is uncorrelated with join order.
    pub fn phase(&self, client: u32) -> Duration {
        let n = u64::from(self.batch_size);
        let slot = (u64::from(client % self.batch_size) * golden_stride(n)) % n;
        self.period().mul_f64(slot as f64 / n as f64)
    }

    /// The source address to bind, with `--source-ips`: 127.0.0.1 ..= 127.0.0.N.
    pub fn source_of(&self, client: u32) -> Option<SocketAddr> {
        let n = u32::from(self.source_ips?);
        let last = u8::try_from(1 + client % n).unwrap_or(1);
        Some(SocketAddr::new(
            IpAddr::V4(Ipv4Addr::new(127, 0, 0, last)),
            0,
        ))
    }

    pub fn room_name(&self, room: u32) -> String {
        format!("{}-r{room}", self.run_id)
    }

    pub fn user_name(&self, client: u32) -> String {
        format!("{}-u{client}", self.run_id)
    }

    /// Whether this generator runs client `id` (all of them without `--shard`).
    pub fn owns(&self, id: u32) -> bool {
        self.shard.is_none_or(|s| s.owns(id))
    }

    /// The generator thread (of `threads`) that runs client `id`: an even
    /// spread over the clients this generator owns.
    pub fn thread_of(&self, id: u32, threads: usize) -> usize {
        let count = self.shard.map_or(1, |s| s.count);
        (id / count) as usize % threads
    }

    /// The clients this generator runs.
    pub fn own_clients(&self) -> u32 {
        self.shard
            .map_or(self.clients, |s| s.share_of(self.clients))
    }

    /// Messages the plan calls for from this generator's clients.
    pub fn planned_messages(&self) -> u64 {
        u64::from(self.own_clients()) * u64::from(self.messages)
    }
}

/// The stride nearest `n / φ` that is coprime with `n`, so that `i * stride % n`
/// visits every slot of `0..n` once, consecutive `i` landing far apart.
fn golden_stride(n: u64) -> u64 {
    let gcd = |mut a: u64, mut b: u64| {
        while b != 0 {
            (a, b) = (b, a % b);
        }
        a
    };
    let mut stride = ((n as f64) * 0.618_033_988_75).round().max(1.0) as u64;
    while gcd(stride, n) != 1 {
        stride += 1;
    }
    stride
}

#[cfg(test)]
mod tests {
    use super::*;
    use clap::Parser;

    fn plan(argv: &[&str], urls: usize) -> Plan {
        let mut args =
            Args::try_parse_from(std::iter::once("chat-load").chain(argv.iter().copied())).unwrap();
        args.resolve().unwrap();
        let target = Target {
            endpoint: Endpoint::parse("ws://127.0.0.1:1/ws").unwrap(),
            addr: "127.0.0.1:1".parse().unwrap(),
        };
        Plan::new(&args, "t".into(), vec![target; urls])
    }

    #[test]
    fn rooms_are_filled_evenly() {
        let p = plan(&[], 1);
        let mut sizes = [0; 10];
        (0..p.clients).for_each(|c| sizes[p.room_of(c) as usize] += 1);
        assert_eq!(sizes, [50; 10]);
        let p = plan(&["--clients", "7", "--rooms", "3"], 1);
        let mut sizes = [0; 3];
        (0..p.clients).for_each(|c| sizes[p.room_of(c) as usize] += 1);
        assert_eq!(sizes, [3, 2, 2]);
    }

    #[test]
    fn every_room_spans_every_instance() {
        for (rooms, urls) in [(10, 2), (1, 2), (3, 3), (4, 2), (5, 3)] {
            let p = plan(&["--clients", "60", "--rooms", &rooms.to_string()], urls);
            for room in 0..rooms {
                let mut per_target = vec![0; urls];
                (0..p.clients)
                    .filter(|&c| p.room_of(c) == room)
                    .for_each(|c| per_target[p.target_of(c)] += 1);
                let (min, max) = (
                    per_target.iter().min().unwrap(),
                    per_target.iter().max().unwrap(),
                );
                assert!(
                    max - min <= 1,
                    "rooms={rooms} urls={urls} room={room}: {per_target:?}"
                );
            }
        }
    }

    #[test]
    fn uneven_rooms_still_span_every_instance() {
        let p = plan(&["--room-sizes", "1x30,5x6"], 2);
        assert_eq!((p.clients, p.rooms), (60, 6));
        for room in 0..6 {
            let members: Vec<u32> = (0..60).filter(|&c| p.room_of(c) == room).collect();
            assert_eq!(members.len(), if room == 0 { 30 } else { 6 });
            let on_first = members.iter().filter(|&&c| p.target_of(c) == 0).count();
            assert_eq!(on_first * 2, members.len(), "room {room}");
        }
    }

    #[test]
    fn stages_start_one_client_at_a_time_on_the_ramp() {
        let p = plan(&["--stages", "2s:4", "--rooms", "2"], 1);
        assert_eq!((p.clients, p.batch_size, p.batches()), (4, 1, 4));
        let starts: Vec<_> = (0..4).map(|c| p.start_of(c).as_millis()).collect();
        assert_eq!(starts, [500, 1000, 1500, 2000]);
    }

    #[test]
    fn batches_follow_the_seed_schedule() {
        let p = plan(&[], 1);
        assert_eq!(p.batches(), 20);
        assert_eq!(p.start_of(0), Duration::ZERO);
        assert_eq!(p.start_of(24), Duration::ZERO);
        assert_eq!(p.start_of(25), Duration::from_secs(5));
        assert_eq!(p.last_start(), Duration::from_secs(95));
        assert_eq!(p.planned_messages(), 25_000);
    }

    #[test]
    fn the_timetable_spreads_a_batch_over_one_period() {
        let p = plan(&["--rate", "10", "--batch-size", "4"], 1);
        assert_eq!(p.period(), Duration::from_millis(100));
        let phases: Vec<_> = (0..5).map(|c| p.phase(c).as_millis()).collect();
        // Stride 3 of 4 slots: every slot once per batch, neighbours apart.
        assert_eq!(phases, [0, 75, 50, 25, 0]);
    }

    /// Clients of a batch join in about their numbering order, over a spread that
    /// depends on the server (a slow server, a long spread). The offered load must
    /// stay even anyway: first sends taken modulo the period fill it uniformly.
    #[test]
    fn the_offered_load_stays_even_whatever_the_connect_spread() {
        let p = plan(
            &["--rate", "0.4", "--batch-size", "1000", "--clients", "1000"],
            1,
        );
        let period = p.period().as_secs_f64();
        for spread in [0.0, 0.3, 1.0, 1.7, 4.0] {
            let mut buckets = [0u32; 10];
            for c in 0..1000 {
                let joined = spread * f64::from(c) / 1000.0;
                let first = (joined + p.phase(c).as_secs_f64()) % period;
                buckets[(first / period * 10.0) as usize % 10] += 1;
            }
            let (lo, hi) = (buckets.iter().min(), buckets.iter().max());
            assert!(
                lo >= Some(&70) && hi <= Some(&130),
                "connect spread {spread}s: sends per tenth of a period {buckets:?}"
            );
        }
    }

    #[test]
    fn deadlines_bound_the_run() {
        let p = plan(
            &[
                "--clients",
                "50",
                "--batch-interval",
                "1s",
                "--rate",
                "10",
                "--messages",
                "20",
            ],
            1,
        );
        // last batch at 1 s + connect 10 s + 20 messages at 10/s + drain 10 s
        assert_eq!(p.send_deadline, Duration::from_secs(23));
        assert_eq!(p.end_deadline, Duration::from_secs(33));
        let p = plan(&["--duration", "3s", "--drain-timeout", "1s"], 1);
        assert_eq!(
            (p.send_deadline, p.end_deadline),
            (Duration::from_secs(3), Duration::from_secs(4))
        );
    }

    #[test]
    fn shards_and_threads_split_the_clients_evenly() {
        let p = plan(
            &[
                "--clients",
                "12",
                "--rooms",
                "3",
                "--shard",
                "1/3",
                "--run-id",
                "r",
            ],
            1,
        );
        let own: Vec<u32> = (0..12).filter(|&c| p.owns(c)).collect();
        assert_eq!(own, [1, 4, 7, 10]);
        assert_eq!((p.own_clients(), p.planned_messages()), (4, 200));
        // Both threads get work. With as many rooms as shards each shard
        // holds one room; otherwise a shard's clients span the rooms.
        let rooms: Vec<u32> = own.iter().map(|&c| p.room_of(c)).collect();
        assert_eq!(rooms, [1, 1, 1, 1]);
        let threads: Vec<usize> = own.iter().map(|&c| p.thread_of(c, 2)).collect();
        assert_eq!(threads, [0, 1, 0, 1]);
        let p = plan(
            &[
                "--clients",
                "12",
                "--rooms",
                "4",
                "--shard",
                "0/3",
                "--run-id",
                "r",
            ],
            1,
        );
        let rooms: Vec<u32> = (0..12)
            .filter(|&c| p.owns(c))
            .map(|c| p.room_of(c))
            .collect();
        assert_eq!(rooms, [0, 3, 2, 1]);
        let whole = plan(&["--clients", "12"], 1);
        assert_eq!((whole.own_clients(), whole.thread_of(5, 2)), (12, 1));
    }

    #[test]
    fn source_addresses_cycle_over_loopback() {
        let p = plan(&["--source-ips", "3"], 1);
        let ips: Vec<_> = (0..4)
            .map(|c| p.source_of(c).unwrap().ip().to_string())
            .collect();
        assert_eq!(ips, ["127.0.0.1", "127.0.0.2", "127.0.0.3", "127.0.0.1"]);
        assert_eq!(plan(&[], 1).source_of(0), None);
    }
}
