//! A bounded local fan-out measurement (not a test): N clients in one room, S
//! senders sending M messages in total; reports deliveries/s and ack latency.
//!
//!     cargo run --release -p chat-server --example fanout -- [N] [M] [S] [server flags...]
//!
//! Server flags go to an in-process server on 127.0.0.1:0 (default: embedded mode,
//! SQLite in a temp file). Everything is bounded by a 120 s timeout.

use std::collections::HashMap;
use std::sync::Arc;
use std::time::{Duration, Instant};

use chat_server::Config;
use clap::Parser;
use futures::{SinkExt, StreamExt};
use serde_json::{Value, json};
use tokio::sync::Mutex;
use tokio_tungstenite::tungstenite::Message;

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    let args: Vec<String> = std::env::args().skip(1).collect();
    let num = |i: usize, d: usize| args.get(i).and_then(|a| a.parse().ok()).unwrap_or(d);
    let (clients, messages, senders) = (num(0, 200), num(1, 2000), num(2, 4).max(1));
    let db = std::env::temp_dir().join(format!("fanout-{}.db", std::process::id()));
    let mut argv: Vec<String> = [
        "chat-server",
        "--rate-per-sec",
        "1000000",
        "--rate-burst",
        "1000000",
    ]
    .map(String::from)
    .into();
    argv.extend(["--sqlite-path".into(), db.to_string_lossy().into_owned()]);
    argv.extend(args.iter().skip(3).cloned());
    let config = Config::parse_from(argv);
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await?;
    let addr = listener.local_addr()?;
    let (stop, stopped) = tokio::sync::oneshot::channel::<()>();
    let server = tokio::spawn(chat_server::run(listener, config, async move {
        let _ = stopped.await;
    }));
    let room = format!("bench-{:x}", rand::random::<u32>());
    let result = tokio::time::timeout(
        Duration::from_secs(120),
        bench(addr, &room, clients, messages, senders),
    )
    .await;
    let _ = stop.send(());
    let _ = server.await;
    let _ = std::fs::remove_file(&db);
    result.map_err(|_| anyhow::anyhow!("benchmark timed out"))?
}

async fn connect(
    addr: std::net::SocketAddr,
    user: &str,
    room: &str,
) -> anyhow::Result<
    tokio_tungstenite::WebSocketStream<tokio_tungstenite::MaybeTlsStream<tokio::net::TcpStream>>,
> {
    let (mut ws, _) =
        tokio_tungstenite::connect_async(format!("ws://{addr}/ws?user={user}&room={room}")).await?;
    while let Some(msg) = ws.next().await {
        if let Message::Text(t) = msg?
            && serde_json::from_str::<Value>(&t)?["type"] == "joined"
        {
            return Ok(ws);
        }
    }
    anyhow::bail!("closed before joined")
}

async fn bench(
    addr: std::net::SocketAddr,
    room: &str,
    clients: usize,
    messages: usize,
    senders: usize,
) -> anyhow::Result<()> {
    let mut receivers = Vec::new();
    for i in 0..clients {
        receivers.push(connect(addr, &format!("r{i}"), room).await?);
    }
    let start = Instant::now();
    let mut tasks = Vec::new();
    for mut ws in receivers {
        tasks.push(tokio::spawn(async move {
            let mut seen = 0;
            while seen < messages {
                match ws.next().await {
                    Some(Ok(Message::Text(t))) if t.contains("\"type\":\"message\"") => seen += 1,
                    Some(Ok(_)) => {}
                    _ => break,
                }
            }
            (seen, start.elapsed())
        }));
    }
    let latencies = Arc::new(Mutex::new(Vec::with_capacity(messages)));
    let mut sender_tasks = Vec::new();
    for s in 0..senders {
        let ws = connect(addr, &format!("s{s}"), room).await?;
        let (mut sink, mut stream) = ws.split();
        let count = messages / senders + usize::from(s < messages % senders);
        let sent: Arc<Mutex<HashMap<String, Instant>>> = Arc::default();
        let latencies = latencies.clone();
        let sent2 = sent.clone();
        let reader = tokio::spawn(async move {
            let mut acked = 0;
            while acked < count {
                let Some(Ok(Message::Text(t))) = stream.next().await else {
                    break;
                };
                if !t.contains("\"type\":\"ack\"") {
                    continue;
                }
                let v: Value = serde_json::from_str(&t).unwrap_or_default();
                if let Some(at) = v["ref"]
                    .as_str()
                    .and_then(|r| sent2.try_lock().ok()?.remove(r))
                {
                    latencies.lock().await.push(at.elapsed());
                }
                acked += 1;
            }
        });
        let room = room.to_owned();
        sender_tasks.push(tokio::spawn(async move {
            for i in 0..count {
                let r = format!("{s}-{i}");
                sent.lock().await.insert(r.clone(), Instant::now());
                let frame =
                    json!({"type":"send","room":room,"body":format!("hello {i} from {s}"),"ref":r});
                if sink
                    .send(Message::Text(frame.to_string().into()))
                    .await
                    .is_err()
                {
                    break;
                }
                if i % 64 == 63 {
                    tokio::task::yield_now().await;
                }
            }
            let _ = reader.await;
        }));
    }
    for t in sender_tasks {
        t.await?;
    }
    let mut delivered = 0;
    let mut last = Duration::ZERO;
    for t in tasks {
        let (seen, at) = t.await?;
        delivered += seen;
        last = last.max(at);
    }
    let mut lat = latencies.lock().await.clone();
    lat.sort();
    let pct = |p: f64| {
        lat.get(((lat.len() as f64 * p) as usize).min(lat.len().saturating_sub(1)))
            .copied()
            .unwrap_or_default()
    };
    println!(
        "clients={clients} messages={messages} senders={senders}: delivered {delivered}/{} in {:.2?} = {:.0} deliveries/s; \
         ack latency p50={:.2?} p99={:.2?} max={:.2?} ({} acks)",
        clients * messages,
        last,
        delivered as f64 / last.as_secs_f64(),
        pct(0.5),
        pct(0.99),
        lat.last().copied().unwrap_or_default(),
        lat.len()
    );
    Ok(())
}
