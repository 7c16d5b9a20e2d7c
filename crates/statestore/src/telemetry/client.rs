//! The OTLP exporters' HTTP client: reqwest 0.12's blocking client behind
//! `opentelemetry_http::HttpClient`.
//!
//! Why blocking: the SDK's batch span processor and periodic metric reader
//! export from threads of their own, with no async runtime, polling the
//! export future with a plain executor. reqwest's async client needs a tokio
//! runtime to drive its connections; its blocking client brings one on a
//! thread of its own.
//!
//! Its pitfalls, and what this file does about them:
//!
//! - Building one, or sending with it, inside a tokio runtime context
//!   panics (debug builds check, release builds may deadlock). The client
//!   is built lazily, at the first export, which happens on the SDK's
//!   thread; an export that is driven from a runtime thread after all is
//!   carried to a short-lived thread of its own.
//! - Dropping one joins its thread: inside a runtime that would block a
//!   worker. The last drop, if it happens on a runtime thread, is carried to
//!   a detached thread.

use std::io::Read;
use std::sync::{Mutex, PoisonError};
use std::time::Duration;

use opentelemetry_http::{Bytes, HttpClient, HttpError, Request, Response, ResponseBodyTooLarge};

/// The largest response body read (the OTLP exporters' own clients' limit).
const MAX_RESPONSE_BODY: u64 = 4 * 1024 * 1024;

/// One exporter's client. Each exporter gets its own, so each is dropped on
/// the SDK thread that shuts its exporter down.
#[derive(Debug)]
pub(super) struct BlockingClient {
    /// Per request, connecting included.
    timeout: Duration,
    client: Mutex<Option<reqwest::blocking::Client>>,
}

impl BlockingClient {
    pub(super) fn new(timeout: Duration) -> Self {
        BlockingClient {
            timeout,
            client: Mutex::new(None),
        }
    }

    /// The client, built on first use (on the calling thread, which is
    /// never a runtime thread: see `send_bytes`).
    fn client(&self) -> Result<reqwest::blocking::Client, HttpError> {
        let mut slot = self.client.lock().unwrap_or_else(PoisonError::into_inner);
        if let Some(client) = slot.as_ref() {
            return Ok(client.clone());
        }
        // reqwest is built with rustls but without choosing its crypto (as
        // the pipeline's OpenAI provider does): ring, unless the application
        // installed another provider first.
        let _ = rustls::crypto::ring::default_provider().install_default();
        let client = reqwest::blocking::Client::builder()
            .timeout(self.timeout)
            .connect_timeout(self.timeout)
            // Headers (OTEL_EXPORTER_OTLP_HEADERS may hold a token) go to
            // the configured collector only.
            .redirect(reqwest::redirect::Policy::none())
            .build()?;
        *slot = Some(client.clone());
        Ok(client)
    }

    fn send(&self, request: Request<Bytes>) -> Result<Response<Bytes>, HttpError> {
        let client = self.client()?;
        let request = reqwest::blocking::Request::try_from(request)?;
        let mut response = client.execute(request)?;
        let status = response.status();
        let headers = std::mem::take(response.headers_mut());
        let mut body = Vec::new();
        response
            .take(MAX_RESPONSE_BODY + 1)
            .read_to_end(&mut body)?;
        if body.len() as u64 > MAX_RESPONSE_BODY {
            return Err(Box::new(ResponseBodyTooLarge::new()));
        }
        let mut out = Response::builder().status(status).body(Bytes::from(body))?;
        *out.headers_mut() = headers;
        Ok(out)
    }
}

#[statestore_core::async_trait]
impl HttpClient for BlockingClient {
    async fn send_bytes(&self, request: Request<Bytes>) -> Result<Response<Bytes>, HttpError> {
        if tokio::runtime::Handle::try_current().is_err() {
            return self.send(request);
        }
        // Driven from a runtime thread (an SDK built with an async
        // runtime, or a simple processor exporting on the caller's
        // thread): the blocking client must not run here.
        std::thread::scope(|scope| {
            std::thread::Builder::new()
                .name("statestore-otlp-export".into())
                .spawn_scoped(scope, || self.send(request))?
                .join()
                .map_err(|_| HttpError::from("the OTLP export thread panicked"))?
        })
    }
}

impl Drop for BlockingClient {
    fn drop(&mut self) {
        let client = self
            .client
            .get_mut()
            .unwrap_or_else(PoisonError::into_inner)
            .take();
        if let Some(client) = client
            && tokio::runtime::Handle::try_current().is_ok()
        {
            // Dropping the last handle joins reqwest's thread: not on a
            // runtime worker. If the thread cannot start, drop it here.
            let _ = std::thread::Builder::new()
                .name("statestore-otlp-drop".into())
                .spawn(move || drop(client));
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Inside a runtime, building and sending go to another thread: no
    /// panic, and a connection refused comes back as an error.
    #[tokio::test(flavor = "current_thread")]
    async fn sends_from_inside_a_runtime_without_panicking() {
        let port = {
            let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
            listener.local_addr().unwrap().port()
        };
        let client = BlockingClient::new(Duration::from_millis(500));
        let request = Request::builder()
            .method("POST")
            .uri(format!("http://127.0.0.1:{port}/v1/traces"))
            .body(Bytes::from_static(b""))
            .unwrap();
        assert!(client.send_bytes(request).await.is_err());
        drop(client);
    }
}
