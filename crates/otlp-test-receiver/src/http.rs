//! The minimal HTTP/1.1 server: keep-alive connections, `Content-Length`
//! bodies, one request at a time per connection, and the two OTLP paths.

use std::io::Read;
use std::sync::{Arc, Mutex, PoisonError};
use std::time::Duration;

use opentelemetry_proto::tonic::collector::metrics::v1::ExportMetricsServiceRequest;
use opentelemetry_proto::tonic::collector::trace::v1::ExportTraceServiceRequest;
use prost::Message;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::oneshot;

/// The largest request head read (request line and headers).
const MAX_HEAD: usize = 64 * 1024;
/// The largest body accepted, compressed or not: the exporters' own limit.
const MAX_BODY: usize = 64 * 1024 * 1024;
/// The media type of OTLP/HTTP protobuf requests and responses.
const PROTOBUF: &str = "application/x-protobuf";

/// One request as the receiver saw it, whatever became of it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ReceivedRequest {
    /// `POST`, `GET`, …
    pub method: String,
    /// The path without its query: `/v1/traces`, `/v1/metrics`, …
    pub path: String,
    /// The headers, names lowercase, in the order sent.
    pub headers: Vec<(String, String)>,
    /// The status code the receiver replied with.
    pub status: u16,
}

impl ReceivedRequest {
    /// The first value of header `name` (any case).
    pub fn header(&self, name: &str) -> Option<&str> {
        self.headers
            .iter()
            .find(|(n, _)| n.eq_ignore_ascii_case(name))
            .map(|(_, v)| v.as_str())
    }
}

/// What the receiver has kept.
#[derive(Debug, Default)]
pub(crate) struct State {
    pub(crate) traces: Vec<ExportTraceServiceRequest>,
    pub(crate) metrics: Vec<ExportMetricsServiceRequest>,
    pub(crate) requests: Vec<ReceivedRequest>,
}

pub(crate) type Shared = Arc<Mutex<State>>;

pub(crate) fn lock(shared: &Shared) -> std::sync::MutexGuard<'_, State> {
    shared.lock().unwrap_or_else(PoisonError::into_inner)
}

/// Accepts connections until `stop` fires (or its sender is dropped).
pub(crate) async fn serve(listener: TcpListener, shared: Shared, mut stop: oneshot::Receiver<()>) {
    loop {
        tokio::select! {
            _ = &mut stop => return,
            accepted = listener.accept() => match accepted {
                Ok((stream, _)) => {
                    tokio::spawn(connection(stream, Arc::clone(&shared)));
                }
                // Out of file descriptors and the like: try again shortly.
                Err(_) => tokio::time::sleep(Duration::from_millis(10)).await,
            },
        }
    }
}

/// A parsed request head.
#[derive(Debug)]
struct Head {
    method: String,
    path: String,
    keep_alive: bool,
    headers: Vec<(String, String)>,
}

impl Head {
    fn header(&self, name: &str) -> Option<&str> {
        self.headers
            .iter()
            .find(|(n, _)| n == name)
            .map(|(_, v)| v.as_str())
    }
}

/// A reply: status, content type and body.
struct Reply {
    status: u16,
    content_type: &'static str,
    body: Vec<u8>,
}

impl Reply {
    fn text(status: u16, text: impl Into<String>) -> Self {
        let mut body = text.into().into_bytes();
        body.push(b'\n');
        Reply {
            status,
            content_type: "text/plain; charset=utf-8",
            body,
        }
    }
}

async fn connection(mut stream: TcpStream, shared: Shared) {
    let _ = stream.set_nodelay(true);
    let mut buf = Vec::new();
    loop {
        let head = match read_head(&mut stream, &mut buf).await {
            Ok(Some(head)) => head,
            Ok(None) => return,
            Err(reply) => {
                let _ = write_reply(&mut stream, &reply, false).await;
                return;
            }
        };
        let head = match parse_head(&head) {
            Ok(head) => head,
            Err(reason) => {
                let _ = write_reply(&mut stream, &Reply::text(400, reason), false).await;
                return;
            }
        };
        if head.header("transfer-encoding").is_some() {
            let reply = Reply::text(411, "send a Content-Length body (no chunked encoding)");
            finish(&shared, &head, reply.status);
            let _ = write_reply(&mut stream, &reply, false).await;
            return;
        }
        let length = match head.header("content-length").map(str::parse::<usize>) {
            None => 0,
            Some(Ok(n)) if n <= MAX_BODY => n,
            Some(Ok(_)) => {
                let reply = Reply::text(413, format!("bodies over {MAX_BODY} bytes are refused"));
                finish(&shared, &head, reply.status);
                let _ = write_reply(&mut stream, &reply, false).await;
                return;
            }
            Some(Err(_)) => {
                let _ =
                    write_reply(&mut stream, &Reply::text(400, "bad Content-Length"), false).await;
                return;
            }
        };
        if head
            .header("expect")
            .is_some_and(|v| v.eq_ignore_ascii_case("100-continue"))
            && stream
                .write_all(b"HTTP/1.1 100 Continue\r\n\r\n")
                .await
                .is_err()
        {
            return;
        }
        let Ok(body) = read_body(&mut stream, &mut buf, length).await else {
            return;
        };
        let reply = handle(&head, body, &shared);
        finish(&shared, &head, reply.status);
        if write_reply(&mut stream, &reply, head.keep_alive)
            .await
            .is_err()
            || !head.keep_alive
        {
            return;
        }
    }
}

/// Records the request and the status it got.
fn finish(shared: &Shared, head: &Head, status: u16) {
    lock(shared).requests.push(ReceivedRequest {
        method: head.method.clone(),
        path: head.path.clone(),
        headers: head.headers.clone(),
        status,
    });
}

/// Reads up to the blank line ending a request head and returns the head,
/// leaving what follows in `buf`. `Ok(None)`: the peer closed between
/// requests.
async fn read_head(stream: &mut TcpStream, buf: &mut Vec<u8>) -> Result<Option<Vec<u8>>, Reply> {
    loop {
        if let Some(end) = buf.windows(4).position(|w| w == b"\r\n\r\n") {
            let head: Vec<u8> = buf.drain(..end + 4).collect();
            return Ok(Some(head));
        }
        if buf.len() > MAX_HEAD {
            return Err(Reply::text(431, "request head too large"));
        }
        let mut chunk = [0u8; 8192];
        match stream.read(&mut chunk).await {
            Ok(0) | Err(_) => return Ok(None),
            Ok(n) => buf.extend_from_slice(chunk.get(..n).unwrap_or_default()),
        }
    }
}

async fn read_body(
    stream: &mut TcpStream,
    buf: &mut Vec<u8>,
    length: usize,
) -> std::io::Result<Vec<u8>> {
    if buf.len() < length {
        let have = buf.len();
        buf.resize(length, 0);
        stream
            .read_exact(buf.get_mut(have..).unwrap_or_default())
            .await?;
    }
    Ok(buf.drain(..length).collect())
}

fn parse_head(head: &[u8]) -> Result<Head, &'static str> {
    let text = std::str::from_utf8(head).map_err(|_| "the request head is not UTF-8")?;
    let mut lines = text.split("\r\n");
    let mut request_line = lines.next().unwrap_or_default().split(' ');
    let (Some(method), Some(target), Some(version), None) = (
        request_line.next(),
        request_line.next(),
        request_line.next(),
        request_line.next(),
    ) else {
        return Err("malformed request line");
    };
    let http11 = match version {
        "HTTP/1.1" => true,
        "HTTP/1.0" => false,
        _ => return Err("only HTTP/1.0 and HTTP/1.1 are spoken here"),
    };
    let mut headers = Vec::new();
    for line in lines.filter(|l| !l.is_empty()) {
        let (name, value) = line.split_once(':').ok_or("malformed header line")?;
        headers.push((name.trim().to_ascii_lowercase(), value.trim().to_owned()));
    }
    let connection = headers
        .iter()
        .find(|(n, _)| n == "connection")
        .map(|(_, v)| v.to_ascii_lowercase());
    let keep_alive = match connection.as_deref() {
        Some("close") => false,
        Some("keep-alive") => true,
        _ => http11,
    };
    Ok(Head {
        method: method.to_owned(),
        path: target.split('?').next().unwrap_or_default().to_owned(),
        keep_alive,
        headers,
    })
}

/// Routes, checks the media type and encoding, decodes and keeps.
fn handle(head: &Head, body: Vec<u8>, shared: &Shared) -> Reply {
    let traces = match head.path.as_str() {
        "/v1/traces" => true,
        "/v1/metrics" => false,
        other => {
            return Reply::text(
                404,
                format!("no such path {other}: POST /v1/traces or /v1/metrics"),
            );
        }
    };
    if head.method != "POST" {
        return Reply::text(405, "only POST");
    }
    let media = head
        .header("content-type")
        .and_then(|v| v.split(';').next())
        .map(str::trim);
    if !media.is_some_and(|m| m.eq_ignore_ascii_case(PROTOBUF)) {
        return Reply::text(415, format!("only Content-Type: {PROTOBUF} is decoded"));
    }
    let body = match head
        .header("content-encoding")
        .map(str::to_ascii_lowercase)
        .as_deref()
    {
        None | Some("identity") => body,
        Some("gzip") => match gunzip(&body) {
            Ok(body) => body,
            Err(e) => return Reply::text(400, format!("bad gzip body: {e}")),
        },
        Some(other) => {
            return Reply::text(
                415,
                format!("Content-Encoding {other} is not decoded (gzip is)"),
            );
        }
    };
    let mut state = lock(shared);
    let decoded = if traces {
        ExportTraceServiceRequest::decode(body.as_slice()).map(|r| state.traces.push(r))
    } else {
        ExportMetricsServiceRequest::decode(body.as_slice()).map(|r| state.metrics.push(r))
    };
    match decoded {
        // An empty Export*ServiceResponse: no partial success to report.
        Ok(()) => Reply {
            status: 200,
            content_type: PROTOBUF,
            body: Vec::new(),
        },
        Err(e) => Reply::text(400, format!("bad protobuf: {e}")),
    }
}

fn gunzip(body: &[u8]) -> std::io::Result<Vec<u8>> {
    let mut out = Vec::new();
    flate2::read::GzDecoder::new(body)
        .take(MAX_BODY as u64 + 1)
        .read_to_end(&mut out)?;
    if out.len() > MAX_BODY {
        return Err(std::io::Error::other("the body inflates past the limit"));
    }
    Ok(out)
}

async fn write_reply(
    stream: &mut TcpStream,
    reply: &Reply,
    keep_alive: bool,
) -> std::io::Result<()> {
    let reason = match reply.status {
        200 => "OK",
        400 => "Bad Request",
        404 => "Not Found",
        405 => "Method Not Allowed",
        411 => "Length Required",
        413 => "Content Too Large",
        415 => "Unsupported Media Type",
        431 => "Request Header Fields Too Large",
        _ => "Unknown",
    };
    let mut out = format!(
        "HTTP/1.1 {} {reason}\r\nContent-Type: {}\r\nContent-Length: {}\r\n",
        reply.status,
        reply.content_type,
        reply.body.len()
    );
    if reply.status == 405 {
        out.push_str("Allow: POST\r\n");
    }
    if !keep_alive {
        out.push_str("Connection: close\r\n");
    }
    out.push_str("\r\n");
    let mut bytes = out.into_bytes();
    bytes.extend_from_slice(&reply.body);
    stream.write_all(&bytes).await?;
    stream.flush().await
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_a_request_head() {
        let head = parse_head(
            b"POST /v1/traces?x=1 HTTP/1.1\r\nHost: a\r\nContent-Type: application/x-protobuf\r\n\r\n",
        )
        .unwrap();
        assert_eq!(head.method, "POST");
        assert_eq!(head.path, "/v1/traces");
        assert!(head.keep_alive);
        assert_eq!(head.header("content-type"), Some(PROTOBUF));

        let head = parse_head(b"GET / HTTP/1.0\r\n\r\n").unwrap();
        assert!(!head.keep_alive, "HTTP/1.0 closes unless asked");
        let head = parse_head(b"GET / HTTP/1.1\r\nConnection: close\r\n\r\n").unwrap();
        assert!(!head.keep_alive);

        assert!(parse_head(b"GET /\r\n\r\n").is_err());
        assert!(parse_head(b"GET / HTTP/2\r\n\r\n").is_err());
        assert!(parse_head(b"GET / HTTP/1.1\r\nno colon\r\n\r\n").is_err());
    }
}
