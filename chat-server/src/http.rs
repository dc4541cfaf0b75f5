//! The HTTP surface: the WebSocket upgrade, the JSON API, probes, metrics and the
//! built-in web page. Handlers are thin; the work happens in sessions and the hub.

use std::sync::Arc;

use axum::Json;
use axum::Router;
use axum::extract::ws::{CloseFrame, Message, WebSocket, WebSocketUpgrade};
use axum::extract::{Path, Query, Request, State, rejection::QueryRejection};
use axum::http::{HeaderMap, StatusCode, header};
use axum::middleware::{self, Next};
use axum::response::{Html, IntoResponse, Response};
use axum::routing::get;
use serde::{Deserialize, Serialize};
use serde_json::json;

use crate::app::App;
use crate::auth::{AuthError, resolve_user};
use crate::protocol::{
    CLOSE_GOING_AWAY, CLOSE_POLICY, CLOSE_TRY_AGAIN, ChatMessage, ErrorCode, NAME_RULE, valid_name,
};
use crate::session;
use crate::store::Range;

const INDEX_HTML: &str = include_str!("../static/index.html");
/// A connection's WebSocket read buffer, allocated (and zero-filled) up front.
/// tungstenite's default is 128 KiB, which made an idle connection cost ~150 KiB.
/// Client frames are small (a `send` with a short body, a `join`, a `ping`), so
/// 512 bytes take one in a single read; a larger frame grows the buffer as it
/// arrives, read 512 bytes at a time. At 1 KiB, the read buffer was an eighth of
/// an idle connection's memory (jemalloc's bin stats at 15,000 connections).
const READ_BUFFER: usize = 512;
/// Bytes the writer gathers before writing to the socket (the flush writes the
/// rest). Frames are batched per flush anyway; this only caps the buffer.
const WRITE_BUFFER: usize = 8 * 1024;

pub fn router(app: Arc<App>) -> Router {
    let api = Router::new()
        .route("/api/rooms/{room}/messages", get(messages))
        .route("/api/rooms/{room}/members", get(members))
        .route_layer(middleware::from_fn_with_state(app.clone(), authorize));
    Router::new()
        .route("/", get(|| async { Html(INDEX_HTML) }))
        .route("/ws", get(ws))
        .merge(api)
        .route("/healthz", get(|| async { "ok" }))
        .route("/readyz", get(readyz))
        .route("/metrics", get(metrics))
        .route("/actuator/health", get(actuator_health))
        .route("/actuator/prometheus", get(metrics))
        .with_state(app)
}

async fn ws(
    upgrade: WebSocketUpgrade,
    State(app): State<Arc<App>>,
    Query(params): Query<Vec<(String, String)>>,
) -> Response {
    let param = |name: &str| {
        params
            .iter()
            .find(|(k, _)| k == name)
            .map(|(_, v)| v.as_str())
    };
    let rooms: Vec<String> = params
        .iter()
        .filter(|(k, _)| k == "room")
        .map(|(_, v)| v.clone())
        .collect();
    let user = resolve_user(app.verifier.as_ref(), param("token"), param("user"));
    let permit = app.connections.clone().try_acquire_owned().ok();
    let max = app.config.max_frame_bytes;
    let token = app.sessions.token();
    upgrade
        .read_buffer_size(READ_BUFFER)
        .write_buffer_size(WRITE_BUFFER)
        .max_message_size(max)
        .max_frame_size(max)
        .on_upgrade(move |socket| async move {
            let _token = token;
            let refusal = match (&user, &permit) {
                _ if app.shutdown.is_cancelled() => {
                    Some((CLOSE_GOING_AWAY, "going away".to_owned()))
                }
                (Err(e), _) => Some((CLOSE_POLICY, e.to_string())),
                (_, None) => Some((CLOSE_TRY_AGAIN, "server at connection limit".to_owned())),
                _ => None,
            };
            match (refusal, user) {
                (Some((code, reason)), _) => refuse(socket, code, reason).await,
                (None, Ok(user)) => session::serve(socket, app, user, rooms).await,
                (None, Err(_)) => {}
            }
            drop(permit);
        })
}

/// Closes a freshly upgraded socket with a code and reason.
async fn refuse(mut socket: WebSocket, code: u16, reason: String) {
    let _ = socket
        .send(Message::Close(Some(CloseFrame {
            code,
            reason: reason.into(),
        })))
        .await;
    // Wait briefly for the client's close reply so the frame is not lost to a reset.
    let _ = tokio::time::timeout(std::time::Duration::from_secs(2), async {
        while let Some(Ok(msg)) = socket.recv().await {
            if matches!(msg, Message::Close(_)) {
                break;
            }
        }
    })
    .await;
}

#[derive(Deserialize)]
struct TokenQuery {
    token: Option<String>,
}

/// With auth on, the JSON API wants the same JWT as the WebSocket: an
/// `Authorization: Bearer` header, or the `token` query parameter.
async fn authorize(State(app): State<Arc<App>>, request: Request, next: Next) -> Response {
    let Some(verifier) = app.verifier.as_ref() else {
        return next.run(request).await;
    };
    let query = Query::<TokenQuery>::try_from_uri(request.uri())
        .ok()
        .and_then(|Query(q)| q.token);
    let verified = bearer(request.headers())
        .or(query)
        .ok_or(AuthError::MissingToken)
        .and_then(|token| verifier.verify(&token));
    match verified {
        Ok(_) => next.run(request).await,
        Err(e) => unauthorized(e),
    }
}

fn bearer(headers: &HeaderMap) -> Option<String> {
    let value = headers.get(header::AUTHORIZATION)?.to_str().ok()?;
    let (scheme, token) = value.split_once(' ')?;
    scheme
        .eq_ignore_ascii_case("bearer")
        .then(|| token.trim().to_owned())
}

fn unauthorized(e: AuthError) -> Response {
    let mut response = api_error(
        StatusCode::UNAUTHORIZED,
        ErrorCode::Unauthorized,
        e.to_string(),
    );
    response.headers_mut().insert(
        header::WWW_AUTHENTICATE,
        header::HeaderValue::from_static("Bearer"),
    );
    response
}

fn api_error(status: StatusCode, code: ErrorCode, message: String) -> Response {
    (status, Json(json!({ "code": code, "message": message }))).into_response()
}

/// The 400 response for a room name that breaks the name rule, if it does.
fn invalid_room(room: &str) -> Option<Response> {
    (!valid_name(room)).then(|| {
        api_error(
            StatusCode::BAD_REQUEST,
            ErrorCode::InvalidRoom,
            format!("room name must match {NAME_RULE}"),
        )
    })
}

/// The messages API body; a struct so fields keep the documented order.
#[derive(Serialize)]
struct History<'a> {
    room: &'a str,
    messages: Vec<ChatMessage>,
}

#[derive(Deserialize)]
struct MessagesQuery {
    before: Option<u64>,
    after: Option<u64>,
    limit: Option<u32>,
}

async fn messages(
    State(app): State<Arc<App>>,
    Path(room): Path<String>,
    query: Result<Query<MessagesQuery>, QueryRejection>,
) -> Response {
    if let Some(r) = invalid_room(&room) {
        return r;
    }
    let Query(q) = match query {
        Ok(q) => q,
        Err(e) => {
            return api_error(
                StatusCode::BAD_REQUEST,
                ErrorCode::BadRequest,
                e.body_text(),
            );
        }
    };
    let max = app.config.history_max_limit;
    let limit = q.limit.unwrap_or(50.min(max));
    if !(1..=max).contains(&limit) {
        return api_error(
            StatusCode::BAD_REQUEST,
            ErrorCode::BadRequest,
            format!("limit must be within 1..={max}"),
        );
    }
    match app
        .store
        .range(
            &room,
            Range {
                after: q.after,
                before: q.before,
                limit,
            },
        )
        .await
    {
        Ok(mut messages) => {
            messages.retain(|m| !m.is_tombstone());
            Json(History {
                room: &room,
                messages,
            })
            .into_response()
        }
        Err(e) => api_error(
            StatusCode::SERVICE_UNAVAILABLE,
            ErrorCode::Unavailable,
            e.to_string(),
        ),
    }
}

async fn members(State(app): State<Arc<App>>, Path(room): Path<String>) -> Response {
    if let Some(r) = invalid_room(&room) {
        return r;
    }
    match app.presence.members(&room).await {
        Ok(members) => Json(json!({ "room": room, "members": &*members })).into_response(),
        Err(e) => api_error(
            StatusCode::SERVICE_UNAVAILABLE,
            ErrorCode::Unavailable,
            e.to_string(),
        ),
    }
}

async fn readyz(State(app): State<Arc<App>>) -> Response {
    readiness(&app, "ready", "not_ready").await
}

/// Spring Boot's health shape, for probes written for the Spring version.
async fn actuator_health(State(app): State<Arc<App>>) -> Response {
    readiness(&app, "UP", "DOWN").await
}

async fn readiness(app: &App, up: &str, down: &str) -> Response {
    match app.readiness().await {
        Ok(()) => Json(json!({ "status": up })).into_response(),
        Err(reason) => (
            StatusCode::SERVICE_UNAVAILABLE,
            Json(json!({ "status": down, "reason": reason })),
        )
            .into_response(),
    }
}

async fn metrics(State(app): State<Arc<App>>) -> Response {
    (
        [(
            header::CONTENT_TYPE,
            "application/openmetrics-text; version=1.0.0; charset=utf-8",
        )],
        app.metrics.render(),
    )
        .into_response()
}
