//! Exact OpenAI token counts.
//!
//! Two implementations of [`TokenCounter`] give the same counts as
//! tiktoken's `encode_ordinary` (special-token strings such as
//! `<|endoftext|>` count as the plain text they are):
//!
//! - [`Tiktoken`], on the `tiktoken-rs` crate, always compiled in;
//! - [`BpeOpenAi`], on GitHub's `bpe-openai` crate (feature `bpe-openai`, on
//!   by default): faster, and linear in time on any input, where tiktoken
//!   slows down superlinearly on long runs its pre-tokenizer does not split.
//!
//! [`exact`] returns the fastest one compiled in; the crate README has the
//! measurements behind that choice. Each encoding's tables load once per
//! process, on first use (20 to 130 ms in a release build), and are shared
//! by every counter of that encoding.

use std::sync::LazyLock;

use tiktoken_rs::CoreBPE;

use crate::TokenCounter;

/// OpenAI's BPE encodings.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
#[non_exhaustive]
pub enum OpenAiEncoding {
    /// `o200k_base`: GPT-4o, GPT-4.1, o-series.
    O200kBase,
    /// `cl100k_base`: GPT-4, GPT-3.5-turbo, text-embedding-3.
    Cl100kBase,
}

impl OpenAiEncoding {
    /// The encoding's name as OpenAI and tiktoken spell it, which is also
    /// what the exact counters report as [`TokenCounter::encoding`]:
    /// `"o200k_base"` or `"cl100k_base"`.
    #[must_use]
    pub const fn name(self) -> &'static str {
        match self {
            Self::O200kBase => "o200k_base",
            Self::Cl100kBase => "cl100k_base",
        }
    }

    /// The encoding an OpenAI chat or embedding model uses, by its name
    /// (dated snapshots included), or `None` for a model this crate does not
    /// know.
    ///
    /// `gpt-5*`, `gpt-4.1*`, `gpt-4.5*`, `gpt-4o*`, `chatgpt-4o*`, `o1*`,
    /// `o3*` and `o4*` use `o200k_base`; the other `gpt-4*`, `gpt-3.5*`
    /// (and Azure's `gpt-35*`), `text-embedding-3-*` and
    /// `text-embedding-ada-002` use `cl100k_base`. The table follows
    /// tiktoken's.
    ///
    /// ```
    /// use context_window::OpenAiEncoding;
    ///
    /// assert_eq!(OpenAiEncoding::for_model("gpt-4o-mini"), Some(OpenAiEncoding::O200kBase));
    /// assert_eq!(OpenAiEncoding::for_model("gpt-4-0613"), Some(OpenAiEncoding::Cl100kBase));
    /// assert_eq!(OpenAiEncoding::for_model("claude-sonnet-4"), None);
    /// ```
    #[must_use]
    pub fn for_model(model: &str) -> Option<Self> {
        // Longer prefixes first: "gpt-4o" and "gpt-4.1" before "gpt-4".
        const TABLE: [(&str, OpenAiEncoding); 14] = [
            ("gpt-5", OpenAiEncoding::O200kBase),
            ("gpt-4.1", OpenAiEncoding::O200kBase),
            ("gpt-4.5", OpenAiEncoding::O200kBase),
            ("gpt-4o", OpenAiEncoding::O200kBase),
            ("chatgpt-4o", OpenAiEncoding::O200kBase),
            ("o1", OpenAiEncoding::O200kBase),
            ("o3", OpenAiEncoding::O200kBase),
            ("o4", OpenAiEncoding::O200kBase),
            ("gpt-4", OpenAiEncoding::Cl100kBase),
            ("gpt-3.5", OpenAiEncoding::Cl100kBase),
            ("gpt-35", OpenAiEncoding::Cl100kBase),
            ("text-embedding-3-", OpenAiEncoding::Cl100kBase),
            ("text-embedding-ada-002", OpenAiEncoding::Cl100kBase),
            ("davinci-002", OpenAiEncoding::Cl100kBase),
        ];
        TABLE
            .iter()
            .find(|(prefix, _)| model.starts_with(prefix))
            .map(|&(_, encoding)| encoding)
    }
}

impl std::fmt::Display for OpenAiEncoding {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.name())
    }
}

/// Exact counts with the `tiktoken-rs` crate (OpenAI's own algorithm,
/// ported).
///
/// Counts ordinary text: special-token strings count as text, as with
/// tiktoken's `encode_ordinary`. Slower than [`BpeOpenAi`] (when that is
/// compiled in), and superlinear on long runs that the pre-tokenizer does
/// not split (one letter repeated, say); see the crate README for numbers.
///
/// tiktoken-rs itself panics on a run of about a million blanks (spaces,
/// tabs, other whitespace but line breaks) not followed by a line break: its
/// regex engine runs out of backtracking stack. This counter never hands it
/// such a run: runs of 100,000 blanks or more are split off at the
/// pre-tokenizer's own piece boundaries and byte-pair encoded directly, so
/// the count stays exact. The first such run in a process builds a second
/// copy of the encoding's tables (some 100 ms and tens of MB, once).
///
/// ```
/// use context_window::{OpenAiEncoding, Tiktoken, TokenCounter};
///
/// let counter = Tiktoken::new(OpenAiEncoding::O200kBase);
/// assert_eq!(counter.encoding(), "o200k_base");
/// assert_eq!(counter.count_text("Hello, world!"), 4);
/// ```
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct Tiktoken {
    encoding: OpenAiEncoding,
}

impl Tiktoken {
    /// A counter for `encoding`. Cheap: the encoding's tables load on the
    /// first count in the process and are shared from then on.
    #[must_use]
    pub const fn new(encoding: OpenAiEncoding) -> Self {
        Self { encoding }
    }

    /// The encoding this counter counts.
    #[must_use]
    pub const fn open_ai_encoding(&self) -> OpenAiEncoding {
        self.encoding
    }

    fn bpe(&self) -> &'static CoreBPE {
        match self.encoding {
            OpenAiEncoding::O200kBase => tiktoken_rs::o200k_base_singleton(),
            OpenAiEncoding::Cl100kBase => tiktoken_rs::cl100k_base_singleton(),
        }
    }
}

impl TokenCounter for Tiktoken {
    fn encoding(&self) -> &str {
        self.encoding.name()
    }

    fn count_text(&self, text: &str) -> usize {
        self.count_guarded(text, LONG_BLANK_RUN)
    }
}

/// Runs of at least this many blanks (whitespace other than `\r` and `\n`)
/// that are not followed by a line break are counted without tiktoken's
/// pre-tokenizer. Its `\s+(?!\S)` runs in `fancy-regex`'s backtracking VM,
/// which pushes a stack entry per character and fails at a million entries
/// (tiktoken-rs then panics: measured on 999,999 spaces between two
/// letters); this stays well below that.
const LONG_BLANK_RUN: usize = 100_000;

/// Whitespace that tiktoken's `[\r\n]` classes do not treat as a line break.
fn is_blank(c: char) -> bool {
    c.is_whitespace() && c != '\r' && c != '\n'
}

impl Tiktoken {
    /// `encode_ordinary(text).len()`, without handing tiktoken a run of
    /// `long_run` or more blanks that its regex would choke on.
    ///
    /// Such a run `R` (maximal, and followed by a non-whitespace character or
    /// the end of the text) always starts a pre-tokenizer piece: what comes
    /// before ends in a non-blank, and a whitespace run with a line break ends
    /// its piece at its last line break. tiktoken makes `R` minus its last
    /// character one piece (`\s+(?!\S)`), or all of `R` at the end of the
    /// text, and starts the next piece at the character left over. No
    /// pattern looks behind, and the only look-ahead (`(?!\S)`, `$`) is in
    /// the whitespace branches, so the text before `R` and the text from that
    /// last character on tokenize alone exactly as they do in place; the
    /// piece in between is byte-pair encoded directly.
    fn count_guarded(&self, text: &str, long_run: usize) -> usize {
        let bpe = self.bpe();
        if text.len() < long_run {
            // Fewer bytes than `long_run`: no run can be that long.
            return bpe.count_ordinary(text);
        }
        let mut total = 0;
        // Start of the text not counted yet.
        let mut done = 0;
        // The current run of blanks: its start, its length in characters and
        // where its last character starts.
        let mut run: Option<(usize, usize, usize)> = None;
        for (i, c) in text.char_indices() {
            if is_blank(c) {
                run = Some(match run {
                    Some((start, n, _)) => (start, n + 1, i),
                    None => (i, 1, i),
                });
                continue;
            }
            if let Some((start, n, last)) = run.take()
                && n >= long_run
                && c != '\r'
                && c != '\n'
            {
                total += bpe.count_ordinary(text.get(done..start).unwrap_or_default());
                total += self.count_piece(text.get(start..last).unwrap_or_default());
                done = last;
            }
        }
        if let Some((start, n, _)) = run
            && n >= long_run
        {
            total += bpe.count_ordinary(text.get(done..start).unwrap_or_default());
            total += self.count_piece(text.get(start..).unwrap_or_default());
        } else {
            total += bpe.count_ordinary(text.get(done..).unwrap_or_default());
        }
        total
    }

    /// Tokens in `piece` as one pre-tokenizer piece.
    fn count_piece(&self, piece: &str) -> usize {
        static O200K: LazyLock<Option<CoreBPE>> =
            LazyLock::new(|| whole_text_bpe(tiktoken_rs::o200k_base_singleton()));
        static CL100K: LazyLock<Option<CoreBPE>> =
            LazyLock::new(|| whole_text_bpe(tiktoken_rs::cl100k_base_singleton()));
        let whole = match self.encoding {
            OpenAiEncoding::O200kBase => &O200K,
            OpenAiEncoding::Cl100kBase => &CL100K,
        };
        match whole.as_ref() {
            Some(bpe) => bpe.count_ordinary(piece),
            // Cannot happen (the pattern is fixed and valid); a token is at
            // least a byte, so this bounds the count from above.
            None => piece.len(),
        }
    }
}

/// `bpe`'s ordinary vocabulary with a pre-tokenizer that keeps the whole text
/// as one piece, so that `count_ordinary` byte-pair encodes it directly.
/// Built only when a text has a long run of blanks; costs some 100 ms and
/// tens of MB, once per encoding.
fn whole_text_bpe(bpe: &CoreBPE) -> Option<CoreBPE> {
    // Ordinary ranks are 0, 1, 2, … up to the first gap; the special tokens
    // come after it.
    let encoder = (0..)
        .map_while(|rank| bpe.decode_bytes(&[rank]).ok().map(|bytes| (bytes, rank)))
        .collect();
    CoreBPE::new(encoder, Default::default(), "(?s:.+)").ok()
}

/// Exact counts with GitHub's `bpe-openai` crate (feature `bpe-openai`, on
/// by default).
///
/// Gives the same counts as [`Tiktoken`] (the tests check this on a mixed
/// corpus and on random text), faster, and in time linear in the input on
/// any text. `bpe-openai` knows no special tokens: its vocabulary is the
/// ordinary one, so a special-token string such as `<|endoftext|>` is split
/// and counted as plain text — exactly what tiktoken's `encode_ordinary`
/// does, and what [`TokenCounter::count_text`] asks for.
///
/// ```
/// use context_window::{BpeOpenAi, OpenAiEncoding, TokenCounter};
///
/// let counter = BpeOpenAi::new(OpenAiEncoding::Cl100kBase);
/// assert_eq!(counter.encoding(), "cl100k_base");
/// assert_eq!(counter.count_text("Hello, world!"), 4);
/// ```
#[cfg(feature = "bpe-openai")]
#[cfg_attr(docsrs, doc(cfg(feature = "bpe-openai")))]
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct BpeOpenAi {
    encoding: OpenAiEncoding,
}

#[cfg(feature = "bpe-openai")]
impl BpeOpenAi {
    /// A counter for `encoding`. Cheap: the encoding's tables load on the
    /// first count in the process and are shared from then on.
    #[must_use]
    pub const fn new(encoding: OpenAiEncoding) -> Self {
        Self { encoding }
    }

    /// The encoding this counter counts.
    #[must_use]
    pub const fn open_ai_encoding(&self) -> OpenAiEncoding {
        self.encoding
    }

    fn tokenizer(&self) -> &'static bpe_openai::Tokenizer {
        match self.encoding {
            OpenAiEncoding::O200kBase => bpe_openai::o200k_base(),
            OpenAiEncoding::Cl100kBase => bpe_openai::cl100k_base(),
        }
    }
}

#[cfg(feature = "bpe-openai")]
impl TokenCounter for BpeOpenAi {
    fn encoding(&self) -> &str {
        self.encoding.name()
    }

    fn count_text(&self, text: &str) -> usize {
        self.tokenizer().count(text)
    }
}

/// The exact counter for `encoding`: the fastest implementation compiled in
/// — [`BpeOpenAi`] with the `bpe-openai` feature (the default), otherwise
/// [`Tiktoken`]. Both give the same counts.
///
/// ```
/// use context_window::{OpenAiEncoding, TokenCounter, exact};
///
/// let counter = exact(OpenAiEncoding::O200kBase);
/// assert_eq!(counter.encoding(), "o200k_base");
/// assert_eq!(counter.count_text("Hello, world!"), 4);
/// ```
#[must_use]
pub fn exact(encoding: OpenAiEncoding) -> &'static dyn TokenCounter {
    #[cfg(feature = "bpe-openai")]
    {
        static O200K: BpeOpenAi = BpeOpenAi::new(OpenAiEncoding::O200kBase);
        static CL100K: BpeOpenAi = BpeOpenAi::new(OpenAiEncoding::Cl100kBase);
        match encoding {
            OpenAiEncoding::O200kBase => &O200K,
            OpenAiEncoding::Cl100kBase => &CL100K,
        }
    }
    #[cfg(not(feature = "bpe-openai"))]
    {
        static O200K: Tiktoken = Tiktoken::new(OpenAiEncoding::O200kBase);
        static CL100K: Tiktoken = Tiktoken::new(OpenAiEncoding::Cl100kBase);
        match encoding {
            OpenAiEncoding::O200kBase => &O200K,
            OpenAiEncoding::Cl100kBase => &CL100K,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const BOTH: [OpenAiEncoding; 2] = [OpenAiEncoding::O200kBase, OpenAiEncoding::Cl100kBase];

    /// The long-run path, forced with a tiny threshold, gives tiktoken's own
    /// count on text whose runs tiktoken can still handle.
    #[test]
    fn long_blank_runs_count_as_tiktoken_does() {
        let blanks = [
            " ", "\t", "\u{a0}", "\u{3000}", " \t", "\u{2028}", "\u{85}", "\u{b}",
        ];
        let before = ["", "x", "word.", "12", "\n", "  \n", "\r\n", "é", "中", " "];
        let after = [
            "", "x", "Word", "!", "(", "1", "\n", "\r\n", "\n\nx", "中", "😀", "'s",
        ];
        for encoding in BOTH {
            let counter = Tiktoken::new(encoding);
            let bpe = counter.bpe();
            for blank in blanks {
                for n in [1, 2, 3, 7, 40] {
                    let run = blank.repeat(n);
                    for b in before {
                        for a in after {
                            let text = format!("{b}{run}{a} and {b}{run}{a}");
                            let expected = bpe.count_ordinary(&text);
                            for long_run in [2, 3, 5] {
                                assert_eq!(
                                    counter.count_guarded(&text, long_run),
                                    expected,
                                    "{encoding} {text:?} long_run={long_run}"
                                );
                            }
                        }
                    }
                }
            }
        }
    }

    #[test]
    fn whole_text_vocabulary_is_the_ordinary_one() {
        for (encoding, size) in [
            (OpenAiEncoding::O200kBase, 199_998),
            (OpenAiEncoding::Cl100kBase, 100_256),
        ] {
            let bpe = Tiktoken::new(encoding).bpe();
            let whole = whole_text_bpe(bpe).unwrap();
            assert!(whole.decode_bytes(&[size - 1]).is_ok(), "{encoding}");
            assert!(whole.decode_bytes(&[size]).is_err(), "{encoding}");
            // One piece: "a b" is not split at the space.
            assert_eq!(
                whole.count_ordinary("hello world"),
                bpe.count_ordinary("hello world")
            );
            assert_eq!(whole.count_ordinary("    "), 1);
        }
    }

    /// tiktoken-rs alone panics on the first text (both encodings) and on
    /// the second (o200k); a run ending in a line break goes to tiktoken
    /// whole, and does not.
    #[test]
    fn huge_blank_runs_do_not_panic() {
        let run = " ".repeat(1_000_000);
        for encoding in BOTH {
            let counter = Tiktoken::new(encoding);
            let small = counter.count_text(&format!("x{}y", " ".repeat(1_000)));
            for text in [format!("x{run}y"), run.clone(), format!("x{run}\ny")] {
                let n = counter.count_text(&text);
                assert!(n > small && n < 1_000_000, "{encoding}: {n}");
                #[cfg(feature = "bpe-openai")]
                assert_eq!(n, BpeOpenAi::new(encoding).count_text(&text), "{encoding}");
            }
        }
    }
}
