//! `--verify-history`: after the run, every acked message must be in the
//! room's stored history exactly once, under its acked seq, with its body.
//!
//! The history is read over the REST API (`GET /api/rooms/{room}/messages`,
//! docs/protocol.md), page by page with `after`, from the first `--url`'s
//! host (instances share the store). With `--jwt-secret` the requests carry
//! `Authorization: Bearer <token>` for a user of the run, for a server that
//! protects the API. The comparison ([`compare`]) is a pure function, so what
//! counts as missing, duplicated or mismatched is unit-tested apart from HTTP.

use std::collections::HashMap;

use bytes::Bytes;
use http_body_util::{BodyExt, Empty};
use hyper::Request;
use hyper::header::{AUTHORIZATION, HOST};
use hyper_util::rt::TokioIo;
use serde::{Deserialize, Serialize};
use url::Url;

use crate::plan::Plan;
use crate::stamp::Stamp;

/// Messages per page (the protocol's maximum).
const PAGE: usize = 200;

/// What the stored history said about the acked messages.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct HistoryReport {
    /// Rooms read.
    pub rooms: u64,
    /// Acked messages checked.
    pub acked: u64,
    /// Messages read from the history (this run's and any other).
    pub stored: u64,
    /// Acked messages not stored under their acked seq.
    pub missing: u64,
    /// Acked messages stored more than once (under several seqs, or one seq
    /// returned twice).
    pub duplicated: u64,
    /// Acked seqs stored with another message or another body.
    pub mismatched: u64,
}

/// Why the history could not be read (the run then fails with exit 1).
#[derive(Debug, thiserror::Error)]
pub enum HistoryError {
    #[error("cannot connect to {url}: {source}")]
    Connect { url: String, source: std::io::Error },
    #[error("{url}: {source}")]
    Http { url: String, source: hyper::Error },
    #[error("{url}: HTTP {status}: {body}")]
    Status {
        url: String,
        status: u16,
        body: String,
    },
    #[error("{url}: not a history page: {source}")]
    Json {
        url: String,
        source: serde_json::Error,
    },
    #[error("{url}: the page after seq {after} did not advance")]
    Stuck { url: String, after: u64 },
    #[error("cannot mint a token for the history API: {0}")]
    Token(String),
    #[error("cannot build the history URL from {0}")]
    Url(String),
}

/// One stored message, as far as the check needs it.
#[derive(Debug, Clone, Deserialize, PartialEq, Eq)]
pub struct Stored {
    pub seq: u64,
    pub body: String,
}

#[derive(Deserialize)]
struct Page {
    messages: Vec<Stored>,
}

/// Compares one room's acked messages (seq → stamp) with its stored history.
pub fn compare(acked: &HashMap<u64, Stamp>, stored: &[Stored], body_size: usize) -> HistoryReport {
    let mut report = HistoryReport {
        rooms: 1,
        acked: acked.len() as u64,
        stored: stored.len() as u64,
        ..Default::default()
    };
    // The stored messages by seq, and how often each message (by stamp) appears.
    let mut by_seq: HashMap<u64, Vec<&str>> = HashMap::new();
    let mut copies: HashMap<(u32, u32), u64> = HashMap::new();
    for message in stored {
        by_seq.entry(message.seq).or_default().push(&message.body);
        if let Some(stamp) = Stamp::parse_body(&message.body) {
            *copies.entry((stamp.client, stamp.n)).or_default() += 1;
        }
    }
    for (seq, stamp) in acked {
        let bodies = by_seq.get(seq).map_or(&[][..], Vec::as_slice);
        let expected = stamp.body(body_size);
        if bodies.is_empty() {
            report.missing += 1;
        } else if bodies.iter().any(|body| *body != expected) {
            report.mismatched += 1;
        }
        let copies = copies.get(&(stamp.client, stamp.n)).copied().unwrap_or(0);
        if copies > 1 || bodies.len() > 1 {
            report.duplicated += 1;
        }
    }
    report
}

impl HistoryReport {
    pub fn add(&mut self, o: &HistoryReport) {
        self.rooms += o.rooms;
        self.acked += o.acked;
        self.stored += o.stored;
        self.missing += o.missing;
        self.duplicated += o.duplicated;
        self.mismatched += o.mismatched;
    }
}

/// Reads every room's history and checks the acked messages of each
/// (`acked[room]`: seq → stamp).
pub async fn verify(
    plan: &Plan,
    acked: &[HashMap<u64, Stamp>],
) -> Result<HistoryReport, HistoryError> {
    let target = &plan.targets[0];
    let base = target.endpoint.http_base().map_err(HistoryError::Url)?;
    let authorization = match &plan.tokens {
        Some(tokens) => Some(format!(
            "Bearer {}",
            tokens
                .mint(&plan.user_name(0))
                .map_err(|e| HistoryError::Token(e.to_string()))?
        )),
        None => None,
    };
    let mut total = HistoryReport::default();
    for (room, acked) in acked.iter().enumerate() {
        let name = plan.room_name(room as u32);
        let mut stored = Vec::new();
        let mut after = 0;
        loop {
            let url = base
                .join(&format!(
                    "api/rooms/{name}/messages?after={after}&limit={PAGE}"
                ))
                .map_err(|e| HistoryError::Url(e.to_string()))?;
            let page = get_page(target.addr, &url, authorization.as_deref()).await?;
            let full = page.len() >= PAGE;
            let last = page.iter().map(|m| m.seq).max().unwrap_or(after);
            if full && last <= after {
                return Err(HistoryError::Stuck {
                    url: url.to_string(),
                    after,
                });
            }
            stored.extend(page);
            if !full {
                break;
            }
            after = last;
        }
        total.add(&compare(acked, &stored, plan.body_size));
    }
    Ok(total)
}

/// One `GET` over a fresh HTTP/1.1 connection to `addr`.
async fn get_page(
    addr: std::net::SocketAddr,
    url: &Url,
    authorization: Option<&str>,
) -> Result<Vec<Stored>, HistoryError> {
    let text = url.to_string();
    let http = |source| HistoryError::Http {
        url: text.clone(),
        source,
    };
    let stream = tokio::net::TcpStream::connect(addr)
        .await
        .map_err(|source| HistoryError::Connect {
            url: text.clone(),
            source,
        })?;
    let (mut sender, connection) = hyper::client::conn::http1::handshake(TokioIo::new(stream))
        .await
        .map_err(http)?;
    let driver = tokio::spawn(connection);
    let path = match url.query() {
        Some(query) => format!("{}?{query}", url.path()),
        None => url.path().to_owned(),
    };
    let mut request = Request::get(path).header(HOST, url.authority());
    if let Some(value) = authorization {
        request = request.header(AUTHORIZATION, value);
    }
    let request = request
        .body(Empty::<Bytes>::new())
        .map_err(|e| HistoryError::Url(e.to_string()))?;
    let response = sender.send_request(request).await.map_err(http)?;
    let status = response.status().as_u16();
    let body = response
        .into_body()
        .collect()
        .await
        .map_err(http)?
        .to_bytes();
    driver.abort();
    if status != 200 {
        return Err(HistoryError::Status {
            url: text,
            status,
            body: String::from_utf8_lossy(&body).chars().take(200).collect(),
        });
    }
    serde_json::from_slice::<Page>(&body)
        .map(|page| page.messages)
        .map_err(|source| HistoryError::Json { url: text, source })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn stamp(n: u32) -> Stamp {
        Stamp {
            client: 1,
            n,
            scheduled_us: 1000 + u64::from(n),
        }
    }

    fn stored(seq: u64, stamp: Stamp) -> Stored {
        Stored {
            seq,
            body: stamp.body(16),
        }
    }

    fn acked(pairs: &[(u64, u32)]) -> HashMap<u64, Stamp> {
        pairs.iter().map(|&(seq, n)| (seq, stamp(n))).collect()
    }

    #[test]
    fn a_complete_history_passes() {
        let a = acked(&[(1, 0), (2, 1)]);
        let r = compare(&a, &[stored(1, stamp(0)), stored(2, stamp(1))], 16);
        assert_eq!(
            r,
            HistoryReport {
                rooms: 1,
                acked: 2,
                stored: 2,
                ..Default::default()
            }
        );
    }

    #[test]
    fn missing_duplicated_and_mismatched_are_told_apart() {
        let a = acked(&[(1, 0), (2, 1), (3, 2), (4, 3)]);
        let mut wrong_body = stored(3, stamp(2));
        wrong_body.body.push('x');
        let history = [
            stored(1, stamp(0)),
            stored(5, stamp(0)), // message 0 stored again under seq 5
            stored(2, stamp(9)), // seq 2 holds another message
            wrong_body,
            // seq 4 is not stored
        ];
        let r = compare(&a, &history, 16);
        assert_eq!((r.missing, r.duplicated, r.mismatched), (1, 1, 2));
        // The same seq returned twice is a duplicate too.
        let r = compare(
            &acked(&[(1, 0)]),
            &[stored(1, stamp(0)), stored(1, stamp(0))],
            16,
        );
        assert_eq!((r.missing, r.duplicated, r.mismatched), (0, 1, 0));
    }
}
