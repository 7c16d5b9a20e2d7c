//! [`Middleware`]: hooks around the provider call, and the
//! [`ExecContext`] they see.

use async_trait::async_trait;
use statestore_core::{IdempotencyKey, SessionId};

use crate::{ChatRequest, ChatResponse, Error};

/// What a middleware sees of the execution.
#[derive(Debug, Clone)]
#[non_exhaustive]
pub struct ExecContext {
    /// The session.
    pub session_id: SessionId,
    /// The turn's id (the same in every attempt).
    pub turn_id: IdempotencyKey,
    /// 1 for the first attempt, more after concurrency retries.
    pub attempt: u32,
}

/// Hooks around the provider call: logging, redaction, metrics, guards.
///
/// `before` hooks run in the order middleware was added, `after` hooks in
/// reverse order (like nested wrappers). A hook returning an error stops
/// the execution; nothing is stored.
#[async_trait]
pub trait Middleware: Send + Sync {
    /// Sees (and may change) the request before it is sent.
    async fn before(&self, _ctx: &ExecContext, _request: &mut ChatRequest) -> Result<(), Error> {
        Ok(())
    }

    /// Sees (and may change) the reply before it is stored.
    async fn after(&self, _ctx: &ExecContext, _response: &mut ChatResponse) -> Result<(), Error> {
        Ok(())
    }
}
