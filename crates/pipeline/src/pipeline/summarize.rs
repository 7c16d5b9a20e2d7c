//! Step 8: summarizing what the window dropped, and
//! [`ProviderSummarizer`], a summarizer that asks a model.

use std::sync::Arc;

use async_trait::async_trait;
use context_window::{Selection, Summarizer};
use statestore_core::{BoxError, Counters, Message, SessionId};

use super::{Pipeline, usage_counters};
use crate::{ChatRequest, Provider};

impl Pipeline {
    /// Summarizes what the window dropped, when no summary covers it yet.
    /// Failures are logged, not returned: the turn is already stored.
    pub(super) async fn maybe_summarize(
        &self,
        id: &SessionId,
        window: &Selection<'_>,
        summarizer: &dyn Summarizer,
    ) {
        let covered = window
            .summaries()
            .iter()
            .filter(|s| s.covers.start == 0)
            .map(|s| s.covers.end)
            .max()
            .unwrap_or(0);
        if window.first_position() <= covered {
            return;
        }
        let result = context_window::summarize_dropped(
            &*self.inner.store,
            id,
            &self.inner.policy,
            &*self.inner.counter,
            summarizer,
        )
        .await;
        if let Err(e) = result {
            tracing::warn!(error = %e, "summarizing failed");
        }
    }
}

/// A [`Summarizer`] that asks a provider.
#[derive(Debug)]
pub struct ProviderSummarizer {
    provider: Arc<dyn Provider>,
}

impl ProviderSummarizer {
    /// Summaries written by `provider`.
    #[must_use]
    pub fn new(provider: Arc<dyn Provider>) -> Self {
        Self { provider }
    }
}

#[async_trait]
impl Summarizer for ProviderSummarizer {
    async fn summarize(
        &self,
        previous: Option<&statestore_core::Summary>,
        messages: &[Arc<Message>],
    ) -> Result<String, BoxError> {
        Ok(self.summarize_counted(previous, messages).await?.0)
    }

    /// The summary, and the call's usage under the pipeline's
    /// [`counters`](super::counters) names.
    async fn summarize_counted(
        &self,
        previous: Option<&statestore_core::Summary>,
        messages: &[Arc<Message>],
    ) -> Result<(String, Counters), BoxError> {
        let mut text = String::new();
        if let Some(p) = previous {
            text.push_str("Summary so far: ");
            text.push_str(&p.content);
            text.push_str("\n\n");
        }
        for m in messages {
            text.push_str(m.role.as_str());
            text.push_str(": ");
            text.push_str(&m.text());
            text.push('\n');
        }
        let request = ChatRequest {
            messages: vec![
                Arc::new(Message::system(
                    "Summarize the conversation below in a few sentences. Keep names, facts, \
                     decisions and open questions.",
                )),
                Arc::new(Message::user(text)),
            ],
            ..ChatRequest::default()
        };
        let response = super::spans::chat(&*self.provider, &request, None, None, false)
            .await
            .map_err(Box::new)?;
        let cost = usage_counters(response.usage, 1);
        Ok((response.message.text().into_owned(), cost))
    }
}
