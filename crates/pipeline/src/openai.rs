//! `OpenAiProvider`: OpenAI-compatible Chat Completions over HTTP (to be written).
