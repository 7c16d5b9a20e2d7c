//! Middleware runs in a documented order and can refuse a turn.

use super::*;

struct Recorder {
    name: &'static str,
    log: Arc<Mutex<Vec<String>>>,
    reject: bool,
}

#[async_trait]
impl Middleware for Recorder {
    async fn before(&self, ctx: &ExecContext, request: &mut ChatRequest) -> Result<(), Error> {
        self.log
            .lock()
            .unwrap()
            .push(format!("before {} #{}", self.name, ctx.attempt));
        if self.reject {
            return Err(Error::Rejected("policy".into()));
        }
        // Redaction: the model never sees the secret; the store keeps what was said.
        for m in &mut request.messages {
            if m.text().contains("secret") {
                *m = Arc::new(Message::new(
                    m.role,
                    m.text().replace("secret", "[redacted]"),
                ));
            }
        }
        Ok(())
    }
    async fn after(&self, _: &ExecContext, _: &mut ChatResponse) -> Result<(), Error> {
        self.log
            .lock()
            .unwrap()
            .push(format!("after {}", self.name));
        Ok(())
    }
}

#[tokio::test]
async fn middleware_runs_in_a_documented_order_and_can_refuse() {
    let log = Arc::new(Mutex::new(Vec::new()));
    let store = memory();
    let pipe = Pipeline::builder(Arc::clone(&store), Arc::new(OfflineProvider::new()))
        .middleware(Arc::new(Recorder {
            name: "outer",
            log: log.clone(),
            reject: false,
        }))
        .middleware(Arc::new(Recorder {
            name: "inner",
            log: log.clone(),
            reject: false,
        }))
        .build();
    let done = pipe
        .execute("m", Role::User, "my secret plan")
        .await
        .unwrap();
    assert_eq!(done.reply.text(), "You said: my [redacted] plan");
    assert_eq!(
        *log.lock().unwrap(),
        [
            "before outer #1",
            "before inner #1",
            "after inner",
            "after outer"
        ]
    );

    let refusing = Pipeline::builder(Arc::clone(&store), Arc::new(OfflineProvider::new()))
        .middleware(Arc::new(Recorder {
            name: "guard",
            log,
            reject: true,
        }))
        .build();
    assert!(matches!(
        refusing.execute("m", Role::User, "x").await,
        Err(Error::Rejected(_))
    ));
    let state = store
        .load(&SessionId::new("m").unwrap())
        .await
        .unwrap()
        .unwrap();
    assert_eq!(state.messages.len(), 2, "a refused turn was stored");
}
