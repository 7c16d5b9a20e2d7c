//! The provider's debug events, captured per test.

use super::*;

/// Collects the fields of every event from this crate's `openai` module,
/// one line per event.
#[derive(Clone, Default)]
pub(crate) struct Logs(pub(crate) Arc<Mutex<Vec<String>>>);

impl Logs {
    pub(crate) fn lines(&self) -> Vec<String> {
        self.0.lock().unwrap().clone()
    }

    /// The `delay_ms` of every "retrying" event, in order.
    pub(crate) fn delays_ms(&self) -> Vec<u64> {
        self.lines()
            .iter()
            .filter_map(|l| {
                l.split(' ')
                    .find_map(|f| f.strip_prefix("delay_ms="))
                    .map(|v| v.parse().unwrap())
            })
            .collect()
    }
}

pub(crate) struct Fields(pub(crate) String);

impl tracing::field::Visit for Fields {
    fn record_debug(&mut self, field: &tracing::field::Field, value: &dyn std::fmt::Debug) {
        self.0.push_str(&format!(" {}={:?}", field.name(), value));
    }
}

impl Logs {
    pub(crate) fn push(&self, event: &tracing::Event<'_>) {
        if event.metadata().target().starts_with("pipeline::openai") {
            let mut fields = Fields(format!("{}:", event.metadata().level()));
            event.record(&mut fields);
            self.0.lock().unwrap().push(fields.0);
        }
    }
}

thread_local! {
    /// The capture of the test running on this thread, if any.
    static CAPTURE: std::cell::RefCell<Option<Logs>> = const { std::cell::RefCell::new(None) };
}

/// The one global subscriber of this test binary: hands each event to the
/// capture of the thread it happens on. A global subscriber (rather than
/// one scoped subscriber per test) keeps every callsite enabled: with
/// scoped subscribers, a callsite first hit on a thread without one is
/// disabled for every thread until interest is rebuilt, and a test would
/// see no events at random.
pub(crate) struct Router;

impl tracing::Subscriber for Router {
    fn register_callsite(
        &self,
        _: &'static tracing::Metadata<'static>,
    ) -> tracing::subscriber::Interest {
        tracing::subscriber::Interest::always()
    }
    fn enabled(&self, _: &tracing::Metadata<'_>) -> bool {
        true
    }
    fn new_span(&self, _: &tracing::span::Attributes<'_>) -> tracing::span::Id {
        tracing::span::Id::from_u64(1)
    }
    fn record(&self, _: &tracing::span::Id, _: &tracing::span::Record<'_>) {}
    fn record_follows_from(&self, _: &tracing::span::Id, _: &tracing::span::Id) {}
    fn event(&self, event: &tracing::Event<'_>) {
        CAPTURE.with(|c| {
            if let Some(logs) = &*c.borrow() {
                logs.push(event);
            }
        });
    }
    fn enter(&self, _: &tracing::span::Id) {}
    fn exit(&self, _: &tracing::span::Id) {}
}

/// Ends a capture when dropped.
pub(crate) struct CaptureGuard;

impl Drop for CaptureGuard {
    fn drop(&mut self) {
        CAPTURE.with(|c| c.borrow_mut().take());
    }
}

/// Captures the provider's events on this thread (the tests run on a
/// current-thread runtime) until the guard drops.
pub(crate) fn capture_logs() -> (Logs, CaptureGuard) {
    static INSTALL: std::sync::Once = std::sync::Once::new();
    INSTALL.call_once(|| {
        tracing::subscriber::set_global_default(Router).unwrap();
    });
    let logs = Logs::default();
    CAPTURE.with(|c| *c.borrow_mut() = Some(logs.clone()));
    (logs, CaptureGuard)
}
