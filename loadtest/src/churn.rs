//! `--churn RATE`: connections that join and leave during the run.
//!
//! Besides the audited clients, the generator opens `RATE` extra connections
//! per second (spread over its threads) until the send window closes. Each
//! one is user `<run-id>-c<n>`, joins room `n % rooms` with the upgrade,
//! waits for `joined`, stays `--churn-stay` reading (and discarding) what
//! arrives, then sends `leave` and closes. So the server handles joins,
//! presence fan-out and leaves under load, and the audited members of those
//! rooms must still get every message exactly once. Churners are not audited
//! themselves; the report counts their joins, leaves and failures.

use std::rc::Rc;
use std::time::Duration;

use futures::{SinkExt, StreamExt};
use tokio::net::TcpStream;
use tokio::task::JoinSet;
use tokio_tungstenite::tungstenite::Message;
use tokio_tungstenite::{MaybeTlsStream, WebSocketStream, client_async_tls_with_config};

use crate::auth;
use crate::shard::Shard;
use crate::tls::Tls;
use crate::wire::{self, Inbound};

/// Starts this thread's share of the churners, one every `threads / rate`
/// seconds (`threads × N / rate` with `--shard I/N`, whose generator runs
/// the churners numbered I modulo N), until the send window closes; runs
/// until aborted (which aborts the churners still open).
pub async fn run(shard: Rc<Shard>, threads: usize) {
    let shared = shard.shared.clone();
    let plan = &shared.plan;
    let Some(rate) = plan.churn_rate else {
        return;
    };
    let mut churners = JoinSet::new();
    let (first, step) = match plan.shard {
        Some(s) => (
            u64::from(s.index) + u64::from(s.count) * shard.index as u64,
            u64::from(s.count) * threads as u64,
        ),
        None => (shard.index as u64, threads as u64),
    };
    for n in (first..).step_by(step as usize) {
        let at = Duration::from_secs_f64(n as f64 / rate);
        if at >= plan.send_deadline {
            break;
        }
        tokio::time::sleep_until(shared.at(at).into()).await;
        churners.spawn_local(churn(shard.clone(), n));
        // Reap the finished ones so the set stays small.
        while churners.try_join_next().is_some() {}
    }
    while churners.join_next().await.is_some() {}
}

/// One churner: join, stay, leave.
async fn churn(shard: Rc<Shard>, n: u64) {
    let plan = &shard.shared.plan;
    let room = plan.room_name((n % u64::from(plan.rooms)) as u32);
    let user = format!("{}-c{n}", plan.run_id);
    let joined = tokio::time::timeout(plan.connect_timeout, join(&shard, &user, &room, n)).await;
    let Ok(Ok(mut ws)) = joined else {
        shard.recorder.borrow_mut().counters.churn_failures += 1;
        return;
    };
    shard.recorder.borrow_mut().counters.churn_joins += 1;
    let stay = tokio::time::sleep(plan.churn_stay);
    tokio::pin!(stay);
    loop {
        tokio::select! {
            () = &mut stay => break,
            frame = ws.next() => if !matches!(frame, Some(Ok(_))) {
                // Dropped while staying: it did not leave on its own.
                shard.recorder.borrow_mut().counters.churn_failures += 1;
                return;
            },
        }
    }
    let left = ws.send(Message::text(wire::leave(&room))).await.is_ok();
    let _ = tokio::time::timeout(Duration::from_secs(1), ws.close(None)).await;
    let counters = &mut shard.recorder.borrow_mut().counters;
    match left {
        true => counters.churn_leaves += 1,
        false => counters.churn_failures += 1,
    }
}

/// Connects to instance `n % urls` as `user` joining `room`, and waits for `joined`.
async fn join(
    shard: &Shard,
    user: &str,
    room: &str,
    n: u64,
) -> Result<WebSocketStream<MaybeTlsStream<TcpStream>>, String> {
    let plan = &shard.shared.plan;
    let target = &plan.targets[(n % plan.targets.len() as u64) as usize];
    let credential = auth::credential(plan.tokens.as_ref(), user).map_err(|e| e.to_string())?;
    let url = target.endpoint.request_url(&credential, Some(room));
    let stream = TcpStream::connect(target.addr)
        .await
        .map_err(|e| e.to_string())?;
    stream.set_nodelay(true).map_err(|e| e.to_string())?;
    let connector = plan.tls.as_ref().map(Tls::connector);
    let (mut ws, _) = client_async_tls_with_config(url, stream, None, connector)
        .await
        .map_err(|e| e.to_string())?;
    while let Some(frame) = ws.next().await {
        if let Message::Text(text) = frame.map_err(|e| e.to_string())?
            && let Ok(Inbound::Joined { room: joined, .. }) = Inbound::parse(&text)
            && joined == room
        {
            return Ok(ws);
        }
    }
    Err("closed before joined".into())
}
