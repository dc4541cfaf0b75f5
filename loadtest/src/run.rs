//! One run, start to finish: check the arguments and the targets, raise the
//! descriptor limit, wait at the start barrier (`--start-at-file`), start the
//! generator threads, show progress, stop at the
//! deadline or on Ctrl-C, then merge, audit and summarize.
//!
//! Every run is bounded in time: the plan's end deadline (last batch +
//! timetable + drain, or `--duration` + drain) cancels whatever is still
//! running, and the report says what was left unfinished.

use std::fs::File;
use std::io::{BufWriter, Write};
use std::path::Path;
use std::sync::{Arc, mpsc};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use futures::{SinkExt, StreamExt};
use hdrhistogram::serialization::V2DeflateSerializer;
use tokio_tungstenite::tungstenite::{self, Message, protocol::CloseFrame};

use crate::audit::{self, Audited, RoomLedger};
use crate::auth;
use crate::barrier;
use crate::cli::Args;
use crate::endpoint::Endpoint;
use crate::error::LoadError;
use crate::hdr_log::HdrLog;
use crate::history;
use crate::plan::{Plan, Target};
use crate::progress::Progress;
use crate::protocol::Protocol;
use crate::recorder::Recorder;
use crate::report::{Inputs, Summary};
use crate::shard;
use crate::shared::Shared;
use crate::stamp_audit;
use crate::sysres::{self, Usage};
use crate::timeseries::{JsonLines, Merger, Second};
use crate::tls::Tls;

const TICK: Duration = Duration::from_millis(250);

/// Carries out the run described by `args` and returns its summary
/// (thresholds evaluated). `Err` only when the run could not take place.
pub fn run(args: &Args) -> Result<Summary, LoadError> {
    let mut args = args.clone();
    args.resolve().map_err(LoadError::Args)?;
    let args = &args;
    let nofile_limit = sysres::raise_nofile(args.clients)?;
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .map_err(LoadError::Runtime)?;
    runtime.block_on(drive(args, nofile_limit))
}

async fn drive(args: &Args, nofile_limit: u64) -> Result<Summary, LoadError> {
    let run_id = args.run_id.clone().unwrap_or_else(random_run_id);
    let mut targets = Vec::with_capacity(args.urls.len());
    for endpoint in &args.urls {
        let addr = endpoint.resolve().await?;
        targets.push(Target {
            endpoint: endpoint.clone(),
            addr,
        });
    }
    let mut plan = Plan::new(args, run_id, targets);
    if plan.targets.iter().any(|t| t.endpoint.is_tls()) {
        plan.tls = Some(Tls::new(args.ca_file.as_deref())?);
    }
    for target in &plan.targets {
        probe(&plan, target, args.connect_timeout).await?;
    }
    if let Some(path) = &args.start_at_file {
        tracing::info!(path = %path.display(), "waiting for the start time");
        barrier::wait(path, args.start_timeout).await?;
    }
    let rules = args.rules();
    let threads = usize::from(args.threads);
    tracing::info!(run_id = %plan.run_id, clients = plan.clients, threads, "starting");

    let started_at = SystemTime::now();
    let started_at_unix_ms = started_at
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| d.as_millis() as u64);
    let usage_start = Usage::now();
    // Per-second outputs, created before the run so a bad path fails at once.
    let json = match &args.timeseries {
        Some(path) => Some(JsonLines(create(path, |e| timeseries_error(args, e))?)),
        None => None,
    };
    let mut hdr_file = match &args.hdr_log {
        Some(path) => Some(create(path, |e| hdr_log_error(args, e))?),
        None => None,
    };
    let mut serializer = V2DeflateSerializer::new();
    let hdr = match &mut hdr_file {
        Some(file) => Some(
            HdrLog::begin(file, &mut serializer, started_at)
                .map_err(|source| hdr_log_error(args, source))?,
        ),
        None => None,
    };
    let mut sinks = SecondSinks { json, hdr };
    let (timeseries, mut seconds) = match sinks.json.is_some() || sinks.hdr.is_some() {
        true => {
            let (sender, receiver) = mpsc::channel();
            (Some(sender), Some((Merger::new(threads), receiver)))
        }
        false => (None, None),
    };
    let progress = Progress::new(!args.no_progress);
    let shared = Arc::new(Shared::new(plan, threads, timeseries, progress.shown()));
    let mut handles = Vec::with_capacity(threads);
    for index in 0..threads {
        let shared = shared.clone();
        let handle = std::thread::Builder::new()
            .name(format!("chat-load-{index}"))
            .spawn(move || shard::run(shared, index, threads))
            .map_err(LoadError::Runtime)?;
        handles.push(handle);
    }

    let end = tokio::time::sleep_until(shared.at(shared.plan.end_deadline).into());
    let ctrl_c = tokio::signal::ctrl_c();
    tokio::pin!(end, ctrl_c);
    let mut tick = tokio::time::interval(TICK);
    let mut interrupted = false;
    while !handles.iter().all(|h| h.is_finished()) {
        tokio::select! {
            _ = &mut ctrl_c, if !interrupted => {
                interrupted = true;
                shared.cancel.cancel();
            }
            () = &mut end, if !shared.cancel.is_cancelled() => shared.cancel.cancel(),
            _ = tick.tick() => progress.update(&shared),
        }
        if let Some((merger, receiver)) = &mut seconds {
            for interval in receiver.try_iter() {
                sinks.write(args, merger.add(interval))?;
            }
        }
    }
    if let Some((mut merger, receiver)) = seconds {
        for interval in receiver.try_iter() {
            sinks.write(args, merger.add(interval))?;
        }
        sinks.write(args, merger.finish())?;
    }
    let SecondSinks { json, hdr } = sinks;
    drop(hdr);
    if let Some(JsonLines(mut file)) = json {
        file.flush()
            .map_err(|source| timeseries_error(args, source))?;
    }
    if let Some(file) = &mut hdr_file {
        file.flush().map_err(|source| hdr_log_error(args, source))?;
    }
    progress.finish();
    let end_us = shared.micros(Instant::now());
    let elapsed_s = shared.origin.elapsed().as_secs_f64();
    let usage = Usage::now().since(&usage_start);

    let mut recorder = Recorder::default();
    let mut ledgers = vec![RoomLedger::default(); shared.plan.rooms as usize];
    let mut members = Vec::new();
    let mut lost = Vec::new();
    for handle in handles {
        let result = handle.join().map_err(|_| LoadError::ShardPanicked)??;
        recorder.merge(&result.recorder);
        ledgers
            .iter_mut()
            .zip(result.ledgers)
            .for_each(|(mine, theirs)| mine.merge(theirs));
        members.extend(result.members);
        lost.extend(result.lost);
    }
    // wrk2-style: what never happened enters the histograms as a lower bound.
    for send in &lost {
        let waited = end_us.saturating_sub(send.stamp.scheduled_us);
        recorder.ack.saturating_record(waited);
        recorder.ack_lower_bounds += 1;
    }
    let by_seq = members.iter().filter_map(|(room, m)| match m {
        Audited::Seq(member) => Some((*room, member)),
        Audited::Stamp(_) => None,
    });
    let by_stamp = members.iter().filter_map(|(room, m)| match m {
        Audited::Stamp(member) => Some((*room, member)),
        Audited::Seq(_) => None,
    });
    let audit = match shared.plan.protocol {
        Protocol::Native => {
            audit::audit(&mut ledgers, by_seq, &lost, end_us, &mut recorder.delivery)
        }
        Protocol::SocketIo => stamp_audit::audit(
            &mut ledgers,
            by_stamp,
            &lost,
            end_us,
            &mut recorder.delivery,
        ),
    };
    let history = match args.verify_history {
        true => {
            let acked: Vec<_> = ledgers.iter().map(RoomLedger::acked_by_seq).collect();
            Some(history::verify(&shared.plan, &acked).await?)
        }
        false => None,
    };
    Ok(Summary::build(
        Inputs {
            plan: &shared.plan,
            recorder: &recorder,
            audit,
            history,
            usage,
            threads,
            nofile_limit,
            started_at_unix_ms,
            elapsed_s,
            interrupted,
        },
        &rules,
    ))
}

fn timeseries_error(args: &Args, source: std::io::Error) -> LoadError {
    LoadError::Timeseries {
        path: args.timeseries.clone().unwrap_or_default(),
        source,
    }
}

fn hdr_log_error(args: &Args, source: std::io::Error) -> LoadError {
    LoadError::HdrLog {
        path: args.hdr_log.clone().unwrap_or_default(),
        source,
    }
}

/// Creates an output file; `error` names it in the error.
fn create(
    path: &Path,
    error: impl FnOnce(std::io::Error) -> LoadError,
) -> Result<BufWriter<File>, LoadError> {
    File::create(path).map(BufWriter::new).map_err(error)
}

/// Where the finished seconds go: `--timeseries` and `--hdr-log`.
struct SecondSinks<'a> {
    json: Option<JsonLines<BufWriter<File>>>,
    hdr: Option<HdrLog<'a, BufWriter<File>>>,
}

impl SecondSinks<'_> {
    fn write(&mut self, args: &Args, seconds: Vec<Second>) -> Result<(), LoadError> {
        for second in &seconds {
            if let Some(json) = &mut self.json {
                json.write(second)
                    .map_err(|source| timeseries_error(args, source))?;
            }
            if let Some(hdr) = &mut self.hdr {
                hdr.write(second)
                    .map_err(|source| hdr_log_error(args, source))?;
            }
        }
        Ok(())
    }
}

/// Checks that an endpoint accepts a WebSocket upgrade and serves the
/// connection before any batch starts, so a wrong address or a wrong (or
/// missing) JWT secret fails once, clearly, instead of 500 times in the report.
/// The probe connects like a client (same credential kind), sends a `ping`
/// (natively; an Engine.IO server speaks first) and waits for the first
/// frame: any text frame means the server is serving the connection; a close
/// frame is the refusal (the server checks the credential right after the
/// upgrade and closes with 1008 when it is bad).
async fn probe(plan: &Plan, target: &Target, limit: Duration) -> Result<(), LoadError> {
    let endpoint = &target.endpoint;
    let unreachable = |reason: String| LoadError::Unreachable {
        url: endpoint.to_string(),
        reason,
    };
    let attempt = async {
        let stream = tokio::net::TcpStream::connect(target.addr)
            .await
            .map_err(|e| unreachable(e.to_string()))?;
        let user = format!("{}-probe", plan.run_id);
        let credential = auth::credential(plan.tokens.as_ref(), &user)
            .map_err(|e| unreachable(format!("cannot mint a token: {e}")))?;
        let url = plan.protocol.request_url(endpoint, &credential, None);
        let connector = plan.tls.as_ref().map(Tls::connector);
        let (mut ws, _) =
            tokio_tungstenite::client_async_tls_with_config(url, stream, None, connector)
                .await
                .map_err(|e| {
                    unreachable(match e {
                        tungstenite::Error::Http(r) => format!(
                            "the WebSocket upgrade got HTTP {} (wrong path?)",
                            r.status()
                        ),
                        other => format!("WebSocket handshake failed: {other}"),
                    })
                })?;
        // A failed write shows up as the close or error read next.
        if let Some(frame) = plan.protocol.probe_frame() {
            let _ = ws.send(Message::text(frame)).await;
        }
        let answer = loop {
            match ws.next().await {
                Some(Ok(Message::Text(_))) => break Ok(()),
                Some(Ok(Message::Close(frame))) => break Err(refused(plan, endpoint, frame)),
                Some(Ok(_)) => continue,
                Some(Err(e)) => break Err(unreachable(format!("connection failed: {e}"))),
                None => break Err(unreachable("connection dropped without a close".into())),
            }
        };
        let _ = ws.close(None).await;
        answer
    };
    tokio::time::timeout(limit, attempt)
        .await
        .unwrap_or_else(|_| Err(unreachable(format!("no answer within {limit:?}"))))
}

/// The error for a probe closed by the server: an auth failure for 1008, with
/// a hint that depends on whether a secret was given.
fn refused(plan: &Plan, endpoint: &Endpoint, frame: Option<CloseFrame>) -> LoadError {
    let (code, reason) = frame.map_or((1005, String::new()), |f| {
        (u16::from(f.code), f.reason.to_string())
    });
    if code == 1008 {
        return LoadError::Auth {
            url: endpoint.to_string(),
            reason,
            hint: match plan.tokens {
                Some(_) => "auth failed; --jwt-secret must be the server's CHAT_JWT_SECRET",
                None => {
                    "auth failed; a server with auth on needs --jwt-secret \
                     (or CHAT_LOAD_JWT_SECRET) set to its CHAT_JWT_SECRET"
                }
            },
        };
    }
    LoadError::Unreachable {
        url: endpoint.to_string(),
        reason: format!("the server closed the connection with {code} `{reason}`"),
    }
}

/// A run id unlikely to collide with a previous run against the same store.
fn random_run_id() -> String {
    let nanos = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| d.subsec_nanos());
    let mixed = (u64::from(nanos) ^ (u64::from(std::process::id()) << 20))
        .wrapping_mul(0x9E37_79B9_7F4A_7C15);
    format!("load-{:08x}", mixed >> 32)
}
