//! A tiny HTTP/1.1 server for GET requests (health and status endpoints) and the matching
//! client used by `tabby status`. One request per connection, `Connection: close`.

use anyhow::{bail, Context as _};
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};
use tokio::task::JoinSet;

/// Largest request head accepted.
const MAX_REQUEST: usize = 8192;
/// How long a client may take to send its request or read the response.
const IO_TIMEOUT: Duration = Duration::from_secs(5);
/// Connections served at once; more wait in the kernel's accept queue.
const MAX_CONNECTIONS: usize = 64;

/// A response.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Response {
    /// Status code.
    pub status: u16,
    /// Content-Type.
    pub content_type: &'static str,
    /// Body.
    pub body: String,
}

impl Response {
    /// 200 with a JSON body.
    pub fn json(value: &serde_json::Value) -> Response {
        Response {
            status: 200,
            content_type: "application/json",
            body: format!("{value:#}\n"),
        }
    }

    /// A plain text response.
    pub fn text(status: u16, body: impl Into<String>) -> Response {
        Response {
            status,
            content_type: "text/plain; charset=utf-8",
            body: body.into(),
        }
    }
}

/// Answers a GET for a path.
pub type Handler = Arc<dyn Fn(&str) -> Response + Send + Sync>;

/// Serves `listener` until the future is dropped; connection tasks end with it.
pub async fn serve(listener: TcpListener, handler: Handler) {
    let mut connections = JoinSet::new();
    loop {
        while connections.try_join_next().is_some() {}
        if connections.len() >= MAX_CONNECTIONS {
            connections.join_next().await;
            continue;
        }
        match listener.accept().await {
            Ok((stream, _)) => {
                let handler = Arc::clone(&handler);
                connections.spawn(async move {
                    let _ = tokio::time::timeout(IO_TIMEOUT, answer(stream, handler)).await;
                });
            }
            Err(error) => {
                tracing::warn!(%error, "HTTP accept failed");
                tokio::time::sleep(Duration::from_millis(100)).await;
            }
        }
    }
}

async fn answer(mut stream: TcpStream, handler: Handler) -> std::io::Result<()> {
    let mut head = Vec::with_capacity(1024);
    let mut chunk = [0u8; 1024];
    while !head.windows(4).any(|w| w == b"\r\n\r\n") {
        let n = stream.read(&mut chunk).await?;
        if n == 0 {
            return Ok(());
        }
        head.extend_from_slice(&chunk[..n]);
        if head.len() > MAX_REQUEST {
            return write(
                &mut stream,
                &Response::text(431, "request too large\n"),
                true,
            )
            .await;
        }
    }
    let text = String::from_utf8_lossy(&head);
    let mut parts = text.lines().next().unwrap_or_default().split_whitespace();
    let (method, target) = (
        parts.next().unwrap_or_default(),
        parts.next().unwrap_or_default(),
    );
    let path = target.split('?').next().unwrap_or_default();
    let response = match method {
        "GET" | "HEAD" => handler(path),
        _ => Response::text(405, "only GET is served\n"),
    };
    write(&mut stream, &response, method != "HEAD").await
}

async fn write(stream: &mut TcpStream, r: &Response, body: bool) -> std::io::Result<()> {
    let reason = match r.status {
        200 => "OK",
        404 => "Not Found",
        405 => "Method Not Allowed",
        431 => "Request Header Fields Too Large",
        503 => "Service Unavailable",
        _ => "",
    };
    let head = format!(
        "HTTP/1.1 {} {reason}\r\nContent-Type: {}\r\nContent-Length: {}\r\nConnection: close\r\n\r\n",
        r.status,
        r.content_type,
        r.body.len()
    );
    stream.write_all(head.as_bytes()).await?;
    if body {
        stream.write_all(r.body.as_bytes()).await?;
    }
    stream.shutdown().await
}

/// GETs `path` from `addr`; returns the status code and the body.
pub async fn get(addr: SocketAddr, path: &str) -> anyhow::Result<(u16, String)> {
    let exchange = async {
        let mut stream = TcpStream::connect(addr)
            .await
            .with_context(|| format!("connecting to {addr}"))?;
        let request = format!("GET {path} HTTP/1.1\r\nHost: {addr}\r\nConnection: close\r\n\r\n");
        stream.write_all(request.as_bytes()).await?;
        let mut raw = Vec::new();
        stream.read_to_end(&mut raw).await?;
        anyhow::Ok(raw)
    };
    let raw = tokio::time::timeout(IO_TIMEOUT, exchange)
        .await
        .with_context(|| format!("no answer from {addr} within {IO_TIMEOUT:?}"))??;
    let text = String::from_utf8(raw).context("response is not UTF-8")?;
    let Some((head, body)) = text.split_once("\r\n\r\n") else {
        bail!("malformed HTTP response from {addr}");
    };
    let status = head
        .split_whitespace()
        .nth(1)
        .and_then(|s| s.parse().ok())
        .with_context(|| format!("malformed HTTP status line from {addr}"))?;
    Ok((status, body.to_string()))
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used, clippy::expect_used)]

    use super::*;

    #[tokio::test]
    async fn server_answers_a_get_and_the_client_reads_it() {
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        let handler: Handler = Arc::new(|path| match path {
            "/livez" => Response::text(200, "ok\n"),
            _ => Response::text(404, "not found\n"),
        });
        let server = tokio::spawn(serve(listener, handler));
        assert_eq!(
            get(addr, "/livez").await.unwrap(),
            (200, "ok\n".to_string())
        );
        assert_eq!(get(addr, "/nope").await.unwrap().0, 404);
        server.abort();
    }
}
