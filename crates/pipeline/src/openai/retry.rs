//! When a failed attempt is tried again, and after how long: the
//! [`RetryPolicy`], the server's `Retry-After`, and the decision taken
//! after each failure.

use std::fmt;
use std::sync::Arc;
use std::time::Duration;

use reqwest::header::HeaderMap;

use super::OpenAiProvider;
use super::failure::Failure;
use crate::Error;

/// How an [`OpenAiProvider`] retries a failed attempt: how many times, and
/// how long it waits first. Set with
/// [`OpenAiProviderBuilder::retry`](super::OpenAiProviderBuilder::retry);
/// the [module documentation](super#retries-and-errors) says which failures
/// are retried.
///
/// The wait before retry *n* (1-based) is `initial_backoff × 2^(n-1)`,
/// capped at `max_backoff`, then scaled by a random factor in `[0.5, 1]`
/// when `jitter` is on, so that many clients do not retry in lockstep. A
/// wait the server asks for (`retry-after-ms` or `Retry-After`) replaces
/// the backoff, capped at `max_backoff` and not jittered.
///
/// The jitter's randomness comes from a [random
/// source](RetryPolicy::random_source) that can be replaced, as
/// `object_store`'s `BackoffConfig` takes its own RNG: a test makes the
/// delays exact with a fixed one.
///
/// ```
/// use std::time::Duration;
/// use pipeline::openai::RetryPolicy;
///
/// let policy = RetryPolicy::default()
///     .max_retries(4)
///     .initial_backoff(Duration::from_millis(200))
///     .max_backoff(Duration::from_secs(1))
///     // Always the largest factor: the delays without jitter.
///     .random_source(|| 1.0);
/// let delays: Vec<Duration> = (1..=4).map(|retry| policy.delay(retry, None)).collect();
/// assert_eq!(delays, [200, 400, 800, 1_000].map(Duration::from_millis));
/// // A server's Retry-After, capped:
/// assert_eq!(policy.delay(1, Some(Duration::from_secs(60))), Duration::from_secs(1));
/// ```
#[derive(Clone)]
pub struct RetryPolicy {
    /// How many times a failed attempt is retried; `0` makes one attempt
    /// only. Default 2.
    pub max_retries: u32,
    /// The delay before the first retry, doubled for each further one.
    /// Default 500 ms.
    pub initial_backoff: Duration,
    /// The longest wait between two attempts, whether from the backoff or
    /// from the server's `Retry-After`. Default 30 s.
    pub max_backoff: Duration,
    /// Whether backoff delays are scaled by a random factor in `[0.5, 1]`.
    /// Default `true`.
    pub jitter: bool,
    /// A number in `[0, 1]` for each jittered delay.
    random: Arc<dyn Fn() -> f64 + Send + Sync>,
}

impl Default for RetryPolicy {
    /// 2 retries, from 500 ms, doubling, with jitter, waits capped at 30 s.
    fn default() -> Self {
        Self {
            max_retries: 2,
            initial_backoff: Duration::from_millis(500),
            max_backoff: Duration::from_secs(30),
            jitter: true,
            random: Arc::new(clock_random),
        }
    }
}

impl fmt::Debug for RetryPolicy {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("RetryPolicy")
            .field("max_retries", &self.max_retries)
            .field("initial_backoff", &self.initial_backoff)
            .field("max_backoff", &self.max_backoff)
            .field("jitter", &self.jitter)
            .finish_non_exhaustive()
    }
}

impl RetryPolicy {
    /// Sets [`max_retries`](Self::max_retries).
    #[must_use]
    pub fn max_retries(mut self, retries: u32) -> Self {
        self.max_retries = retries;
        self
    }

    /// Sets [`initial_backoff`](Self::initial_backoff).
    #[must_use]
    pub fn initial_backoff(mut self, delay: Duration) -> Self {
        self.initial_backoff = delay;
        self
    }

    /// Sets [`max_backoff`](Self::max_backoff).
    #[must_use]
    pub fn max_backoff(mut self, delay: Duration) -> Self {
        self.max_backoff = delay;
        self
    }

    /// Sets [`jitter`](Self::jitter).
    #[must_use]
    pub fn jitter(mut self, jitter: bool) -> Self {
        self.jitter = jitter;
        self
    }

    /// Where the jitter's randomness comes from: called once for each
    /// jittered delay, it returns a number `r` in `[0, 1]` and the backoff
    /// is scaled by `0.5 + r / 2` (numbers outside are clamped; NaN counts
    /// as 1). The default mixes the clock with a randomly keyed hash, which
    /// is random enough to spread retries apart; a fixed source makes the
    /// delays exact (tests), a seeded generator makes them reproducible.
    #[must_use]
    pub fn random_source(mut self, random: impl Fn() -> f64 + Send + Sync + 'static) -> Self {
        self.random = Arc::new(random);
        self
    }

    /// The wait before retry `retry` (1-based: `1` follows the first
    /// attempt), given the wait the server asked for, if any. Calls the
    /// random source when the backoff is jittered.
    #[must_use]
    pub fn delay(&self, retry: u32, retry_after: Option<Duration>) -> Duration {
        if let Some(wait) = retry_after {
            return wait.min(self.max_backoff);
        }
        let exponent = retry.saturating_sub(1).min(31);
        let backoff = self
            .initial_backoff
            .saturating_mul(2u32.saturating_pow(exponent))
            .min(self.max_backoff);
        if self.jitter {
            backoff.mul_f64(self.jitter_factor())
        } else {
            backoff
        }
    }

    /// A factor in `[0.5, 1]` from the random source.
    fn jitter_factor(&self) -> f64 {
        let r = (self.random)();
        let r = if r.is_nan() { 1.0 } else { r.clamp(0.0, 1.0) };
        0.5 + r / 2.0
    }

    /// Whether attempt `attempt` (1-based) was the last one allowed.
    fn is_last(&self, attempt: u32) -> bool {
        attempt >= self.max_retries.saturating_add(1)
    }
}

/// The default random source: a number in `[0, 1]` (in steps of 1/1000).
fn clock_random() -> f64 {
    use std::hash::BuildHasher;
    let bits = std::collections::hash_map::RandomState::new().hash_one(std::time::Instant::now());
    f64::from(u32::try_from(bits % 1_001).unwrap_or(0)) / 1_000.0
}

/// `retry-after-ms` (OpenAI's, in milliseconds) or `Retry-After` (seconds,
/// possibly fractional). HTTP dates are ignored.
pub(super) fn retry_after(headers: &HeaderMap) -> Option<Duration> {
    let number = |name: &str| -> Option<f64> {
        let value = headers
            .get(name)?
            .to_str()
            .ok()?
            .trim()
            .parse::<f64>()
            .ok()?;
        (value.is_finite() && value >= 0.0).then_some(value)
    };
    if let Some(ms) = number("retry-after-ms") {
        return Duration::try_from_secs_f64(ms / 1000.0).ok();
    }
    number("retry-after").and_then(|s| Duration::try_from_secs_f64(s).ok())
}

impl OpenAiProvider {
    /// After attempt `attempt` (1-based) failed: the wait before the next
    /// one, or the error to return when `failure` is not retried or no
    /// attempts are left.
    pub(super) fn after_failure(&self, failure: Failure, attempt: u32) -> Result<Duration, Error> {
        let retry_after = match &failure {
            Failure::Status {
                status,
                retry_after,
                ..
            } if *status == 429 || (500..=599).contains(status) => *retry_after,
            Failure::Status { .. } | Failure::Invalid(_) => {
                tracing::debug!(
                    attempt,
                    outcome = %failure.describe(),
                    "chat completion failed; not retried"
                );
                return Err(self.final_error(failure, attempt));
            }
            Failure::Timeout
            | Failure::Transport(_)
            | Failure::Stalled
            | Failure::CutShort(_)
            | Failure::Malformed(_)
            | Failure::ErrorEvent { .. } => None,
        };
        if self.retry.is_last(attempt) {
            tracing::debug!(
                attempt,
                outcome = %failure.describe(),
                "chat completion failed; no retries left"
            );
            return Err(self.final_error(failure, attempt));
        }
        let delay = self.retry.delay(attempt, retry_after);
        let cause = failure.cause();
        statestore_core::telemetry::count(statestore_core::telemetry::Count::Retry { cause });
        // The pipeline's `chat` span declares the field: the attempts so far.
        tracing::Span::current().record("statestore.attempts", attempt + 1);
        // INFO: a retry is worth an operator's attention, and becomes an
        // event on the `chat` span wherever spans are exported.
        tracing::info!(
            attempt,
            cause,
            outcome = %failure.describe(),
            delay_ms = u64::try_from(delay.as_millis()).unwrap_or(u64::MAX),
            "chat completion attempt failed; retrying"
        );
        Ok(delay)
    }
}

#[cfg(test)]
mod tests {
    use reqwest::header::HeaderValue;

    use super::*;

    #[test]
    fn backoff_doubles_and_is_capped() {
        let p = OpenAiProvider::builder()
            .base_url("http://127.0.0.1:1/v1")
            .retry_base_delay(Duration::from_millis(100))
            .max_retry_delay(Duration::from_millis(350))
            .jitter(false)
            .build()
            .unwrap();
        let p = p.retry_policy();
        assert_eq!(p.delay(1, None), Duration::from_millis(100));
        assert_eq!(p.delay(2, None), Duration::from_millis(200));
        assert_eq!(p.delay(3, None), Duration::from_millis(350));
        assert_eq!(p.delay(40, None), Duration::from_millis(350));
        assert_eq!(
            p.delay(1, Some(Duration::from_secs(9))),
            Duration::from_millis(350)
        );
        assert_eq!(p.delay(3, Some(Duration::ZERO)), Duration::ZERO);
        let jittered = OpenAiProvider::builder()
            .base_url("http://127.0.0.1:1/v1")
            .retry_base_delay(Duration::from_millis(100))
            .build()
            .unwrap();
        for _ in 0..100 {
            let d = jittered.retry_policy().delay(1, None);
            assert!(d >= Duration::from_millis(50) && d <= Duration::from_millis(100));
        }
    }

    #[test]
    fn the_random_source_is_clamped() {
        let policy = |r: f64| {
            RetryPolicy::default()
                .initial_backoff(Duration::from_millis(100))
                .random_source(move || r)
        };
        assert_eq!(policy(-3.0).delay(1, None), Duration::from_millis(50));
        assert_eq!(policy(7.0).delay(1, None), Duration::from_millis(100));
        assert_eq!(policy(f64::NAN).delay(1, None), Duration::from_millis(100));
        for _ in 0..100 {
            let r = clock_random();
            assert!((0.0..=1.0).contains(&r), "{r}");
        }
    }

    #[test]
    fn retry_after_headers() {
        let mut h = HeaderMap::new();
        assert_eq!(retry_after(&h), None);
        h.insert("retry-after", HeaderValue::from_static("2"));
        assert_eq!(retry_after(&h), Some(Duration::from_secs(2)));
        h.insert("retry-after-ms", HeaderValue::from_static("150"));
        assert_eq!(retry_after(&h), Some(Duration::from_millis(150)));
        h.insert("retry-after-ms", HeaderValue::from_static("soon"));
        assert_eq!(retry_after(&h), Some(Duration::from_secs(2)));
        h.insert(
            "retry-after",
            HeaderValue::from_static("Wed, 21 Oct 2015 07:28:00 GMT"),
        );
        assert_eq!(retry_after(&h), None);
    }
}
