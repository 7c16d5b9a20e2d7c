//! The crate's one error type.

/// Why a window could not be selected or a compaction could not finish.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum Error {
    /// What must be sent — system prompt, summaries, and the newest user
    /// message with everything after it — does not fit the token budget by
    /// itself. Nothing is truncated silently: shorten the message, raise
    /// the budget, or summarize.
    #[error(
        "the newest user message needs {required} tokens with the system prompt and summaries, \
         but the budget is {budget} (context {context} − {reserved} reserved for the reply)"
    )]
    BudgetExceeded {
        /// Tokens the mandatory part needs.
        required: usize,
        /// Tokens available for the prompt.
        budget: usize,
        /// The model's context size.
        context: usize,
        /// Tokens reserved for the model's output.
        reserved: usize,
    },

    /// The store failed.
    #[error(transparent)]
    Store(#[from] statestore_core::Error),

    /// The summarizer failed.
    #[error("summarizer failed: {0}")]
    Summarizer(#[source] statestore_core::BoxError),
}
