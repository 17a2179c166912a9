//! A local HTTP server that answers as a provider would, from a queue of
//! replies, and records what it was sent.

#![allow(dead_code, unreachable_pub)]

use std::collections::VecDeque;
use std::convert::Infallible;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use axum::Router;
use axum::body::{Body, Bytes};
use axum::extract::State;
use axum::http::{HeaderMap, StatusCode, Uri};
use axum::response::Response;
use futures::StreamExt;
use serde_json::Value;
use toolgate_core::{AiMessage, ChatModel, ChatRequest, Message, ModelError, ToolSpec};
use toolgate_models::HttpOptions;

/// One answer of the mock server.
#[derive(Clone)]
pub enum Reply {
    /// A whole body.
    Body {
        status: u16,
        headers: Vec<(&'static str, String)>,
        body: String,
    },
    /// A `text/event-stream` body, sent piece by piece.
    Stream { pieces: Vec<Bytes> },
    /// A stream that sends `pieces`, then neither ends nor sends more.
    Stall { pieces: Vec<Bytes> },
    /// The reply, after a pause.
    After(Duration, Box<Reply>),
}

impl Reply {
    pub fn json(status: u16, body: &Value) -> Self {
        Reply::Body {
            status,
            headers: vec![("content-type", "application/json".to_owned())],
            body: body.to_string(),
        }
    }

    pub fn with_header(self, name: &'static str, value: &str) -> Self {
        match self {
            Reply::Body {
                status,
                mut headers,
                body,
            } => {
                headers.push((name, value.to_owned()));
                Reply::Body {
                    status,
                    headers,
                    body,
                }
            }
            other => other,
        }
    }

    /// A stream of whole SSE events.
    pub fn events(events: &[String]) -> Self {
        Reply::Stream {
            pieces: events.iter().map(|e| Bytes::from(e.clone())).collect(),
        }
    }

    /// The same events, cut every `size` bytes regardless of lines or
    /// characters, as a network may deliver them.
    pub fn events_cut_every(events: &[String], size: usize) -> Self {
        let all: Vec<u8> = events.concat().into_bytes();
        Reply::Stream {
            pieces: all.chunks(size).map(Bytes::copy_from_slice).collect(),
        }
    }
}

/// One request the server received.
#[derive(Debug, Clone)]
pub struct Received {
    pub path: String,
    pub headers: HeaderMap,
    pub body: Value,
    pub at: Instant,
}

#[derive(Default)]
struct Shared {
    replies: Mutex<VecDeque<Reply>>,
    received: Mutex<Vec<Received>>,
}

/// A running mock server.
pub struct Mock {
    pub url: String,
    shared: Arc<Shared>,
}

impl Mock {
    /// A server on a free port of 127.0.0.1 that gives `replies` in order.
    pub async fn start(replies: Vec<Reply>) -> Mock {
        Mock::serve(replies, false).await
    }

    /// Like [`Mock::start`], but the first connection is closed as soon as
    /// it is accepted, as a server that restarts or a load balancer that
    /// drops a connection would.
    pub async fn start_dropping_first_connection(replies: Vec<Reply>) -> Mock {
        Mock::serve(replies, true).await
    }

    async fn serve(replies: Vec<Reply>, drop_first: bool) -> Mock {
        let shared = Arc::new(Shared {
            replies: Mutex::new(replies.into()),
            received: Mutex::default(),
        });
        let app = Router::new()
            .fallback(handle)
            .with_state(Arc::clone(&shared));
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let url = format!("http://{}", listener.local_addr().unwrap());
        tokio::spawn(async move {
            if drop_first {
                let (socket, _) = listener.accept().await.unwrap();
                drop(socket);
            }
            axum::serve(listener, app).await.unwrap()
        });
        Mock { url, shared }
    }

    pub fn received(&self) -> Vec<Received> {
        self.shared.received.lock().unwrap().clone()
    }

    /// The only request received.
    pub fn only(&self) -> Received {
        let received = self.received();
        assert_eq!(received.len(), 1, "expected one request, got {received:#?}");
        received.into_iter().next().unwrap()
    }
}

async fn handle(
    State(shared): State<Arc<Shared>>,
    uri: Uri,
    headers: HeaderMap,
    body: Bytes,
) -> Response {
    let body = serde_json::from_slice(&body).unwrap_or(Value::Null);
    shared.received.lock().unwrap().push(Received {
        path: uri.path().to_owned(),
        headers,
        body,
        at: Instant::now(),
    });
    let reply = shared.replies.lock().unwrap().pop_front();
    match reply {
        Some(reply) => respond(reply).await,
        None => Response::builder()
            .status(StatusCode::INTERNAL_SERVER_ERROR)
            .header("x-should-retry", "false")
            .body(Body::from(
                r#"{"error": {"message": "the mock server has no reply left"}}"#,
            ))
            .unwrap(),
    }
}

async fn respond(mut reply: Reply) -> Response {
    while let Reply::After(pause, next) = reply {
        tokio::time::sleep(pause).await;
        reply = *next;
    }
    match reply {
        Reply::Body {
            status,
            headers,
            body,
        } => {
            let mut response = Response::builder().status(status);
            for (name, value) in headers {
                response = response.header(name, value);
            }
            response.body(Body::from(body)).unwrap()
        }
        Reply::Stream { pieces } => sse(pieces, false),
        Reply::Stall { pieces } => sse(pieces, true),
        Reply::After(..) => unreachable!(),
    }
}

fn sse(pieces: Vec<Bytes>, stall: bool) -> Response {
    // Yielding between pieces makes the server flush each one on its own,
    // so the client reads them as separate chunks.
    let pieces = futures::stream::iter(pieces).then(|piece| async move {
        tokio::task::yield_now().await;
        Ok::<_, Infallible>(piece)
    });
    let body = if stall {
        Body::from_stream(pieces.chain(futures::stream::pending()))
    } else {
        Body::from_stream(pieces)
    };
    Response::builder()
        .header("content-type", "text/event-stream")
        .header("cache-control", "no-cache")
        .body(body)
        .unwrap()
}

/// Retries in milliseconds, so that tests stay fast.
pub fn fast() -> HttpOptions {
    HttpOptions::default().backoff(Duration::from_millis(5), Duration::from_millis(20))
}

/// The seed's two tools, as a model is told about them.
pub fn tools() -> Vec<ToolSpec> {
    vec![
        ToolSpec::new(
            "count_emails",
            "Dummy function to count number of e-mails. Returns 2 * last_n_days.",
            serde_json::json!({
                "type": "object",
                "properties": {"last_n_days": {"type": "integer"}},
                "required": ["last_n_days"],
            }),
        ),
        ToolSpec::new(
            "send_email",
            "Dummy function for sending an e-mail.",
            serde_json::json!({
                "type": "object",
                "properties": {
                    "message": {"type": "string"},
                    "recipient": {"type": "string"},
                },
                "required": ["message", "recipient"],
            }),
        ),
    ]
}

pub fn ask(messages: Vec<Message>) -> ChatRequest {
    ChatRequest::new(messages, tools())
}

/// Asks with streaming on, and returns the answer and the pieces of text
/// the sink got.
pub async fn ask_streaming(
    model: &dyn ChatModel,
    messages: Vec<Message>,
) -> (Result<AiMessage, ModelError>, Vec<String>) {
    let pieces = Arc::new(Mutex::new(Vec::new()));
    let sink_pieces = Arc::clone(&pieces);
    let request = ask(messages).on_text(Arc::new(move |text: &str| {
        sink_pieces.lock().unwrap().push(text.to_owned())
    }));
    let answer = model.generate(request).await;
    let pieces = pieces.lock().unwrap().clone();
    (answer, pieces)
}

/// A port nothing listens on.
pub fn closed_port_url() -> String {
    let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let address = listener.local_addr().unwrap();
    drop(listener);
    format!("http://{address}")
}

/// A server that accepts one connection, reads the request, never answers,
/// and reports when the client closes the connection.
pub async fn silent_server() -> (
    String,
    tokio::sync::oneshot::Receiver<()>,
    tokio::sync::oneshot::Receiver<()>,
) {
    use tokio::io::AsyncReadExt;
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let url = format!("http://{}", listener.local_addr().unwrap());
    let (got_request, got_request_rx) = tokio::sync::oneshot::channel();
    let (closed, closed_rx) = tokio::sync::oneshot::channel();
    tokio::spawn(async move {
        let (mut socket, _) = listener.accept().await.unwrap();
        let mut buffer = vec![0u8; 64 * 1024];
        let mut seen = Vec::new();
        let mut got_request = Some(got_request);
        loop {
            match socket.read(&mut buffer).await {
                Ok(0) | Err(_) => break,
                Ok(n) => {
                    seen.extend_from_slice(&buffer[..n]);
                    if seen.windows(4).any(|w| w == b"\r\n\r\n")
                        && let Some(tx) = got_request.take()
                    {
                        let _ = tx.send(());
                    }
                }
            }
        }
        let _ = closed.send(());
    });
    (url, got_request_rx, closed_rx)
}
