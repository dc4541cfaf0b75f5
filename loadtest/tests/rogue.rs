//! `chat-load` against a server that breaks docs/protocol.md on purpose, to
//! show that the tool notices: a server that accepts sends and never answers,
//! acks one seq twice, gives two messages one seq, or one message two seqs, or
//! never finishes a connection.
//!
//! chat-server cannot be made to misbehave, so this is a small real WebSocket
//! server (tokio-tungstenite over real sockets) with one room broker, which
//! follows the protocol except for the one fault it is started with.

use std::collections::HashMap;
use std::net::SocketAddr;
use std::path::PathBuf;
use std::process::{Command, Output};
use std::sync::{Arc, Mutex};

use futures::{SinkExt, StreamExt};
use serde_json::{Value, json};
use tokio::sync::mpsc;
use tokio_tungstenite::tungstenite::Message;
use tokio_tungstenite::tungstenite::handshake::server::{Request, Response};

/// The one way the server breaks the protocol.
#[derive(Clone, Copy, PartialEq)]
enum Fault {
    /// Answers `join`, swallows every `send`: no ack, no delivery.
    BlackHole,
    /// Acks every message twice with the same seq.
    DoubleAck,
    /// Gives every second message the seq of the one before it.
    SharedSeq,
    /// Delivers every message twice, under two consecutive seqs (so every
    /// member's seqs still look complete and in order).
    TwoSeqs,
    /// Serves the first connection (chat-load's probe); accepts every later
    /// one and never answers its WebSocket upgrade.
    StallsAfterFirst,
}

#[derive(Default)]
struct Rooms {
    members: HashMap<String, Vec<mpsc::UnboundedSender<String>>>,
    last_seq: HashMap<String, u64>,
    sends: HashMap<String, u64>,
    accepted: u64,
}

fn start(fault: Fault) -> (SocketAddr, tokio::runtime::Runtime) {
    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(1)
        .enable_all()
        .build()
        .expect("runtime");
    let listener = rt
        .block_on(tokio::net::TcpListener::bind("127.0.0.1:0"))
        .expect("bind");
    let addr = listener.local_addr().unwrap();
    let rooms = Arc::new(Mutex::new(Rooms::default()));
    rt.spawn(async move {
        while let Ok((stream, _)) = listener.accept().await {
            tokio::spawn(serve(stream, fault, rooms.clone()));
        }
    });
    (addr, rt)
}

async fn serve(stream: tokio::net::TcpStream, fault: Fault, rooms: Arc<Mutex<Rooms>>) {
    if fault == Fault::StallsAfterFirst {
        let accepted = {
            let mut rooms = rooms.lock().unwrap();
            rooms.accepted += 1;
            rooms.accepted
        };
        if accepted > 1 {
            let _held = stream;
            return std::future::pending().await;
        }
    }
    let mut query = String::new();
    // The signature is tungstenite's `Callback`; its error type is not ours.
    #[allow(clippy::result_large_err)]
    let callback = |request: &Request, response: Response| {
        query = request.uri().query().unwrap_or_default().to_owned();
        Ok(response)
    };
    let Ok(ws) = tokio_tungstenite::accept_hdr_async(stream, callback).await else {
        return;
    };
    let (mut sink, mut stream) = ws.split();
    let (tx, mut rx) = mpsc::unbounded_channel::<String>();
    tokio::spawn(async move {
        while let Some(text) = rx.recv().await {
            if sink.send(Message::text(text)).await.is_err() {
                break;
            }
        }
    });
    let param = |name: &str| {
        query
            .split('&')
            .filter_map(|pair| pair.split_once('='))
            .find(|(k, _)| *k == name)
            .map(|(_, v)| v.to_owned())
    };
    let user = param("user").unwrap_or_default();
    if let Some(room) = param("room") {
        let mut rooms = rooms.lock().unwrap();
        let last_seq = rooms.last_seq.get(&room).copied().unwrap_or(0);
        rooms
            .members
            .entry(room.clone())
            .or_default()
            .push(tx.clone());
        let joined = json!({"type": "joined", "room": room, "user": user, "members": [], "last_seq": last_seq});
        let _ = tx.send(joined.to_string());
    }
    while let Some(Ok(frame)) = stream.next().await {
        let Message::Text(text) = frame else { continue };
        let Ok(request) = serde_json::from_str::<Value>(&text) else {
            continue;
        };
        match request["type"].as_str() {
            Some("ping") => {
                let _ = tx.send(json!({"type": "pong"}).to_string());
            }
            Some("send") if fault != Fault::BlackHole => {
                let room = request["room"].as_str().unwrap_or_default().to_owned();
                let mut rooms = rooms.lock().unwrap();
                let sends = rooms.sends.entry(room.clone()).or_insert(0);
                *sends += 1;
                let sends = *sends;
                let last = rooms.last_seq.entry(room.clone()).or_insert(0);
                let seqs: Vec<u64> = match fault {
                    // Sends 1 and 2 get seq 1, sends 3 and 4 seq 2, ...
                    Fault::SharedSeq => vec![sends.div_ceil(2)],
                    Fault::TwoSeqs => vec![*last + 1, *last + 2],
                    _ => vec![*last + 1],
                };
                let first = seqs[0];
                *last = *seqs.last().unwrap();
                for &seq in &seqs {
                    let message = json!({"type": "message", "room": room, "seq": seq,
                        "user": user, "body": request["body"], "ts": 0});
                    for member in rooms.members.get(&room).into_iter().flatten() {
                        let _ = member.send(message.to_string());
                    }
                }
                let ack = json!({"type": "ack", "ref": request["ref"], "room": room, "seq": first});
                let acks = if fault == Fault::DoubleAck { 2 } else { 1 };
                for _ in 0..acks {
                    let _ = tx.send(ack.to_string());
                }
            }
            _ => {}
        }
    }
}

/// Runs chat-load (12 clients, 3 rooms, 5 messages each) against `addr`.
fn chat_load(addr: SocketAddr, extra: &[&str]) -> (Output, Value) {
    let json = std::env::temp_dir().join(format!(
        "chat-load-rogue-{}-{}.json",
        std::process::id(),
        addr.port()
    ));
    let out = Command::new(env!("CARGO_BIN_EXE_chat-load"))
        .args(["--url", &format!("ws://{addr}/ws")])
        .args(["--clients", "12", "--rooms", "3", "--batch-size", "12"])
        .args(["--messages", "5", "--rate", "20", "--drain-timeout", "1s"])
        .args(["--no-progress", "--json"])
        .arg(&json)
        .args(extra)
        .output()
        .expect("chat-load runs");
    let summary = read_json(&json, &out);
    let _ = std::fs::remove_file(&json);
    (out, summary)
}

fn read_json(path: &PathBuf, out: &Output) -> Value {
    let text = std::fs::read_to_string(path).unwrap_or_default();
    serde_json::from_str(&text).unwrap_or_else(|e| {
        panic!(
            "no JSON summary ({e}); stderr: {}",
            String::from_utf8_lossy(&out.stderr)
        )
    })
}

/// The run failed its thresholds (exit 3) and named `rule` among the failures.
fn assert_fails_with(out: &Output, rule: &str) {
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(3), "stderr: {stderr}");
    assert!(stderr.contains(rule), "'{rule}' not in: {stderr}");
}

#[test]
fn a_server_that_never_acks_or_delivers_fails_the_default_thresholds() {
    let (addr, _rt) = start(Fault::BlackHole);
    let (out, summary) = chat_load(addr, &["--duration", "2s"]);
    assert_fails_with(&out, "unacked==0");
    assert_eq!(summary["messages"]["unacked"], 60);
    // Every lost message is in the histograms as a lower bound: 60 acks and,
    // for each, every member of its room that had joined by its send time
    // (at least its sender, at most the 4 members).
    let latency = &summary["latency_ms"];
    assert_eq!(latency["ack"]["count"], 60);
    assert_eq!(latency["ack"]["lower_bounds"], 60);
    let bounds = latency["delivery"]["lower_bounds"].as_u64().unwrap();
    assert!((60..=240).contains(&bounds), "{bounds}");
    assert_eq!(latency["delivery"]["count"].as_u64(), Some(bounds));
    assert!(latency["delivery"]["min"].as_f64() > Some(0.0));
}

#[test]
fn a_latency_rule_fails_when_nothing_was_measured() {
    let (addr, _rt) = start(Fault::BlackHole);
    let (out, summary) = chat_load(addr, &["--messages", "0", "--threshold", "ack.p99<50ms"]);
    // Nothing was sent, so nothing else failed.
    assert_fails_with(&out, "ack.p99<50ms");
    assert_eq!(summary["latency_ms"]["ack"]["count"], 0);
    let verdict = &summary["thresholds"][0];
    assert_eq!(verdict["rule"], "ack.p99<50ms");
    assert_eq!(verdict["actual"], Value::Null);
}

#[test]
fn two_acks_with_one_seq_are_reported() {
    let (addr, _rt) = start(Fault::DoubleAck);
    let (out, summary) = chat_load(addr, &[]);
    assert_fails_with(&out, "duplicate_acks==0");
    // Second acks that arrive after their client finished are not read.
    let duplicates = summary["audit"]["duplicate_acks"].as_u64().unwrap();
    assert!((1..=60).contains(&duplicates), "{duplicates}");
}

#[test]
fn one_seq_carrying_two_messages_is_caught() {
    let (addr, _rt) = start(Fault::SharedSeq);
    let (out, summary) = chat_load(addr, &[]);
    assert_fails_with(&out, "seq_conflicts==0");
    assert!(summary["audit"]["seq_conflicts"].as_u64() > Some(0));
}

#[test]
fn one_message_under_two_seqs_is_caught_though_the_seqs_look_perfect() {
    let (addr, _rt) = start(Fault::TwoSeqs);
    let (out, summary) = chat_load(addr, &[]);
    assert_fails_with(&out, "stamp_conflicts==0");
    let audit = &summary["audit"];
    assert_eq!(audit["stamp_conflicts"], 60, "{audit:#}");
    // By seq alone, everything arrived once and in order.
    for zero in ["missing", "duplicated", "out_of_order"] {
        assert_eq!(audit[zero], 0, "audit.{zero} in {audit:#}");
    }
}

#[test]
fn connections_still_pending_when_the_run_ends_are_failures_with_a_reason() {
    let (addr, _rt) = start(Fault::StallsAfterFirst);
    let (out, summary) = chat_load(
        addr,
        &[
            "--messages",
            "0",
            "--duration",
            "1s",
            "--connect-timeout",
            "60s",
        ],
    );
    assert_fails_with(&out, "connect_errors==0");
    let connections = &summary["connections"];
    assert_eq!(connections["failed"], 12, "{connections:#}");
    let failures = connections["failures"].as_object().unwrap();
    assert_eq!(
        failures.values().filter_map(Value::as_u64).sum::<u64>(),
        12,
        "every failed connection has a reason: {connections:#}"
    );
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(!stdout.contains("failed 12 (none)"), "{stdout}");
}
