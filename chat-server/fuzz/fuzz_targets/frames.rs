//! Hostile bytes into the frame parser and into a live session.
//!
//! Each input is parsed by `ClientFrame::parse` (when it is UTF-8), then sent to a
//! real in-process chat-server (embedded mode) over one WebSocket: as a text frame
//! when it is UTF-8, a binary frame otherwise. A `ping` follows, and the input
//! counts as handled once its `pong` arrives, so every input went through the
//! session's frame handling in order. A panic anywhere (parser, session, hub,
//! store) aborts the process, which is what libFuzzer reports as a crash; a
//! connection the server closes is an error too, as no input below the frame
//! limit should close it.
#![no_main]

use std::sync::{Mutex, OnceLock};
use std::time::Duration;

use clap::Parser;
use futures::{SinkExt, StreamExt};
use libfuzzer_sys::fuzz_target;
use tokio::net::{TcpListener, TcpStream};
use tokio::runtime::Runtime;
use tokio_tungstenite::tungstenite::Message;
use tokio_tungstenite::{MaybeTlsStream, WebSocketStream};

type Socket = WebSocketStream<MaybeTlsStream<TcpStream>>;

struct Harness {
    runtime: Runtime,
    socket: Mutex<Socket>,
}

fn harness() -> &'static Harness {
    static HARNESS: OnceLock<Harness> = OnceLock::new();
    HARNESS.get_or_init(|| {
        let runtime = tokio::runtime::Builder::new_multi_thread()
            .worker_threads(1)
            .enable_all()
            .build()
            .unwrap();
        let db = std::env::temp_dir().join(format!("chat-fuzz-{}.db", std::process::id()));
        let config = chat_server::Config::parse_from([
            "chat-server",
            "--sqlite-path",
            db.to_str().unwrap(),
            "--rate-per-sec",
            "1000000",
            "--rate-burst",
            "1000000",
        ]);
        let socket = runtime.block_on(async {
            let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
            let addr = listener.local_addr().unwrap();
            tokio::spawn(chat_server::run(listener, config, std::future::pending()));
            let url = format!("ws://{addr}/ws?user=fuzz&room=lobby");
            let (socket, _) = tokio_tungstenite::connect_async(url).await.unwrap();
            socket
        });
        Harness {
            runtime,
            socket: Mutex::new(socket),
        }
    })
}

fuzz_target!(|data: &[u8]| {
    let text = std::str::from_utf8(data).ok();
    if let Some(text) = text {
        let _ = chat_server::protocol::ClientFrame::parse(text);
    }
    let h = harness();
    let mut socket = h.socket.lock().unwrap();
    h.runtime.block_on(async {
        let frame = match text {
            Some(text) => Message::Text(text.to_owned().into()),
            None => Message::Binary(data.to_vec().into()),
        };
        socket.send(frame).await.expect("the server reads the frame");
        socket
            .send(Message::Text(r#"{"type":"ping"}"#.into()))
            .await
            .expect("the server reads the ping");
        let pong = async {
            loop {
                match socket.next().await {
                    Some(Ok(Message::Text(t))) if t.as_str() == r#"{"type":"pong"}"# => return,
                    Some(Ok(Message::Close(c))) => panic!("the server closed the session: {c:?}"),
                    Some(Ok(_)) => continue,
                    other => panic!("the session ended: {other:?}"),
                }
            }
        };
        tokio::time::timeout(Duration::from_secs(30), pong)
            .await
            .expect("the session answers within 30 s");
    });
});
