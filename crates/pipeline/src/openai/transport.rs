//! Sending the request: one attempt over HTTP (headers, the attempt's
//! timeout, the status), and the loop that retries it.

use reqwest::header::{AUTHORIZATION, CONTENT_TYPE, HeaderMap, HeaderValue};

use super::OpenAiProvider;
use super::failure::Failure;
use super::retry::retry_after;
use crate::Error;

/// What a successful attempt produced.
pub(super) enum Answer {
    /// The whole body of a non-streaming call.
    Body(Vec<u8>),
    /// A streaming response whose body is still to be read.
    Stream(reqwest::Response),
}

impl OpenAiProvider {
    /// The request's headers; the key's is marked sensitive.
    fn headers(&self, stream: bool) -> HeaderMap {
        let mut headers = HeaderMap::new();
        headers.insert(CONTENT_TYPE, HeaderValue::from_static("application/json"));
        if stream {
            headers.insert(
                reqwest::header::ACCEPT,
                HeaderValue::from_static("text/event-stream"),
            );
        }
        if let Some(key) = &self.api_key {
            headers.insert(AUTHORIZATION, key.header.clone());
        }
        headers
    }

    /// One attempt: send, and read the body unless streaming.
    pub(super) async fn attempt(
        &self,
        body: &[u8],
        stream: bool,
        attempt: u32,
    ) -> Result<Answer, Failure> {
        let exchange = async {
            let response = self
                .client
                .post(&self.endpoint)
                .headers(self.headers(stream))
                .body(body.to_vec())
                .send()
                .await
                .map_err(Failure::Transport)?;
            let status = response.status();
            tracing::debug!(
                attempt,
                status = status.as_u16(),
                stream,
                model = %self.model,
                "chat completion answered"
            );
            if status.is_success() {
                if stream {
                    return Ok(Answer::Stream(response));
                }
                let bytes = response.bytes().await.map_err(Failure::Transport)?;
                return Ok(Answer::Body(bytes.to_vec()));
            }
            let retry_after = retry_after(response.headers());
            // A body that cannot be read still leaves the status to report.
            let body = response
                .bytes()
                .await
                .map(|b| b.to_vec())
                .unwrap_or_default();
            Err(Failure::Status {
                status: status.as_u16(),
                retry_after,
                body,
            })
        };
        match tokio::time::timeout(self.timeout, exchange).await {
            Ok(outcome) => outcome,
            Err(_) => Err(Failure::Timeout),
        }
    }

    /// Attempts until an answer, a final error or the last retry.
    pub(super) async fn send(&self, body: &[u8], stream: bool) -> Result<Answer, Error> {
        let mut attempt: u32 = 1;
        loop {
            let failure = match self.attempt(body, stream, attempt).await {
                Ok(answer) => return Ok(answer),
                Err(failure) => failure,
            };
            let delay = self.after_failure(failure, attempt)?;
            tokio::time::sleep(delay).await;
            attempt += 1;
        }
    }
}
