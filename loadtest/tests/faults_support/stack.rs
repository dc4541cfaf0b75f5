//! One scenario's system: two `chat-server` instances sharing their own Redis
//! and PostgreSQL, the load every fault strikes in the middle of, and the
//! checks that follow every fault (both instances ready, fresh clients served
//! completely).

use std::collections::HashMap;

use super::WAIT;
use super::load::{Load, Summary, Tolerance};
use super::postgres::Postgres;
use super::redis::Redis;
use super::scratch::{Scratch, eventually};
use super::server::Server;

/// The load a fault strikes: 24 clients in 4 rooms (6 members each, 3 on each
/// instance), 100 messages each at 5/s, so 20 s of sending at 120 messages/s.
/// Reconnects are generous: recovering is what is under test.
pub const LOAD: &[&str] = &[
    "--clients",
    "24",
    "--rooms",
    "4",
    "--messages",
    "100",
    "--rate",
    "5",
    "--batch-size",
    "24",
    "--batch-interval",
    "0s",
    "--max-reconnects",
    "20",
    "--drain-timeout",
    "15s",
];

/// The fault strikes once the instances accepted this many sends together
/// (about 4 s into the sending).
const FAULT_AT: f64 = 480.0;

/// After recovery: new clients on both instances, served completely.
const PROBE: &[&str] = &[
    "--clients",
    "8",
    "--rooms",
    "2",
    "--messages",
    "5",
    "--rate",
    "5",
    "--batch-size",
    "8",
    "--batch-interval",
    "0s",
    "--drain-timeout",
    "10s",
];

pub struct Stack {
    // Dropped first: the servers go before their backends.
    pub servers: Vec<Server>,
    pub redis: Redis,
    pub postgres: Postgres,
}

impl Stack {
    /// Redis, PostgreSQL and two instances `a` and `b` with `server_args` added.
    pub fn start(dir: &Scratch, server_args: &[&str]) -> Self {
        let redis = Redis::start(dir);
        let postgres = Postgres::start(dir);
        let servers = ["a", "b"]
            .into_iter()
            .map(|name| {
                let mut args = vec![
                    "--redis-url".to_owned(),
                    redis.url(),
                    "--database-url".to_owned(),
                    postgres.url(),
                    "--instance-id".to_owned(),
                    format!("faults-{name}"),
                    "--shutdown-grace-secs".to_owned(),
                    "3".to_owned(),
                ];
                args.extend(server_args.iter().map(|a| a.to_string()));
                Server::start(dir, name, args)
            })
            .collect();
        Self {
            servers,
            redis,
            postgres,
        }
    }

    pub fn urls(&self) -> Vec<String> {
        self.servers.iter().map(Server::url).collect()
    }

    /// [`LOAD`] over both instances.
    pub fn load(&self, dir: &Scratch, run_id: &str) -> Load {
        Load::new(dir, "load", &self.urls(), run_id, LOAD)
    }

    /// Waits until the load is well under way, i.e. the moment to strike.
    pub fn wait_for_traffic(&self) {
        let accepted = || {
            self.servers
                .iter()
                .map(|s| s.metric("chat_messages_received_total"))
                .sum::<f64>()
        };
        assert!(
            eventually(|| accepted() >= FAULT_AT),
            "the load never got going: {} sends accepted in {WAIT:?}",
            accepted()
        );
    }

    /// What `run` (of run id `run_id`) shows beyond `tolerance`, and acked
    /// messages without a row of their own in PostgreSQL: the audit goes by
    /// seq, so an acked message whose seq another one took is seen there only.
    pub fn run_problems(&self, run: &Summary, run_id: &str, tolerance: Tolerance) -> Vec<String> {
        run.print();
        // room -> (highest stored seq, rows holding a message). A row without
        // a user is not a message (user names are never empty): a marker the
        // server may store for a seq it gave up.
        let stored: HashMap<String, (u64, u64)> = self
            .postgres
            .query(&format!(
                "SELECT room, max(seq), count(*) FILTER (WHERE user_name <> '') \
                 FROM messages WHERE room LIKE '{run_id}-r%' GROUP BY room"
            ))
            .lines()
            .map(|line| {
                let cols: Vec<&str> = line.split('|').collect();
                let n = |i: usize| cols.get(i).and_then(|v| v.parse().ok()).unwrap_or(0);
                (cols[0].to_owned(), (n(1), n(2)))
            })
            .collect();
        let rows: u64 = stored.values().map(|(_, rows)| rows).sum();
        let never_stored = match tolerance {
            Tolerance::NeverAckedSkips => self.never_stored(run_id, run.n("/run/rooms"), &stored),
            _ => 0,
        };
        let mut problems = run.problems(tolerance, never_stored);
        let acked = run.n("/messages/acked");
        println!(
            "[{}] stored rows {rows} for {acked} acked messages; seqs never stored {never_stored}",
            run.label
        );
        if rows < acked {
            problems.push(format!(
                "{}: {rows} rows stored for {acked} acked messages",
                run.label
            ));
        }
        problems
    }

    /// Seqs handed out in the run's rooms that hold no message: per room, its
    /// last seq (the Redis counter, or the highest row if that is higher)
    /// minus its message rows.
    fn never_stored(&self, run_id: &str, rooms: u64, stored: &HashMap<String, (u64, u64)>) -> u64 {
        (0..rooms)
            .map(|r| {
                let room = format!("{run_id}-r{r}");
                let counter = self
                    .redis
                    .cli(&["GET", &format!("chat:seq:{room}")])
                    .ok()
                    .and_then(|v| v.parse::<u64>().ok())
                    .unwrap_or(0);
                let (max, rows) = stored.get(&room).copied().unwrap_or((0, 0));
                counter.max(max).saturating_sub(rows)
            })
            .sum()
    }

    /// What is wrong once the fault is over: an instance not ready again, or
    /// new clients on both instances (joining as soon as both are ready) not
    /// served completely.
    pub fn recovery_problems(&mut self, dir: &Scratch, run_id: &str) -> Vec<String> {
        let mut problems = self.readiness_problems("after the fault");
        let probe_id = format!("{run_id}-p");
        let probe = Load::new(dir, "probe", &self.urls(), &probe_id, PROBE).run();
        problems.extend(self.run_problems(&probe, &probe_id, Tolerance::Nothing));
        problems
    }

    /// Instances that are not (or no longer) ready, waiting for each a bounded time.
    pub fn readiness_problems(&mut self, when: &str) -> Vec<String> {
        self.servers
            .iter_mut()
            .filter_map(|s| match s.wait_ready() {
                true => None,
                false => Some(format!(
                    "chat-server {} not ready {when} (within {WAIT:?}): /readyz {:?}; log {}",
                    s.name,
                    s.readyz(),
                    s.log().display()
                )),
            })
            .collect()
    }
}

/// Prints the scenario's problems and fails it if there are any.
pub fn verdict(scenario: &str, problems: &[String]) {
    if problems.is_empty() {
        println!("[{scenario}] PASS");
        return;
    }
    let list = problems.join("\n  - ");
    panic!("{scenario}: {} problem(s):\n  - {list}", problems.len());
}
