//! Exact OpenAI token counts (to be written: see the crate README).

/// OpenAI's BPE encodings.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
#[non_exhaustive]
pub enum OpenAiEncoding {
    /// `o200k_base`: GPT-4o, GPT-4.1, o-series.
    O200kBase,
    /// `cl100k_base`: GPT-4, GPT-3.5-turbo, text-embedding-3.
    Cl100kBase,
}
