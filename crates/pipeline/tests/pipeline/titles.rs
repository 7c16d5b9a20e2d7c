//! Titles: set by a new session's first turn, in the turn's own write, and
//! listed without the history; later turns and replays leave them.

use super::*;
use pipeline::TitlePolicy;
use statestore_core::{ListQuery, TITLE_KEY};

/// Answers a title request with `title` (or fails it) and every other
/// request with "ok", whatever order they arrive in.
#[derive(Debug)]
struct Titler {
    title: Option<&'static str>,
    calls: AtomicUsize,
}

#[async_trait]
impl Provider for Titler {
    fn name(&self) -> &str {
        "titler"
    }
    async fn chat(&self, request: &ChatRequest) -> Result<ChatResponse, Error> {
        self.calls.fetch_add(1, Ordering::Relaxed);
        let asks_title = request
            .messages
            .first()
            .is_some_and(|m| m.role == Role::System && m.text().contains("title"));
        match (asks_title, self.title) {
            (true, Some(title)) => reply(Message::assistant(title)),
            (true, None) => Err(Error::Transport("the title model is down".into())),
            (false, _) => reply(Message::assistant("ok")),
        }
    }
}

async fn title_of(store: &Arc<dyn Store>, id: &str) -> Option<String> {
    let state = store
        .load(&SessionId::new(id).unwrap())
        .await
        .unwrap()
        .unwrap();
    state
        .metadata
        .get(TITLE_KEY)
        .and_then(|v| v.as_str())
        .map(str::to_owned)
}

#[tokio::test]
async fn the_first_message_titles_a_new_session_once() {
    let store = memory();
    let provider = Arc::new(Titler {
        title: None,
        calls: AtomicUsize::new(0),
    });
    let pipeline = Pipeline::builder(Arc::clone(&store), provider.clone())
        .title(TitlePolicy::FirstMessage { max_chars: 20 })
        .build();
    let turn = IdempotencyKey::new("t1").unwrap();
    let first = ExecOptions::new().turn_id(turn.clone());
    let long = "Plan a   weekend trip to Oslo in May";
    pipeline
        .execute_with("s", Role::User, long, first.clone())
        .await
        .unwrap();
    assert_eq!(
        title_of(&store, "s").await.as_deref(),
        Some("Plan a weekend trip…")
    );
    assert_eq!(
        provider.calls.load(Ordering::Relaxed),
        1,
        "no model call for it"
    );
    // A later turn, and a retry of the first, leave it.
    pipeline
        .execute("s", Role::User, "And in June?")
        .await
        .unwrap();
    let again = pipeline
        .execute_with("s", Role::User, long, first)
        .await
        .unwrap();
    assert!(again.replayed);
    assert_eq!(
        title_of(&store, "s").await.as_deref(),
        Some("Plan a weekend trip…")
    );
    let listed = store.list(&ListQuery::new()).await.unwrap();
    assert_eq!(
        listed.sessions[0].title.as_deref(),
        Some("Plan a weekend trip…")
    );
}

#[tokio::test]
async fn a_model_title_is_one_counted_call_beside_the_first_turn() {
    let store = memory();
    let provider = Arc::new(Titler {
        title: Some("\"Oslo in May.\""),
        calls: AtomicUsize::new(0),
    });
    let pipeline = Pipeline::builder(Arc::clone(&store), provider.clone())
        .title(TitlePolicy::Model { max_chars: 30 })
        .build();
    let done = pipeline
        .execute("s", Role::User, "Plan a trip to Oslo")
        .await
        .unwrap();
    assert_eq!(done.model_calls, 2);
    assert_eq!(done.usage.prompt_tokens, 20, "both calls' usage");
    assert_eq!(title_of(&store, "s").await.as_deref(), Some("Oslo in May"));
    let counted = store
        .load(&SessionId::new("s").unwrap())
        .await
        .unwrap()
        .unwrap()
        .counters;
    assert_eq!(counted[counters::MODEL_CALLS], 2);
    // Not again on later turns.
    let next = pipeline
        .execute("s", Role::User, "And June?")
        .await
        .unwrap();
    assert_eq!(next.model_calls, 1);
    assert_eq!(provider.calls.load(Ordering::Relaxed), 3);
}

#[tokio::test]
async fn a_failed_title_call_falls_back_to_the_first_message() {
    let store = memory();
    let provider = Arc::new(Titler {
        title: None,
        calls: AtomicUsize::new(0),
    });
    let pipeline = Pipeline::builder(Arc::clone(&store), provider)
        .title(TitlePolicy::Model { max_chars: 30 })
        .build();
    let done = pipeline
        .execute("s", Role::User, "Plan a trip to Oslo")
        .await
        .unwrap();
    assert_eq!(done.model_calls, 1, "the failed call is not counted");
    assert_eq!(
        title_of(&store, "s").await.as_deref(),
        Some("Plan a trip to Oslo")
    );
}

#[tokio::test]
async fn a_session_made_before_its_first_turn_is_titled_unless_it_has_one() {
    let store = memory();
    let provider = Arc::new(Titler {
        title: None,
        calls: AtomicUsize::new(0),
    });
    let pipeline = Pipeline::builder(Arc::clone(&store), provider)
        .title(TitlePolicy::FirstMessage { max_chars: 40 })
        .build();
    let owned = statestore_core::ConversationState::new(SessionId::new("owned").unwrap())
        .with_user_id("alice");
    store
        .save(&owned, statestore_core::Expect::Absent)
        .await
        .unwrap();
    let mut named = statestore_core::ConversationState::new(SessionId::new("named").unwrap());
    named
        .metadata
        .insert(TITLE_KEY.into(), "Chosen by the app".into());
    store
        .save(&named, statestore_core::Expect::Absent)
        .await
        .unwrap();
    for id in ["owned", "named"] {
        pipeline
            .execute(id, Role::User, "First question")
            .await
            .unwrap();
    }
    assert_eq!(
        title_of(&store, "owned").await.as_deref(),
        Some("First question")
    );
    assert_eq!(
        title_of(&store, "named").await.as_deref(),
        Some("Chosen by the app")
    );
}
