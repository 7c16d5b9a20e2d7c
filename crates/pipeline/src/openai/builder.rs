//! [`OpenAiProviderBuilder`]: the settings, from code or from the
//! environment, and the checks [`build`](OpenAiProviderBuilder::build) makes.

use std::fmt;
use std::time::Duration;

use reqwest::header::HeaderValue;

use super::{ApiKey, DEFAULT_BASE_URL, DEFAULT_MODEL, OpenAiProvider, REDACTED, RetryPolicy};
use crate::Error;

/// Configures an [`OpenAiProvider`]; from [`OpenAiProvider::builder`] or
/// [`OpenAiProviderBuilder::from_env`].
#[derive(Clone)]
pub struct OpenAiProviderBuilder {
    base_url: String,
    model: String,
    api_key: Option<String>,
    temperature: Option<f32>,
    max_tokens: Option<u32>,
    timeout: Duration,
    stream_idle_timeout: Option<Duration>,
    retry: RetryPolicy,
    context_tokens: Option<usize>,
}

impl fmt::Debug for OpenAiProviderBuilder {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("OpenAiProviderBuilder")
            .field("base_url", &self.base_url)
            .field("model", &self.model)
            .field("api_key", &self.api_key.as_ref().map(|_| REDACTED))
            .field("temperature", &self.temperature)
            .field("max_tokens", &self.max_tokens)
            .field("timeout", &self.timeout)
            .field("stream_idle_timeout", &self.stream_idle_timeout)
            .field("retry", &self.retry)
            .field("context_tokens", &self.context_tokens)
            .finish_non_exhaustive()
    }
}

impl Default for OpenAiProviderBuilder {
    fn default() -> Self {
        Self {
            base_url: DEFAULT_BASE_URL.to_owned(),
            model: DEFAULT_MODEL.to_owned(),
            api_key: None,
            temperature: None,
            max_tokens: None,
            timeout: Duration::from_secs(60),
            stream_idle_timeout: None,
            retry: RetryPolicy::default(),
            context_tokens: None,
        }
    }
}

impl OpenAiProviderBuilder {
    /// A builder filled from the environment: `OPENAI_API_KEY` (optional
    /// for servers other than OpenAI's), `OPENAI_BASE_URL` (default
    /// [`DEFAULT_BASE_URL`]) and `OPENAI_MODEL` (default [`DEFAULT_MODEL`]).
    /// Empty variables count as unset.
    #[must_use]
    pub fn from_env() -> Self {
        Self::from_lookup(|name| std::env::var(name).ok())
    }

    fn from_lookup(get: impl Fn(&str) -> Option<String>) -> Self {
        let get = |name: &str| get(name).filter(|v| !v.trim().is_empty());
        let mut builder = Self::default();
        if let Some(key) = get("OPENAI_API_KEY") {
            builder = builder.api_key(key.trim());
        }
        if let Some(url) = get("OPENAI_BASE_URL") {
            builder = builder.base_url(url.trim());
        }
        if let Some(model) = get("OPENAI_MODEL") {
            builder = builder.model(model.trim());
        }
        builder
    }

    /// The model's name, e.g. `"gpt-4o-mini"` or `"llama3.1:8b"`. Default
    /// [`DEFAULT_MODEL`].
    #[must_use]
    pub fn model(mut self, model: impl Into<String>) -> Self {
        self.model = model.into();
        self
    }

    /// The API key, sent as `Authorization: Bearer <key>`. An empty key
    /// means none (fine for local servers; OpenAI's API requires one).
    #[must_use]
    pub fn api_key(mut self, key: impl Into<String>) -> Self {
        let key = key.into();
        self.api_key = (!key.is_empty()).then_some(key);
        self
    }

    /// The API's base URL, up to and excluding `/chat/completions`, e.g.
    /// `http://localhost:11434/v1` for Ollama. Default [`DEFAULT_BASE_URL`].
    #[must_use]
    pub fn base_url(mut self, url: impl Into<String>) -> Self {
        self.base_url = url.into();
        self
    }

    /// The temperature used when a request has none. Default: none sent.
    #[must_use]
    pub fn temperature(mut self, temperature: f32) -> Self {
        self.temperature = Some(temperature);
        self
    }

    /// The `max_tokens` used when a request has none. Default: none sent.
    #[must_use]
    pub fn max_tokens(mut self, max_tokens: u32) -> Self {
        self.max_tokens = Some(max_tokens);
        self
    }

    /// The limit for one attempt: sending the request and reading the whole
    /// answer (when streaming: until the answer starts; then the
    /// [`stream_idle_timeout`](Self::stream_idle_timeout) applies). Default
    /// 60 s.
    #[must_use]
    pub fn timeout(mut self, timeout: Duration) -> Self {
        self.timeout = timeout;
        self
    }

    /// When streaming, the longest the answer may go without sending a byte
    /// once it has started (the time to the first token counts). A stream
    /// that stalls that long is abandoned and retried. There is no limit on
    /// a stream's total length as long as it keeps sending. Default: the
    /// [`timeout`](Self::timeout).
    #[must_use]
    pub fn stream_idle_timeout(mut self, timeout: Duration) -> Self {
        self.stream_idle_timeout = Some(timeout);
        self
    }

    /// How failed attempts are retried: all the retry settings at once.
    /// Default [`RetryPolicy::default`]. The four setters below change one
    /// setting of the policy each.
    #[must_use]
    pub fn retry(mut self, policy: RetryPolicy) -> Self {
        self.retry = policy;
        self
    }

    /// How many times a failed attempt (429, 5xx, timeout, no connection, a
    /// stream that broke off) is retried; `0` makes one attempt only.
    /// Default 2. Sets [`RetryPolicy::max_retries`].
    #[must_use]
    pub fn max_retries(mut self, retries: u32) -> Self {
        self.retry.max_retries = retries;
        self
    }

    /// The delay before the first retry, doubled for each further one.
    /// Default 500 ms. Sets [`RetryPolicy::initial_backoff`].
    #[must_use]
    pub fn retry_base_delay(mut self, delay: Duration) -> Self {
        self.retry.initial_backoff = delay;
        self
    }

    /// The longest wait between two attempts, whether from the backoff or
    /// from the server's `Retry-After`. Default 30 s. Sets
    /// [`RetryPolicy::max_backoff`].
    #[must_use]
    pub fn max_retry_delay(mut self, delay: Duration) -> Self {
        self.retry.max_backoff = delay;
        self
    }

    /// Whether backoff delays are scaled by a random factor in `[0.5, 1]`,
    /// so that many clients do not retry in lockstep. Default `true`. Sets
    /// [`RetryPolicy::jitter`].
    #[must_use]
    pub fn jitter(mut self, jitter: bool) -> Self {
        self.retry.jitter = jitter;
        self
    }

    /// The model's context size in tokens, reported by
    /// [`Provider::context_tokens`](crate::Provider::context_tokens).
    /// Default: unknown.
    #[must_use]
    pub fn context_tokens(mut self, tokens: usize) -> Self {
        self.context_tokens = Some(tokens);
        self
    }

    /// The provider.
    ///
    /// # Errors
    ///
    /// [`Error::Config`] when the base URL is not an `http`/`https` URL, the
    /// key cannot be sent in a header, the temperature is not a finite
    /// number, or no key is set for `api.openai.com`;
    /// [`Error::Transport`] when the HTTP client cannot be created.
    pub fn build(self) -> Result<OpenAiProvider, Error> {
        let config = |detail: &str| Error::Config {
            detail: detail.to_owned(),
        };
        let base_url = self.base_url.trim().trim_end_matches('/').to_owned();
        let url = reqwest::Url::parse(&base_url)
            .map_err(|e| config(&format!("the base URL is not valid: {e}")))?;
        if !matches!(url.scheme(), "http" | "https") {
            return Err(config("the base URL must be http:// or https://"));
        }
        if self.model.trim().is_empty() {
            return Err(config("the model name is empty"));
        }
        if self.temperature.is_some_and(|t| !t.is_finite()) {
            return Err(config("the temperature is not a finite number"));
        }
        let api_key = match self.api_key {
            Some(key) => {
                let mut header = HeaderValue::from_str(&format!("Bearer {key}"))
                    .map_err(|_| config("the API key contains characters a header cannot carry"))?;
                header.set_sensitive(true);
                Some(ApiKey { key, header })
            }
            None if url.host_str() == Some("api.openai.com") => {
                return Err(config(
                    "an API key is required for api.openai.com (set OPENAI_API_KEY)",
                ));
            }
            None => None,
        };

        // reqwest is built with rustls but without choosing its crypto:
        // install ring's process-wide unless the application chose one.
        let _ = rustls::crypto::ring::default_provider().install_default();
        let client = reqwest::Client::builder()
            .redirect(reqwest::redirect::Policy::none())
            .user_agent(concat!("statestore-pipeline/", env!("CARGO_PKG_VERSION")))
            .build()
            .map_err(|e| Error::Transport(Box::new(e)))?;

        Ok(OpenAiProvider {
            client,
            endpoint: format!("{base_url}/chat/completions"),
            base_url,
            model: self.model,
            api_key,
            temperature: self.temperature,
            max_tokens: self.max_tokens,
            timeout: self.timeout,
            stream_idle_timeout: self.stream_idle_timeout.unwrap_or(self.timeout),
            retry: self.retry,
            context_tokens: self.context_tokens,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn lookup(vars: &[(&str, &str)]) -> OpenAiProviderBuilder {
        let vars: Vec<(String, String)> = vars
            .iter()
            .map(|(k, v)| ((*k).to_owned(), (*v).to_owned()))
            .collect();
        OpenAiProviderBuilder::from_lookup(move |name| {
            vars.iter().find(|(k, _)| k == name).map(|(_, v)| v.clone())
        })
    }

    #[test]
    fn from_env_reads_key_url_and_model() {
        let p = lookup(&[
            ("OPENAI_API_KEY", "sk-env"),
            ("OPENAI_BASE_URL", "http://127.0.0.1:11434/v1/"),
            ("OPENAI_MODEL", "llama3.1"),
        ])
        .build()
        .unwrap();
        assert_eq!(p.base_url(), "http://127.0.0.1:11434/v1");
        assert_eq!(p.endpoint, "http://127.0.0.1:11434/v1/chat/completions");
        assert_eq!(p.model(), "llama3.1");
        assert_eq!(p.api_key.as_ref().unwrap().key, "sk-env");
    }

    #[test]
    fn from_env_defaults_and_requires_a_key_for_openai() {
        let err = lookup(&[]).build().unwrap_err();
        assert!(matches!(err, Error::Config { .. }), "{err:?}");
        let p = lookup(&[("OPENAI_API_KEY", "sk-env"), ("OPENAI_MODEL", "")])
            .build()
            .unwrap();
        assert_eq!(p.base_url(), DEFAULT_BASE_URL);
        assert_eq!(p.model(), DEFAULT_MODEL);
        // A local server needs no key.
        let p = lookup(&[("OPENAI_BASE_URL", "http://localhost:8000/v1")])
            .build()
            .unwrap();
        assert!(p.api_key.is_none());
    }

    #[test]
    fn the_retry_setters_edit_the_policy() {
        let p = OpenAiProvider::builder()
            .base_url("http://127.0.0.1:1/v1")
            .retry(RetryPolicy::default().max_retries(7))
            .retry_base_delay(Duration::from_millis(100))
            .max_retry_delay(Duration::from_millis(350))
            .jitter(false)
            .build()
            .unwrap();
        let policy = p.retry_policy();
        assert_eq!(policy.max_retries, 7);
        assert_eq!(policy.initial_backoff, Duration::from_millis(100));
        assert_eq!(policy.max_backoff, Duration::from_millis(350));
        assert!(!policy.jitter);
    }
}
