//! A plain HTTP/1.0 GET over tokio, for /metrics and the Prometheus API (an
//! HTTP/1.0 request gets a body that simply ends with the connection, never
//! chunked), and a bare WebSocket client: an upgrade, then masked text frames
//! out and nothing read back, which is all the test needs of a chat client.

use std::net::SocketAddr;

use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;

/// The status code and body of `GET path_and_query`.
pub async fn get(addr: SocketAddr, path_and_query: &str) -> std::io::Result<(u16, String)> {
    let mut stream = TcpStream::connect(addr).await?;
    stream
        .write_all(format!("GET {path_and_query} HTTP/1.0\r\nHost: {addr}\r\n\r\n").as_bytes())
        .await?;
    let mut response = Vec::new();
    stream.read_to_end(&mut response).await?;
    let response = String::from_utf8_lossy(&response);
    let (head, body) = response.split_once("\r\n\r\n").unwrap_or((&response, ""));
    let status = head
        .split_whitespace()
        .nth(1)
        .and_then(|s| s.parse().ok())
        .unwrap_or(0);
    Ok((status, body.to_string()))
}

/// `value` escaped for a query string.
pub fn encode(value: &str) -> String {
    url::form_urlencoded::byte_serialize(value.as_bytes()).collect()
}

/// A WebSocket opened with a bare HTTP upgrade and then left idle: enough for
/// the server to count a connection.
pub async fn open_websocket(addr: SocketAddr, query: &str) -> std::io::Result<TcpStream> {
    let mut stream = TcpStream::connect(addr).await?;
    let request = format!(
        "GET /ws?{query} HTTP/1.1\r\nHost: {addr}\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n\
         Sec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\nSec-WebSocket-Version: 13\r\n\r\n"
    );
    stream.write_all(request.as_bytes()).await?;
    let mut head = Vec::new();
    let mut byte = [0u8; 1];
    while !head.ends_with(b"\r\n\r\n") {
        if stream.read(&mut byte).await? == 0 {
            break;
        }
        head.push(byte[0]);
    }
    let head = String::from_utf8_lossy(&head);
    if !head.starts_with("HTTP/1.1 101") {
        return Err(std::io::Error::other(format!("upgrade refused: {head}")));
    }
    Ok(stream)
}

/// Sends `text` as one masked WebSocket text frame (RFC 6455 5.2; clients must
/// mask, servers refuse unmasked frames).
pub async fn send_text(stream: &mut TcpStream, text: &str) -> std::io::Result<()> {
    let payload = text.as_bytes();
    let len = u16::try_from(payload.len())
        .ok()
        .filter(|&l| l < 126)
        .ok_or_else(|| std::io::Error::other("a frame of at most 125 bytes"))?;
    let mask = [0x5a, 0x13, 0xc7, 0x2e];
    let mut frame = vec![0x81, 0x80 | len as u8];
    frame.extend_from_slice(&mask);
    frame.extend(payload.iter().enumerate().map(|(i, b)| b ^ mask[i % 4]));
    stream.write_all(&frame).await
}
