//! Helpers for chat-server's black-box tests. What chat-load's tests need too
//! (in-process servers on 127.0.0.1:0, fresh PostgreSQL databases, scratch
//! directories, a raw HTTP GET) lives in the `chat-testkit` crate and is
//! re-exported here; this module adds the JSON-protocol WebSocket client, the
//! proxies that cut connections, and the other helpers only these tests use.
//! Waits are bounded by timeouts only to avoid hangs; no assertion depends on
//! timing.
#![allow(dead_code)]

use std::net::SocketAddr;
use std::time::Duration;

use futures::{SinkExt, StreamExt};
use serde_json::{Value, json};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};
use tokio::process::{Child, Command};
use tokio::task::JoinHandle;
use tokio_tungstenite::tungstenite::Message;
use tokio_tungstenite::tungstenite::protocol::frame::coding::CloseCode;
use tokio_tungstenite::{MaybeTlsStream, WebSocketStream};

/// A random room name.
pub fn room() -> String {
    unique("room")
}

// Each test binary uses its own subset.
#[allow(unused_imports)]
pub use chat_testkit::{
    Server, TempDir, WAIT, admin_database_url, free_port, fresh_database, http_get, http_get_with,
    redis_url, unique,
};

/// `server.client(query)`: a [`Client`] connected to a testkit [`Server`].
#[allow(async_fn_in_trait)] // test code: no Send bound needed
pub trait Connect {
    async fn client(&self, query: &str) -> Client;
}

impl Connect for Server {
    async fn client(&self, query: &str) -> Client {
        Client::connect(self.addr, query).await
    }
}

/// One WebSocket client speaking the JSON protocol.
pub struct Client {
    ws: WebSocketStream<MaybeTlsStream<TcpStream>>,
}

impl Client {
    pub async fn connect(addr: SocketAddr, query: &str) -> Client {
        let url = format!("ws://{addr}/ws?{query}");
        let (ws, _) = tokio::time::timeout(WAIT, tokio_tungstenite::connect_async(url))
            .await
            .expect("connect in time")
            .expect("connect");
        Client { ws }
    }

    pub fn ws_mut(&mut self) -> &mut WebSocketStream<MaybeTlsStream<TcpStream>> {
        &mut self.ws
    }

    pub async fn send(&mut self, frame: Value) {
        self.ws
            .send(Message::Text(frame.to_string().into()))
            .await
            .expect("send frame");
    }

    pub async fn send_raw(&mut self, msg: Message) {
        self.ws.send(msg).await.expect("send raw frame");
    }

    /// The next text frame as JSON; panics on close or timeout.
    pub async fn recv(&mut self) -> Value {
        loop {
            let msg = tokio::time::timeout(WAIT, self.ws.next())
                .await
                .expect("a frame in time")
                .expect("stream open")
                .expect("frame ok");
            match msg {
                Message::Text(t) => return serde_json::from_str(&t).expect("frame is JSON"),
                Message::Close(c) => panic!("unexpected close: {c:?}"),
                _ => continue,
            }
        }
    }

    /// The next text frame if one arrives within `wait` (a poll, not an assertion).
    pub async fn recv_within(&mut self, wait: Duration) -> Option<Value> {
        tokio::time::timeout(wait, self.recv()).await.ok()
    }

    /// Skips frames until one of `type`; returns it.
    pub async fn recv_type(&mut self, ty: &str) -> Value {
        loop {
            let v = self.recv().await;
            if v["type"] == ty {
                return v;
            }
        }
    }

    /// Sends a request and returns the reply (the next frame not of type
    /// `message`/`presence`).
    pub async fn request(&mut self, frame: Value) -> Value {
        self.send(frame).await;
        loop {
            let v = self.recv().await;
            if v["type"] != "message" && v["type"] != "presence" {
                return v;
            }
        }
    }

    pub async fn join(&mut self, room: &str) -> Value {
        let v = self.request(json!({"type": "join", "room": room})).await;
        assert_eq!(v["type"], "joined", "{v}");
        v
    }

    /// Sends a message and waits for its ack; returns the seq.
    pub async fn send_acked(&mut self, room: &str, body: &str) -> u64 {
        let r = unique("ref");
        self.send(json!({"type": "send", "room": room, "body": body, "ref": r}))
            .await;
        loop {
            let v = self.recv().await;
            if v["type"] == "ack" && v["ref"] == r.as_str() {
                return v["seq"].as_u64().expect("seq");
            }
            assert_ne!(v["type"], "error", "{v}");
        }
    }

    /// Reads until the close frame; returns its code and reason.
    pub async fn expect_close(&mut self) -> (u16, String) {
        loop {
            let msg = tokio::time::timeout(WAIT, self.ws.next())
                .await
                .expect("close in time");
            match msg {
                Some(Ok(Message::Close(Some(frame)))) => {
                    return (u16::from(frame.code), frame.reason.to_string());
                }
                Some(Ok(Message::Close(None))) => {
                    return (u16::from(CloseCode::Status), String::new());
                }
                Some(Ok(_)) => continue,
                other => panic!("connection ended without a close frame: {other:?}"),
            }
        }
    }
}

/// GET over a fresh connection; returns status and body.
/// The `seq`s of a `history` frame's or the messages API's `messages`, in order.
pub fn seqs(v: &Value) -> Vec<u64> {
    v["messages"]
        .as_array()
        .expect("a messages array")
        .iter()
        .map(|m| m["seq"].as_u64().expect("a numeric seq"))
        .collect()
}

pub async fn http_json(addr: SocketAddr, path: &str) -> (u16, Value) {
    let (status, body) = http_get(addr, path).await.expect("http get");
    (
        status,
        serde_json::from_str(&body).unwrap_or(Value::String(body)),
    )
}

pub async fn start_redis(port: u16) -> Child {
    let child = Command::new("redis-server")
        .args([
            "--port",
            &port.to_string(),
            "--bind",
            "127.0.0.1",
            "--save",
            "",
            "--appendonly",
            "no",
        ])
        .stdout(std::process::Stdio::null())
        .kill_on_drop(true)
        .spawn()
        .expect("redis-server on PATH (scripts/test.sh installs it)");
    let up = async {
        while tokio::net::TcpStream::connect(("127.0.0.1", port))
            .await
            .is_err()
        {
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    };
    tokio::time::timeout(WAIT, up)
        .await
        .expect("redis-server started");
    child
}

/// Polls /readyz until its status is `want`; returns the body.
pub async fn readyz_until(server: &Server, want: u16) -> Value {
    let poll = async {
        loop {
            let (status, body) = http_json(server.addr, "/readyz").await;
            if status == want {
                return body;
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    };
    tokio::time::timeout(WAIT, poll)
        .await
        .expect("readiness changed in time")
}

/// Sends until the server answers with an ack (returns Ok(seq)) or an error
/// (returns Err(code)).
pub async fn try_send(c: &mut Client, room: &str, body: &str) -> Result<u64, String> {
    let r = unique("ref");
    c.send(json!({"type":"send","room":room,"body":body,"ref":r}))
        .await;
    loop {
        let v = c.recv().await;
        if v["ref"] == r.as_str() {
            return match v["type"].as_str() {
                Some("ack") => Ok(v["seq"].as_u64().unwrap()),
                _ => Err(v["code"].as_str().unwrap_or_default().to_owned()),
            };
        }
    }
}

/// An HS256 JWT for `sub`, expiring `exp_offset` seconds from now.
pub fn token(secret: &str, sub: &str, exp_offset: i64) -> String {
    let now = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_secs() as i64;
    let claims = json!({"sub": sub, "exp": now + exp_offset});
    jsonwebtoken::encode(
        &jsonwebtoken::Header::default(),
        &claims,
        &jsonwebtoken::EncodingKey::from_secret(secret.as_bytes()),
    )
    .unwrap()
}

/// What a [`Proxy`] does with its connections.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ProxyMode {
    /// Forwards both ways.
    Pass,
    /// Forwards requests but holds every reply until the mode changes: the
    /// server runs the commands, the client never hears back.
    HoldReplies,
    /// Drops every connection and refuses new ones: the upstream is cut off.
    Cut,
}

/// A TCP proxy in front of a real server, to lose replies or cut a link without
/// touching the server itself (or the other clients of it).
pub struct Proxy {
    pub addr: SocketAddr,
    mode: tokio::sync::watch::Sender<ProxyMode>,
    task: JoinHandle<()>,
}

impl Proxy {
    pub async fn start(upstream: SocketAddr) -> Proxy {
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        let (mode, _) = tokio::sync::watch::channel(ProxyMode::Pass);
        let modes = mode.clone();
        let task = tokio::spawn(async move {
            loop {
                let Ok((client, _)) = listener.accept().await else {
                    return;
                };
                if *modes.borrow() == ProxyMode::Cut {
                    continue; // dropped: the connect fails at once
                }
                tokio::spawn(Self::serve(client, upstream, modes.subscribe()));
            }
        });
        Proxy { addr, mode, task }
    }

    /// A proxy in front of the tests' shared Redis.
    pub async fn redis() -> Proxy {
        let addr = redis_url()
            .trim_start_matches("redis://")
            .trim_end_matches('/')
            .parse()
            .expect("CHAT_TEST_REDIS_URL is redis://HOST:PORT/");
        Proxy::start(addr).await
    }

    /// `redis://` through this proxy.
    pub fn redis_url(&self) -> String {
        format!("redis://{}/", self.addr)
    }

    pub fn set(&self, mode: ProxyMode) {
        self.mode.send_replace(mode);
    }

    async fn serve(
        client: TcpStream,
        upstream: SocketAddr,
        mut mode: tokio::sync::watch::Receiver<ProxyMode>,
    ) {
        let Ok(server) = TcpStream::connect(upstream).await else {
            return;
        };
        let (mut client_rx, mut client_tx) = client.into_split();
        let (mut server_rx, mut server_tx) = server.into_split();
        let requests = async {
            let _ = tokio::io::copy(&mut client_rx, &mut server_tx).await;
        };
        let mut replies_mode = mode.clone();
        let replies = async {
            let mut buf = vec![0u8; 16 * 1024];
            loop {
                let Ok(n) = server_rx.read(&mut buf).await else {
                    return;
                };
                let forward = replies_mode
                    .wait_for(|m| *m != ProxyMode::HoldReplies)
                    .await
                    .is_ok();
                if n == 0 || !forward || client_tx.write_all(&buf[..n]).await.is_err() {
                    return;
                }
            }
        };
        tokio::select! {
            _ = requests => {}
            _ = replies => {}
            _ = mode.wait_for(|m| *m == ProxyMode::Cut) => {}
        }
    }
}

impl Drop for Proxy {
    fn drop(&mut self) {
        self.task.abort();
    }
}

/// Makes a test database refuse connections and drops the open ones (`false`), or
/// lets it accept them again (`true`).
pub async fn allow_connections(database_url: &str, allow: bool) {
    use sqlx::Connection;
    let name = database_url.rsplit('/').next().unwrap();
    let mut admin = sqlx::PgConnection::connect(&admin_database_url())
        .await
        .unwrap();
    let exec = |sql: String| sqlx::query(sqlx::AssertSqlSafe(sql));
    exec(format!("ALTER DATABASE {name} ALLOW_CONNECTIONS {allow}"))
        .execute(&mut admin)
        .await
        .unwrap();
    if !allow {
        exec(format!(
            "SELECT pg_terminate_backend(pid) FROM pg_stat_activity WHERE datname = '{name}'"
        ))
        .execute(&mut admin)
        .await
        .unwrap();
    }
}
