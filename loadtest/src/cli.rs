//! Command-line interface of `chat-load`.
//!
//! Every value is checked by a clap value parser, so bad input (a duration
//! without a unit, zero clients, a malformed threshold, a non-`ws://` URL) is
//! rejected before anything connects, with clap's usual message and exit code 2.
//! The defaults reproduce the seed project's `WebSocketLoadTest`: 500 clients,
//! 50 messages each, started in batches of 25 every 5 s.

use std::path::PathBuf;
use std::time::Duration;

use clap::Parser;

use crate::auth::Secret;
use crate::endpoint::Endpoint;
use crate::protocol::Protocol;
use crate::scenario::{RoomSizes, Stages};
use crate::stamp_audit::{self, MAX_SENDER_PAIRS};
use crate::threshold::{self, Threshold};

/// The most clients one generator accepts; beyond this one process is the
/// wrong tool (run several generators).
pub const MAX_CLIENTS: u32 = 1_000_000;

#[derive(Debug, Clone, Parser)]
#[command(
    name = "chat-load",
    version,
    args_override_self = true,
    about = "WebSocket load generator for chat-server: latency from send to every member, and a delivery audit",
    after_help = "Exit status: 0 all thresholds passed, 1 the run could not be carried out, \
                  2 bad command line, 3 a threshold failed."
)]
pub struct Args {
    /// WebSocket endpoint of a chat-server instance. Repeat for several instances:
    /// clients are spread round-robin, so every room spans instances.
    #[arg(long = "url", value_name = "URL", default_value = "ws://127.0.0.1:8080/ws",
          value_parser = Endpoint::parse)]
    pub urls: Vec<Endpoint>,

    /// The protocol the clients speak: `native` (docs/protocol.md) or
    /// `socketio`, a Socket.IO 4 chat over Engine.IO v4 on a WebSocket (URL
    /// e.g. ws://127.0.0.1:3000/socket.io/; no acks or seqs, audited by stamp).
    #[arg(long, value_enum, default_value_t = Protocol::Native)]
    pub protocol: Protocol,

    /// HS256 secret of a server with auth on (its CHAT_JWT_SECRET): each client
    /// connects with its own token (`?token=`, sub = its user) instead of `?user=`.
    #[arg(long, env = "CHAT_LOAD_JWT_SECRET", hide_env_values = true,
          value_name = "SECRET", value_parser = Secret::parse)]
    pub jwt_secret: Option<Secret>,

    /// PEM file of certificates to trust for wss:// besides the system's
    /// roots (a private CA, a test ingress).
    #[arg(long, value_name = "FILE")]
    pub ca_file: Option<PathBuf>,

    /// Number of simulated users (one WebSocket connection each).
    #[arg(long, default_value_t = 500, value_parser = clap::value_parser!(u32).range(1..=MAX_CLIENTS as i64))]
    pub clients: u32,

    /// Messages each client sends (0: connect, join and listen only).
    #[arg(long, default_value_t = 50)]
    pub messages: u32,

    /// Clients started together in one batch.
    #[arg(long, default_value_t = 25, value_parser = clap::value_parser!(u32).range(1..))]
    pub batch_size: u32,

    /// Pause between the starts of two batches (e.g. 5s, 250ms, 0s).
    #[arg(long, default_value = "5s", value_parser = parse_duration)]
    pub batch_interval: Duration,

    /// Number of rooms; clients are spread evenly over them.
    #[arg(long, default_value_t = 10, value_parser = clap::value_parser!(u32).range(1..))]
    pub rooms: u32,

    /// Ramp the number of clients over stages instead of batches, k6-style:
    /// '30s:1000,60s:5000' starts 1000 clients evenly over 30 s, then 4000
    /// more over 60 s (targets never decrease; a repeated target holds).
    #[arg(long, value_name = "STAGES", value_parser = Stages::parse,
          conflicts_with_all = ["clients", "batch_size", "batch_interval"])]
    pub stages: Option<Stages>,

    /// Uneven rooms instead of --rooms: sizes one by one or COUNTxSIZE, e.g.
    /// '2x200,60x10' (2 hot rooms of 200, 60 rooms of 10). The sizes add up
    /// to the clients (with --stages, to its final count).
    #[arg(long, value_name = "SIZES", value_parser = RoomSizes::parse,
          conflicts_with_all = ["rooms", "clients"])]
    pub room_sizes: Option<RoomSizes>,

    /// Join/leave churn: this many extra connections per second (until the
    /// send window closes) join a room, stay --churn-stay, then leave.
    #[arg(long, value_name = "PER_SEC", value_parser = parse_rate)]
    pub churn: Option<f64>,

    /// How long each churn connection stays in its room.
    #[arg(long, default_value = "1s", value_parser = parse_duration)]
    pub churn_stay: Duration,

    /// Messages per second per client. Open loop: sends follow a fixed timetable
    /// and latency counts from the scheduled send time.
    #[arg(long, default_value = "1", value_parser = parse_rate)]
    pub rate: f64,

    /// Send each message only after the previous one was acked (the seed's
    /// behaviour; hides server stalls, for comparison only).
    #[arg(long)]
    pub closed_loop: bool,

    /// Stop sending after this long (measured from the start of the run), then drain.
    #[arg(long, value_parser = parse_duration)]
    pub duration: Option<Duration>,

    /// Limit for TCP connect + WebSocket handshake + `joined`.
    #[arg(long, default_value = "10s", value_parser = parse_positive_duration)]
    pub connect_timeout: Duration,

    /// How long to wait, once sending is over, for outstanding acks and deliveries.
    #[arg(long, default_value = "10s", value_parser = parse_duration)]
    pub drain_timeout: Duration,

    /// Pad every message body to this many bytes (the correlation stamp is ~25 bytes).
    #[arg(long, default_value_t = 0, value_parser = clap::value_parser!(u32).range(0..=65536))]
    pub body_size: u32,

    /// Reconnect attempts per client after a close with 1001/4000/4001 or a dropped socket.
    #[arg(long, default_value_t = 5)]
    pub max_reconnects: u32,

    /// Spread source addresses over 127.0.0.1 ..= 127.0.0.N (loopback targets only),
    /// to get past the ~28k ephemeral ports of a single source address.
    #[arg(long, value_name = "N", value_parser = clap::value_parser!(u8).range(1..=254))]
    pub source_ips: Option<u8>,

    /// Generator threads, each a single-threaded runtime owning a share of the clients.
    #[arg(long, default_value_t = 1, value_parser = clap::value_parser!(u16).range(1..=256))]
    pub threads: u16,

    /// Pass/fail rule such as 'delivery.p99<50ms' or 'missing==0'; may repeat.
    /// Defaults: missing, duplicated, out_of_order, unacked, unsent,
    /// connect_errors, duplicate_acks, seq_conflicts, stamp_conflicts all ==0
    /// (a rule on the same metric replaces its default); lost_acked==0 always
    /// applies. With --protocol socketio the ack and seq rules are left out
    /// and delivered>0 is added. A latency rule on a histogram with no
    /// samples fails.
    #[arg(long = "threshold", value_name = "RULE", value_parser = Threshold::parse)]
    pub thresholds: Vec<Threshold>,

    /// After the run, read every room's history over the REST API
    /// (GET /api/rooms/{room}/messages on the first --url's host) and check
    /// that every acked message is stored exactly once, with its body.
    #[arg(long)]
    pub verify_history: bool,

    /// Write one JSON line per second of the run to this file: sent, acked,
    /// delivered, errors, connects, reconnects and that second's delivery and
    /// ack p50/p99 (created before the run, so a bad path fails at once).
    #[arg(long, value_name = "FILE")]
    pub timeseries: Option<PathBuf>,

    /// Write the latencies of every second (delivery and ack histograms, µs)
    /// to this file as an HdrHistogram interval log (V2, compressed), for
    /// HdrHistogram's tools (created before the run, like --timeseries).
    #[arg(long, value_name = "FILE")]
    pub hdr_log: Option<PathBuf>,

    /// Write the summary as JSON to this file ('-' for stdout, which then omits the table).
    #[arg(long, value_name = "FILE")]
    pub json: Option<PathBuf>,

    /// Prefix of the room and user names (default: random), so runs never share rooms.
    #[arg(long, value_parser = parse_run_id)]
    pub run_id: Option<String>,

    /// No live progress display, even on a terminal.
    #[arg(long)]
    pub no_progress: bool,

    /// Run only shard I of N: the clients whose number is I modulo N, in the
    /// same rooms, on the same timetable, as one of N generators started
    /// together (see --start-at-file) with the same --run-id. A shard cannot
    /// see when the others' senders are done, so it stays connected until
    /// the end deadline (the sends' end + --drain-timeout). The summary then carries its
    /// HdrHistograms (V2, base64) for merging, its last stdout line is the
    /// summary as one JSON line, and the exit status is 0 whenever the run
    /// took place: thresholds are judged on the merged result.
    #[arg(long, value_name = "I/N", value_parser = Shard::parse)]
    pub shard: Option<Shard>,

    /// Start barrier: after checking the targets, wait until FILE holds a
    /// start time (Unix milliseconds), then start at that time. A missing or
    /// empty file means "not yet" (a Kubernetes downward-API file of a pod
    /// annotation that is not set yet).
    #[arg(long, value_name = "FILE")]
    pub start_at_file: Option<PathBuf>,

    /// How long --start-at-file may wait for a start time.
    #[arg(long, default_value = "10m", value_parser = parse_positive_duration)]
    pub start_timeout: Duration,
}

/// `--shard I/N`: this generator's share of the clients.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Shard {
    pub index: u32,
    pub count: u32,
}

impl Shard {
    /// The most generators one run may be split over.
    pub const MAX_COUNT: u32 = 1000;

    pub fn parse(text: &str) -> Result<Self, String> {
        let (index, count) = text
            .trim()
            .split_once('/')
            .ok_or_else(|| format!("'{text}' is not I/N, e.g. 0/4"))?;
        let number = |s: &str| {
            s.parse::<u32>()
                .map_err(|_| format!("'{text}' is not I/N with whole numbers, e.g. 0/4"))
        };
        let (index, count) = (number(index)?, number(count)?);
        if count == 0 || count > Self::MAX_COUNT {
            return Err(format!("N in '{text}' must be 1 to {}", Self::MAX_COUNT));
        }
        if index >= count {
            return Err(format!(
                "I in '{text}' must be below N (0 to {})",
                count - 1
            ));
        }
        Ok(Self { index, count })
    }

    /// Whether client `id` belongs to this shard.
    pub fn owns(&self, id: u32) -> bool {
        id % self.count == self.index
    }

    /// How many of `clients` belong to this shard.
    pub fn share_of(&self, clients: u32) -> u32 {
        (clients + self.count - 1 - self.index) / self.count
    }
}

impl std::fmt::Display for Shard {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{}/{}", self.index, self.count)
    }
}

/// Parses `250ms`, `5s`, `1.5s`, `2m`, `1h`, `100us`. A unit is required:
/// a bare number is ambiguous.
pub fn parse_duration(text: &str) -> Result<Duration, String> {
    let text = text.trim();
    let split = text
        .find(|c: char| !(c.is_ascii_digit() || c == '.'))
        .ok_or_else(|| format!("'{text}' has no unit; write e.g. 500ms, 5s, 2m"))?;
    let (number, unit) = text.split_at(split);
    let value: f64 = number
        .parse()
        .map_err(|_| format!("'{text}' is not a duration; write e.g. 500ms, 5s, 2m"))?;
    let seconds = match unit.trim() {
        "us" | "µs" => value / 1e6,
        "ms" => value / 1e3,
        "s" => value,
        "m" => value * 60.0,
        "h" => value * 3600.0,
        other => {
            return Err(format!(
                "unknown unit '{other}' in '{text}'; use us, ms, s, m or h"
            ));
        }
    };
    Duration::try_from_secs_f64(seconds)
        .ok()
        .filter(|d| *d <= Duration::from_secs(7 * 24 * 3600))
        .ok_or_else(|| format!("'{text}' is out of range (0 to 7 days)"))
}

fn parse_positive_duration(text: &str) -> Result<Duration, String> {
    match parse_duration(text)? {
        d if d.is_zero() => Err("must be greater than zero".into()),
        d => Ok(d),
    }
}

/// Messages per second per client: positive and finite, at most 100k.
fn parse_rate(text: &str) -> Result<f64, String> {
    let rate: f64 = text
        .trim()
        .parse()
        .map_err(|_| format!("'{text}' is not a number of messages per second"))?;
    if rate.is_finite() && rate > 0.0 && rate <= 100_000.0 {
        Ok(rate)
    } else {
        Err(format!("'{text}' must be a number in (0, 100000]"))
    }
}

/// Room and user names are `<run-id>-r<N>` / `<run-id>-u<N>`, which must match
/// the server's name rule `^[A-Za-z0-9_.:-]{1,64}$`; 40 characters leave room
/// for the suffix.
fn parse_run_id(text: &str) -> Result<String, String> {
    let ok = !text.is_empty()
        && text.len() <= 40
        && text
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || matches!(c, '_' | '.' | ':' | '-'));
    if ok {
        Ok(text.to_owned())
    } else {
        Err("use 1 to 40 characters out of A-Z a-z 0-9 _ . : -".into())
    }
}

impl Args {
    /// Derives the client and room counts from `--stages` and `--room-sizes`,
    /// then checks what involves several flags at once.
    pub fn resolve(&mut self) -> Result<(), String> {
        if let Some(stages) = &self.stages {
            self.clients = stages.clients();
        }
        if let Some(sizes) = &self.room_sizes {
            if self.stages.is_some() && sizes.clients() != self.clients {
                return Err(format!(
                    "--room-sizes hold {} clients but --stages end at {}",
                    sizes.clients(),
                    self.clients
                ));
            }
            self.clients = sizes.clients();
            self.rooms = sizes.rooms();
        }
        self.validate()
    }

    /// The rules the run is judged by: `--threshold`s plus the defaults
    /// that apply to these flags.
    pub fn rules(&self) -> Vec<Threshold> {
        let defaults = threshold::Defaults {
            verify_history: self.verify_history,
            no_acks: !self.protocol.acks(),
            messages: self.messages > 0,
        };
        threshold::with_defaults(&self.thresholds, defaults)
    }

    /// Checks that involve several flags at once.
    pub fn validate(&self) -> Result<(), String> {
        if self.rooms > self.clients {
            return Err(format!(
                "--rooms {} exceeds --clients {}: every room needs at least one member",
                self.rooms, self.clients
            ));
        }
        if let Some(rule) = self
            .thresholds
            .iter()
            .find(|t| threshold::needs_history(&t.metric) && !self.verify_history)
        {
            return Err(format!(
                "'{}' needs --verify-history (the history is read only then)",
                rule.rule
            ));
        }
        if self.verify_history && self.urls.first().is_some_and(Endpoint::is_tls) {
            return Err(
                "--verify-history reads the REST API over plain http only; put a ws:// URL first"
                    .into(),
            );
        }
        if let Some(shard) = self.shard {
            if shard.count > self.clients {
                return Err(format!(
                    "--shard {shard} splits {} clients over more shards than clients",
                    self.clients
                ));
            }
            if self.run_id.is_none() {
                return Err(
                    "--shard needs --run-id, the same for every shard (they share the rooms)"
                        .into(),
                );
            }
            if self.verify_history || self.timeseries.is_some() {
                return Err(
                    "--shard cannot be combined with --verify-history or --timeseries \
                     (they describe the whole run, not one shard)"
                        .into(),
                );
            }
        }
        if self.protocol == Protocol::SocketIo {
            self.validate_socketio()?;
        }
        if self.source_ips.is_some() && self.urls.iter().any(|u| !u.is_loopback()) {
            return Err("--source-ips works only with loopback targets (127.x, localhost)".into());
        }
        Ok(())
    }
}

impl Args {
    /// What `--protocol socketio` cannot do: no acks (closed loop), no REST
    /// history, no `leave` (churn), no tokens; and the stamp audit's memory.
    fn validate_socketio(&self) -> Result<(), String> {
        let unsupported = [
            (self.closed_loop, "--closed-loop (it waits for acks)"),
            (
                self.verify_history,
                "--verify-history (there is no history API)",
            ),
            (self.churn.is_some(), "--churn (the dialect has no leave)"),
            (
                self.jwt_secret.is_some(),
                "--jwt-secret (the dialect has no auth)",
            ),
        ];
        if let Some((_, flag)) = unsupported.iter().find(|(set, _)| *set) {
            return Err(format!("--protocol socketio does not support {flag}"));
        }
        let pairs = match &self.room_sizes {
            Some(sizes) => stamp_audit::sender_pairs(sizes.sizes().map(u64::from)),
            None => {
                let (clients, rooms) = (u64::from(self.clients), u64::from(self.rooms));
                let (size, bigger) = (clients / rooms, clients % rooms);
                stamp_audit::sender_pairs(
                    std::iter::repeat_n(size + 1, bigger as usize)
                        .chain(std::iter::repeat_n(size, (rooms - bigger) as usize)),
                )
            }
        };
        if pairs > MAX_SENDER_PAIRS {
            return Err(format!(
                "--protocol socketio audits every (member, sender) pair of a room: these rooms \
                 make {pairs}, over the limit of {MAX_SENDER_PAIRS}; use smaller rooms"
            ));
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn durations_need_a_unit() {
        assert_eq!(parse_duration("5s"), Ok(Duration::from_secs(5)));
        assert_eq!(parse_duration("250ms"), Ok(Duration::from_millis(250)));
        assert_eq!(parse_duration("1.5s"), Ok(Duration::from_millis(1500)));
        assert_eq!(parse_duration("2m"), Ok(Duration::from_secs(120)));
        assert_eq!(parse_duration("100us"), Ok(Duration::from_micros(100)));
        assert_eq!(parse_duration("0s"), Ok(Duration::ZERO));
        assert!(parse_duration("5").unwrap_err().contains("no unit"));
        assert!(
            parse_duration("5 parsecs")
                .unwrap_err()
                .contains("unknown unit")
        );
        assert!(parse_duration("ms").is_err());
        assert!(parse_duration("1.2.3s").is_err());
        assert!(
            parse_duration("99999h")
                .unwrap_err()
                .contains("out of range")
        );
        assert!(parse_positive_duration("0s").is_err());
    }

    #[test]
    fn rates_must_be_positive_and_finite() {
        assert_eq!(parse_rate("2.5"), Ok(2.5));
        for bad in ["0", "-1", "NaN", "inf", "fast", "1e9"] {
            assert!(parse_rate(bad).is_err(), "{bad}");
        }
    }

    #[test]
    fn defaults_reproduce_the_seed_scenario() {
        let args = Args::try_parse_from(["chat-load"]).unwrap();
        assert_eq!(args.clients, 500);
        assert_eq!(args.messages, 50);
        assert_eq!(args.batch_size, 25);
        assert_eq!(args.batch_interval, Duration::from_secs(5));
        assert_eq!(args.rooms, 10);
        assert_eq!(args.urls.len(), 1);
        assert!(args.validate().is_ok());
    }

    #[test]
    fn bad_input_is_rejected() {
        for argv in [
            &["chat-load", "--clients", "0"][..],
            &["chat-load", "--batch-size", "0"],
            &["chat-load", "--rooms", "0"],
            &["chat-load", "--batch-interval", "5"],
            &["chat-load", "--threshold", "delivery.p99<<5ms"],
            &["chat-load", "--url", "http://example.com/ws"],
            &["chat-load", "--run-id", "has space"],
            &["chat-load", "--source-ips", "0"],
            &["chat-load", "--shard", "3/3"],
            &["chat-load", "--shard", "0/0"],
            &["chat-load", "--shard", "1"],
            &["chat-load", "--shard", "a/2"],
            &["chat-load", "--start-timeout", "0s"],
        ] {
            assert!(Args::try_parse_from(argv).is_err(), "{argv:?}");
        }
        let args = Args::try_parse_from(["chat-load", "--clients", "3", "--rooms", "4"]).unwrap();
        assert!(args.validate().unwrap_err().contains("--rooms 4"));
        for argv in [
            &["chat-load", "--stages", "1s:10", "--clients", "10"][..],
            &["chat-load", "--stages", "1s:10", "--batch-size", "10"],
            &["chat-load", "--room-sizes", "2x5", "--rooms", "2"],
            &["chat-load", "--stages", "1s:9,1s:8"],
        ] {
            assert!(Args::try_parse_from(argv).is_err(), "{argv:?}");
        }
        let args = Args::try_parse_from([
            "chat-load",
            "--clients",
            "2",
            "--rooms",
            "1",
            "--shard",
            "0/3",
            "--run-id",
            "r",
        ])
        .unwrap();
        assert!(
            args.validate()
                .unwrap_err()
                .contains("more shards than clients")
        );
        let args = Args::try_parse_from(["chat-load", "--shard", "0/3"]).unwrap();
        assert!(args.validate().unwrap_err().contains("--run-id"));
        let args = Args::try_parse_from([
            "chat-load",
            "--shard",
            "0/3",
            "--run-id",
            "r",
            "--verify-history",
        ])
        .unwrap();
        assert!(args.validate().unwrap_err().contains("--verify-history"));
        let mut args =
            Args::try_parse_from(["chat-load", "--stages", "1s:10", "--room-sizes", "2x6"])
                .unwrap();
        assert!(args.resolve().unwrap_err().contains("hold 12 clients"));
    }

    #[test]
    fn shards_split_the_clients_disjointly() {
        for (clients, count) in [(12, 3), (7, 3), (5, 5), (1, 1), (10, 4)] {
            let shards: Vec<_> = (0..count)
                .map(|index| Shard::parse(&format!("{index}/{count}")).unwrap())
                .collect();
            let shares: u32 = shards.iter().map(|s| s.share_of(clients)).sum();
            assert_eq!(shares, clients);
            for id in 0..clients {
                assert_eq!(shards.iter().filter(|s| s.owns(id)).count(), 1);
            }
            for s in &shards {
                assert_eq!(
                    s.share_of(clients),
                    (0..clients).filter(|&id| s.owns(id)).count() as u32
                );
            }
        }
        assert_eq!(Shard::parse(" 2/4 ").unwrap().to_string(), "2/4");
    }

    #[test]
    fn socketio_rejects_what_it_cannot_do() {
        let socketio = |extra: &[&str]| {
            let argv = ["chat-load", "--protocol", "socketio"].iter().chain(extra);
            let mut args = Args::try_parse_from(argv).unwrap();
            args.resolve()
        };
        assert!(socketio(&[]).is_ok());
        for (flags, expected) in [
            (&["--closed-loop"][..], "--closed-loop"),
            (&["--verify-history"], "--verify-history"),
            (&["--churn", "1"], "--churn"),
            (
                &["--jwt-secret", "0123456789abcdef0123456789abcdef"],
                "--jwt-secret",
            ),
            (&["--clients", "3000", "--rooms", "1"], "over the limit"),
            (&["--room-sizes", "1x2001,5"], "over the limit"),
        ] {
            let err = socketio(flags).unwrap_err();
            assert!(err.contains(expected), "{flags:?}: {err}");
        }
        assert!(socketio(&["--clients", "2000", "--rooms", "1"]).is_ok());
        assert!(Args::try_parse_from(["chat-load", "--protocol", "mqtt"]).is_err());
    }

    #[test]
    fn stages_and_room_sizes_set_the_counts() {
        let mut args = Args::try_parse_from([
            "chat-load",
            "--stages",
            "1s:10,1s:12",
            "--room-sizes",
            "2x5,2",
        ])
        .unwrap();
        args.resolve().unwrap();
        assert_eq!((args.clients, args.rooms), (12, 3));
        let mut args = Args::try_parse_from(["chat-load", "--room-sizes", "3x4"]).unwrap();
        args.resolve().unwrap();
        assert_eq!((args.clients, args.rooms), (12, 3));
    }
}
