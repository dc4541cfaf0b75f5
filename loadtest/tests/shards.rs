//! `--shard` and `--start-at-file` end to end: the same clients run once by
//! one `chat-load` and once split over three shards started at one barrier,
//! against a real embedded chat-server (in-process broker, SQLite), and the
//! shards' results merged with `loadtest::merge` must add up to the single
//! run's counts, with latencies read from the merged HdrHistograms.

use std::process::{Command, Output, Stdio};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use chat_testkit::TempDir;
use loadtest::Summary;
use loadtest::merge;
use loadtest::threshold::{self, Threshold};

/// 12 clients in 2 rooms, started together, 5 messages each at 10/s. With
/// 3 shards every room has members in every shard, so deliveries cross
/// shards and no shard sees a room's senders finish.
const SCENARIO: &[&str] = &[
    "--clients",
    "12",
    "--rooms",
    "2",
    "--batch-size",
    "12",
    "--messages",
    "5",
    "--rate",
    "10",
    "--connect-timeout",
    "5s",
    "--drain-timeout",
    "2s",
    "--no-progress",
];

/// An embedded chat-server (chat-testkit's) on a runtime of its own, stopped
/// with it on drop.
struct Embedded {
    server: chat_testkit::Server,
    _rt: tokio::runtime::Runtime,
}

impl Embedded {
    fn start(dir: &TempDir) -> Self {
        let rt = tokio::runtime::Builder::new_multi_thread()
            .worker_threads(2)
            .enable_all()
            .build()
            .unwrap();
        let sqlite = dir.file("history.db");
        let server = rt.block_on(chat_testkit::Server::start(&["--sqlite-path", &sqlite]));
        Self { server, _rt: rt }
    }

    fn url(&self) -> String {
        self.server.ws_url()
    }
}

fn chat_load(url: &str, extra: &[&str]) -> Command {
    let mut cmd = Command::new(env!("CARGO_BIN_EXE_chat-load"));
    cmd.args(["--url", url])
        .args(SCENARIO)
        .args(extra)
        .stdout(Stdio::piped())
        .stderr(Stdio::piped());
    cmd
}

fn ok(out: &Output) -> String {
    let stdout = String::from_utf8_lossy(&out.stdout).into_owned();
    assert!(
        out.status.success(),
        "stdout: {stdout}\nstderr: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    stdout
}

#[test]
fn shards_merge_to_the_counts_of_one_run() {
    let dir = TempDir::new();
    let server = Embedded::start(&dir);
    let json = dir.0.join("single.json");
    let single = chat_load(&server.url(), &["--run-id", "single", "--json"])
        .arg(&json)
        .output()
        .unwrap();
    ok(&single);
    let single: Summary = serde_json::from_slice(&std::fs::read(&json).unwrap()).unwrap();
    assert!(single.passed, "{single}");
    assert!(single.histograms.is_none(), "histograms only with --shard");

    // Three shards wait at the barrier; the file gets a start time only
    // once every one of them runs, as the operator does with its pods.
    let start = dir.0.join("start-at");
    let shards: Vec<_> = (0..3)
        .map(|i| {
            let shard = format!("{i}/3");
            chat_load(
                &server.url(),
                &["--run-id", "sharded", "--shard", &shard, "--start-at-file"],
            )
            .arg(&start)
            .spawn()
            .unwrap()
        })
        .collect();
    std::thread::sleep(Duration::from_millis(500));
    let at = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .unwrap()
        .as_millis()
        + 500;
    std::fs::write(&start, at.to_string()).unwrap();
    let results: Vec<Summary> = shards
        .into_iter()
        .map(|child| {
            let stdout = ok(&child.wait_with_output().unwrap());
            let last = stdout.lines().last().expect("a result line");
            serde_json::from_str(last).expect("the last line is the summary")
        })
        .collect();
    for (i, r) in results.iter().enumerate() {
        assert_eq!(r.run.shard.as_deref(), Some(format!("{i}/3").as_str()));
        assert_eq!(r.run.clients, 4);
        assert!(
            r.run.started_at_unix_ms >= at as u64,
            "not before the barrier"
        );
    }

    let defaults = threshold::Defaults {
        verify_history: false,
        no_acks: false,
        messages: true,
    };
    let rules =
        threshold::with_defaults(&[Threshold::parse("delivery.count>0").unwrap()], defaults);
    let merged = merge::merge(&results, &rules).unwrap();
    assert!(merged.passed, "{merged}");
    assert!(merged.histograms.is_none() && merged.run.shard.is_none());
    // The counts that do not depend on timing are those of the single run.
    let counts = |s: &Summary| {
        (
            s.run.clients,
            s.connections.connected,
            s.messages.planned,
            s.messages.sent,
            s.messages.acked,
            s.audit.members,
            s.audit.missing,
            s.audit.duplicated,
            s.audit.lost_acked,
        )
    };
    assert_eq!(counts(&merged), counts(&single));
    assert_eq!(counts(&merged), (12, 12, 60, 60, 60, 12, 0, 0, 0));
    // Every owed delivery arrived, once, and each is one histogram sample.
    // (How many were owed depends on when each member joined.)
    assert_eq!(merged.audit.delivered, merged.audit.expected);
    let shard_sum = |pick: fn(&Summary) -> u64| results.iter().map(pick).sum::<u64>();
    assert_eq!(merged.audit.delivered, shard_sum(|s| s.audit.delivered));
    let d = &merged.latency_ms.delivery;
    assert_eq!(d.count, shard_sum(|s| s.latency_ms.delivery.count));
    assert_eq!(d.count, merged.audit.delivered);
    assert_eq!(merged.latency_ms.ack.count, 60);
    // Merged percentiles come from the merged histogram: within the shards'
    // range, the maximum is the largest shard maximum, and they are ordered.
    let (lo, hi) = results.iter().fold((f64::MAX, 0.0f64), |(lo, hi), s| {
        (
            lo.min(s.latency_ms.delivery.p50),
            hi.max(s.latency_ms.delivery.p50),
        )
    });
    assert!(lo <= d.p50 && d.p50 <= hi, "{lo} <= {} <= {hi}", d.p50);
    let max = results
        .iter()
        .map(|s| s.latency_ms.delivery.max)
        .fold(0.0, f64::max);
    assert_eq!(d.max, max);
    assert!(d.min <= d.p50 && d.p50 <= d.p99 && d.p99 <= d.max);

    // A threshold the shards could not judge alone: judged on the merge.
    let strict = vec![Threshold::parse(&format!("delivery.count>{}", d.count)).unwrap()];
    let failed = merge::merge(&results, &strict).unwrap();
    assert!(!failed.passed);
    assert_eq!(failed.failed()[0].actual, d.count as f64);

    // A result set that is not the N shards of one run is refused.
    let err = merge::merge(&results[..2], &rules).unwrap_err();
    assert!(err.to_string().contains("3 shards, 2 results"), "{err}");
    let twice = [results[0].clone(), results[0].clone(), results[1].clone()];
    let err = merge::merge(&twice, &rules).unwrap_err();
    assert!(err.to_string().contains("appears twice"), "{err}");
    let err = merge::merge(&[single], &rules).unwrap_err();
    assert!(err.to_string().contains("not a shard"), "{err}");
}
