//! `GET /api/v1/events`: the engine's live events as server-sent events, for the dashboard.
//!
//! Each event is `event: <kind>` with `data:` one JSON [`Event`] (what changed, never a value);
//! a `: keep-alive` comment goes out every [`KEEP_ALIVE`] so proxies keep the connection; the
//! first message is `event: ready`. Only events of environments the token may view are sent.
//! A stream beyond [`cutover_engine::MAX_EVENT_STREAMS`] on the server or
//! [`cutover_engine::MAX_EVENT_STREAMS_PER_TOKEN`] of one token is refused with 429; a
//! client too slow to take the events loses its stream (`event: reset`, then the end); and
//! every stream ends after [`STREAM_LIFETIME`], so a revoked token stops seeing events soon.
//! The dashboard reconnects in all three cases and re-reads what it shows.
//!
//! Rejected: `EventSource` with the token in the URL (URLs land in logs and history); the
//! dashboard reads this stream with `fetch()`, which sends the `Authorization` header.

use std::time::Duration;

use axum::Extension;
use axum::extract::State;
use axum::response::sse::{Event as SseEvent, KeepAlive, Sse};
use axum::response::{IntoResponse, Response};
use cutover_engine::{Engine, Event, Principal};
use tokio::sync::broadcast::error::RecvError;
use tokio_stream::wrappers::ReceiverStream;
use utoipa_axum::router::OpenApiRouter;
use utoipa_axum::routes;

use crate::error::{ApiError, ErrorBody};

/// Between two keep-alive comments.
pub const KEEP_ALIVE: Duration = Duration::from_secs(15);
/// The longest a stream lasts before the client has to reconnect (and authenticate again).
pub const STREAM_LIFETIME: Duration = Duration::from_secs(300);
/// Events queued for one client before the stream waits for it (and then lags and ends).
const CLIENT_BUFFER: usize = 64;

pub fn routes() -> OpenApiRouter<Engine> {
    OpenApiRouter::new().routes(routes!(events))
}

/// Live events of the environments the token may view, as server-sent events: a run was
/// created, changed state, waits for an approval or finished; a stage changed; an
/// environment's versions, lifecycle or scheduler changed.
#[utoipa::path(get, path = "/api/v1/events", operation_id = "event_stream", tag = "server",
    responses((status = 200, description = "`text/event-stream`: `event: <kind>` with `data:` one JSON event per change, `event: ready` first, a keep-alive comment every 15 s; `event: reset` then the end when the client was too slow", body = Event, content_type = "text/event-stream"),
        (status = 429, description = "Too many event streams are open on this server or for this token: retry later", body = ErrorBody)))]
async fn events(
    State(engine): State<Engine>,
    Extension(principal): Extension<Principal>,
) -> Result<Response, ApiError> {
    let mut stream = engine
        .event_stream(principal.name.as_str())
        .map_err(|refused| ApiError::too_many_requests(refused.to_string(), 5))?;
    let (tx, rx) = tokio::sync::mpsc::channel::<Result<SseEvent, std::convert::Infallible>>(CLIENT_BUFFER);
    tokio::spawn(async move {
        if tx
            .send(Ok(SseEvent::default().event("ready").data("{}")))
            .await
            .is_err()
        {
            return;
        }
        let end = tokio::time::sleep(STREAM_LIFETIME);
        tokio::pin!(end);
        loop {
            let got = tokio::select! {
                got = stream.events.recv() => got,
                () = tx.closed() => return,
                () = &mut end => return,
            };
            let event = match got {
                Ok(event) => event,
                Err(RecvError::Lagged(_)) => {
                    let _ = tx.try_send(Ok(SseEvent::default().event("reset").data("{}")));
                    return;
                }
                Err(RecvError::Closed) => return,
            };
            if !crate::auth::may_view(&principal, &event.env) {
                continue;
            }
            let Ok(sse) = SseEvent::default().event(kind_name(&event)).json_data(&event) else {
                continue;
            };
            // A client that does not take what is queued holds this send; meanwhile the
            // engine's channel fills, and the next receive reports the lag: the stream ends.
            let sent = tokio::select! {
                sent = tx.send(Ok(sse)) => sent.is_ok(),
                () = &mut end => false,
            };
            if !sent {
                return;
            }
        }
    });
    Ok(Sse::new(ReceiverStream::new(rx))
        .keep_alive(KeepAlive::new().interval(KEEP_ALIVE).text("keep-alive"))
        .into_response())
}

fn kind_name(event: &Event) -> String {
    serde_json::to_value(event.kind)
        .ok()
        .and_then(|v| v.as_str().map(str::to_owned))
        .unwrap_or_else(|| "change".to_owned())
}
