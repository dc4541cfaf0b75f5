//! Hostile input over a raw WebSocket client, each on a fresh connection, and
//! the answer docs/protocol.md promises for it:
//!
//! - a `ref` of 60 KiB: `bad_request`, the ref not echoed, the message not accepted;
//! - deeply nested JSON (60 000 `[`, under the 64 KiB frame limit, so it is
//!   the parser and not the frame limit that answers): `bad_request`, the
//!   connection stays open;
//! - a flood of binary frames: `bad_request` each, counted by the rate limiter
//!   (so the burst is followed by `rate_limited`), the connection stays open;
//! - invalid UTF-8 in a text frame: close 1007;
//! - a body with U+0000 (PostgreSQL `text` cannot hold it): `bad_request` naming
//!   NUL, the message neither delivered nor stored, and the instance goes on
//!   acking sends. Last, because on a server that accepts it the store stalls.

use std::time::Duration;

use futures::{SinkExt, StreamExt};
use serde_json::{Value, json};
use tokio::net::TcpStream;
use tokio_tungstenite::tungstenite::Message;
use tokio_tungstenite::tungstenite::protocol::frame::Frame;
use tokio_tungstenite::tungstenite::protocol::frame::coding::{Data, OpCode};
use tokio_tungstenite::{MaybeTlsStream, WebSocketStream};

/// How long an answer may take before it counts as never given.
const REPLY: Duration = Duration::from_secs(10);

/// Binary frames in the flood: three times the default burst of 100, under
/// the outbound queue of 1024 frames, so every answer fits.
const FLOOD: usize = 300;

/// Runs every poison against the instance at `url` in `room`; prints what
/// each got and returns what breaks the contract.
pub async fn problems(instance: &str, url: &str, room: &str) -> Vec<String> {
    let results = [
        ("60 KiB ref", long_ref(url, room).await),
        ("nested JSON", nested_json(url, room).await),
        ("binary flood", binary_flood(url, room).await),
        ("invalid UTF-8", invalid_utf8(url, room).await),
        ("NUL body", nul_body(url, room).await),
    ];
    results
        .into_iter()
        .filter_map(|(what, result)| match result {
            Ok(seen) => {
                println!("[poison {instance}] {what}: {seen}");
                None
            }
            Err(problem) => Some(format!("poison on {instance}: {what}: {problem}")),
        })
        .collect()
}

async fn long_ref(url: &str, room: &str) -> Result<String, String> {
    let mut c = Raw::connect(url, "poison-ref", room).await?;
    let reference = "r".repeat(60 * 1024);
    c.json(json!({"type":"send","room":room,"body":"long ref","ref":reference}))
        .await?;
    let reply = c.reply().await?;
    let echoed = reply["ref"].as_str().map_or(0, str::len);
    if reply["type"] == "ack" {
        return Err(format!("accepted and acked, echoing the {echoed}-byte ref"));
    }
    expect_code(&reply, "bad_request")?;
    if echoed > 0 {
        return Err(format!("the error echoes the {echoed}-byte ref"));
    }
    Ok(format!("{reply}"))
}

async fn nested_json(url: &str, room: &str) -> Result<String, String> {
    let mut c = Raw::connect(url, "poison-nest", room).await?;
    c.text("[".repeat(60_000)).await?;
    let reply = c.reply().await?;
    expect_code(&reply, "bad_request")?;
    c.ping().await?;
    Ok(format!("{reply}, then pong"))
}

async fn binary_flood(url: &str, room: &str) -> Result<String, String> {
    let mut c = Raw::connect(url, "poison-bin", room).await?;
    for _ in 0..FLOOD {
        c.ws.feed(Message::binary(vec![0u8; 16]))
            .await
            .map_err(|e| format!("cannot send: {e}"))?;
    }
    c.ws.flush()
        .await
        .map_err(|e| format!("cannot send: {e}"))?;
    let mut codes = std::collections::BTreeMap::<String, usize>::new();
    for answered in 0..FLOOD {
        let reply = c
            .reply()
            .await
            .map_err(|e| format!("{e} after {answered} answers {codes:?}"))?;
        let code = reply["code"]
            .as_str()
            .unwrap_or("(not an error)")
            .to_owned();
        *codes.entry(code).or_default() += 1;
    }
    let only_known = codes
        .keys()
        .all(|c| c == "bad_request" || c == "rate_limited");
    if !only_known || !codes.contains_key("bad_request") || !codes.contains_key("rate_limited") {
        return Err(format!(
            "{FLOOD} binary frames got {codes:?}: want `bad_request` and, past the burst, `rate_limited`"
        ));
    }
    // Once the bucket has refilled, the connection serves requests again.
    tokio::time::sleep(Duration::from_millis(2500)).await;
    c.ping().await?;
    Ok(format!("{codes:?}, then pong"))
}

async fn invalid_utf8(url: &str, room: &str) -> Result<String, String> {
    let mut c = Raw::connect(url, "poison-utf8", room).await?;
    let payload = vec![b'{', 0xff, 0xfe, b'}'];
    let frame = Frame::message(payload, OpCode::Data(Data::Text), true);
    c.ws.send(Message::Frame(frame))
        .await
        .map_err(|e| format!("cannot send: {e}"))?;
    match c.close_code().await.as_deref() {
        Ok("1007") => Ok("close 1007".into()),
        Ok(other) => Err(format!("closed with {other}, want 1007")),
        Err(e) => Err(format!("{e}, want close 1007")),
    }
}

async fn nul_body(url: &str, room: &str) -> Result<String, String> {
    let mut c = Raw::connect(url, "poison-nul", room).await?;
    c.json(json!({"type":"send","room":room,"body":"x\u{0}y","ref":"nul"}))
        .await?;
    let reply = c.reply().await;
    if c.delivered.iter().any(|m| m["body"] == "x\u{0}y") {
        return Err(format!("delivered to the room (accepted); then {reply:?}"));
    }
    let reply = reply?;
    expect_code(&reply, "bad_request")?;
    let message = reply["message"].as_str().unwrap_or_default().to_lowercase();
    if !(message.contains("nul") || message.contains("u+0000")) {
        return Err(format!("the error does not name NUL: {reply}"));
    }
    c.json(json!({"type":"send","room":room,"body":"after the NUL","ref":"after"}))
        .await?;
    match c.reply().await? {
        ack if ack["type"] == "ack" => Ok(format!("{reply}, then a send was acked")),
        other => Err(format!("a later send got {other}, not its ack")),
    }
}

fn expect_code(reply: &Value, code: &str) -> Result<(), String> {
    match reply["type"] == "error" && reply["code"] == code {
        true => Ok(()),
        false => Err(format!("got {reply}, want error `{code}`")),
    }
}

/// One connection, joined to the poison room.
struct Raw {
    ws: WebSocketStream<MaybeTlsStream<TcpStream>>,
    /// `message` frames seen while waiting for answers.
    delivered: Vec<Value>,
}

impl Raw {
    async fn connect(url: &str, user: &str, room: &str) -> Result<Self, String> {
        let (ws, _) = tokio_tungstenite::connect_async(format!("{url}?user={user}&room={room}"))
            .await
            .map_err(|e| format!("cannot connect: {e}"))?;
        let mut raw = Self {
            ws,
            delivered: Vec::new(),
        };
        match raw.next_json().await? {
            joined if joined["type"] == "joined" => Ok(raw),
            other => Err(format!("no `joined` but {other}")),
        }
    }

    async fn text(&mut self, text: String) -> Result<(), String> {
        self.ws
            .send(Message::text(text))
            .await
            .map_err(|e| format!("cannot send: {e}"))
    }

    async fn json(&mut self, frame: Value) -> Result<(), String> {
        self.text(frame.to_string()).await
    }

    async fn ping(&mut self) -> Result<(), String> {
        self.json(json!({"type":"ping"})).await?;
        match self.reply().await? {
            pong if pong["type"] == "pong" => Ok(()),
            other => Err(format!("a ping got {other}")),
        }
    }

    /// The next answer to a request (`error`, `ack` or `pong`), skipping
    /// presence and recording deliveries.
    async fn reply(&mut self) -> Result<Value, String> {
        loop {
            let frame = self.next_json().await?;
            match frame["type"].as_str() {
                Some("error" | "ack" | "pong") => return Ok(frame),
                Some("message") => self.delivered.push(frame),
                _ => {}
            }
        }
    }

    /// The next text frame as JSON.
    async fn next_json(&mut self) -> Result<Value, String> {
        let next = tokio::time::timeout(REPLY, self.ws.next())
            .await
            .map_err(|_| format!("no answer within {REPLY:?}"))?;
        match next {
            Some(Ok(Message::Text(text))) => serde_json::from_str(&text)
                .map_err(|e| format!("the server sent invalid JSON ({e}): {text}")),
            Some(Ok(Message::Close(frame))) => Err(format!(
                "closed by the server: {:?}",
                frame.map(|f| (u16::from(f.code), f.reason.to_string()))
            )),
            Some(Ok(other)) => Err(format!("unexpected frame {other:?}")),
            Some(Err(e)) => Err(format!("connection failed: {e}")),
            None => Err("connection dropped".into()),
        }
    }

    /// The code of the server's close frame (frames before it are skipped).
    async fn close_code(&mut self) -> Result<String, String> {
        loop {
            let next = tokio::time::timeout(REPLY, self.ws.next())
                .await
                .map_err(|_| format!("not closed within {REPLY:?}"))?;
            match next {
                Some(Ok(Message::Close(Some(frame)))) => {
                    return Ok(u16::from(frame.code).to_string());
                }
                Some(Ok(Message::Close(None))) => return Ok("a close frame without a code".into()),
                Some(Ok(_)) => {}
                Some(Err(e)) => return Err(format!("dropped without a close frame ({e})")),
                None => return Err("dropped without a close frame".into()),
            }
        }
    }
}
