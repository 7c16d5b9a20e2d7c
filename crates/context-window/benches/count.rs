//! Token counting throughput: each counter on about a megabyte of English,
//! code and CJK text, and on the worst case, one character repeated, at
//! 10 kB, 100 kB and 1 MB.
//!
//! ```text
//! cargo bench -p context-window --bench count -- --warm-up-time 1 --measurement-time 3
//! ```
//!
//! Texts are generated deterministically (a fixed-seed generator picking
//! from word lists), so every run measures the same bytes.
#![allow(
    missing_docs,
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::indexing_slicing,
    clippy::cast_possible_truncation,
    reason = "benchmark code"
)]

use std::hint::black_box;

use context_window::{CharEstimate, OpenAiEncoding, Tiktoken, TokenCounter};
use criterion::{
    BenchmarkId, Criterion, SamplingMode, Throughput, criterion_group, criterion_main,
};

const MB: usize = 1_000_000;

/// Every counter, with the name it has in the results.
fn counters() -> Vec<(&'static str, Box<dyn TokenCounter>)> {
    #[cfg_attr(not(feature = "bpe-openai"), allow(unused_mut))]
    let mut all: Vec<(&'static str, Box<dyn TokenCounter>)> = vec![
        (
            "tiktoken/o200k",
            Box::new(Tiktoken::new(OpenAiEncoding::O200kBase)),
        ),
        (
            "tiktoken/cl100k",
            Box::new(Tiktoken::new(OpenAiEncoding::Cl100kBase)),
        ),
    ];
    #[cfg(feature = "bpe-openai")]
    {
        use context_window::BpeOpenAi;
        all.push((
            "bpe-openai/o200k",
            Box::new(BpeOpenAi::new(OpenAiEncoding::O200kBase)),
        ));
        all.push((
            "bpe-openai/cl100k",
            Box::new(BpeOpenAi::new(OpenAiEncoding::Cl100kBase)),
        ));
    }
    all.push(("chars/4", Box::new(CharEstimate)));
    all
}

/// xorshift64*: deterministic and dependency-free.
struct Rng(u64);

impl Rng {
    fn next(&mut self) -> u64 {
        self.0 ^= self.0 >> 12;
        self.0 ^= self.0 << 25;
        self.0 ^= self.0 >> 27;
        self.0.wrapping_mul(0x2545_f491_4f6c_dd1d)
    }

    fn below(&mut self, n: usize) -> usize {
        (self.next() % n as u64) as usize
    }

    fn pick<'a>(&mut self, items: &[&'a str]) -> &'a str {
        items[self.below(items.len())]
    }
}

/// Appends pieces from `piece` until `target` bytes, then cuts at a
/// character boundary.
fn fill(target: usize, seed: u64, mut piece: impl FnMut(&mut Rng, &mut String)) -> String {
    let mut rng = Rng(seed);
    let mut text = String::with_capacity(target + 4096);
    while text.len() < target {
        piece(&mut rng, &mut text);
    }
    let mut end = target;
    while !text.is_char_boundary(end) {
        end -= 1;
    }
    text.truncate(end);
    text
}

const WORDS: &[&str] = &[
    "the",
    "of",
    "and",
    "to",
    "in",
    "is",
    "was",
    "that",
    "for",
    "it",
    "with",
    "as",
    "his",
    "on",
    "be",
    "at",
    "by",
    "had",
    "are",
    "but",
    "from",
    "or",
    "have",
    "an",
    "they",
    "which",
    "one",
    "you",
    "were",
    "her",
    "all",
    "she",
    "there",
    "would",
    "their",
    "we",
    "him",
    "been",
    "has",
    "when",
    "who",
    "will",
    "more",
    "no",
    "if",
    "out",
    "so",
    "said",
    "what",
    "up",
    "its",
    "about",
    "into",
    "than",
    "them",
    "can",
    "only",
    "other",
    "new",
    "some",
    "could",
    "time",
    "these",
    "two",
    "may",
    "then",
    "do",
    "first",
    "any",
    "my",
    "now",
    "such",
    "like",
    "our",
    "over",
    "man",
    "me",
    "even",
    "most",
    "made",
    "after",
    "also",
    "did",
    "many",
    "before",
    "must",
    "through",
    "back",
    "years",
    "where",
    "much",
    "your",
    "way",
    "well",
    "down",
    "should",
    "because",
    "each",
    "just",
    "those",
    "people",
    "how",
    "too",
    "little",
    "state",
    "good",
    "very",
    "make",
    "world",
    "still",
    "own",
    "see",
    "men",
    "work",
    "long",
    "get",
    "here",
    "between",
    "both",
    "life",
    "being",
    "under",
    "never",
    "day",
    "same",
    "another",
    "know",
    "while",
    "last",
    "might",
    "us",
    "great",
    "old",
    "year",
    "off",
    "come",
    "since",
    "against",
    "go",
    "came",
    "right",
    "used",
    "take",
    "three",
    "conversation",
    "assistant",
    "message",
    "budget",
    "window",
    "summary",
    "tokenizer",
    "request",
    "response",
    "history",
    "context",
    "encoding",
    "database",
    "latency",
    "throughput",
    "don't",
    "it's",
    "we're",
    "they've",
    "I'll",
    "she'd",
    "London",
    "Paris",
    "Monday",
    "OpenAI",
];

fn english(target: usize) -> String {
    fill(target, 0x5eed_0001, |rng, text| {
        // A paragraph of 3–7 sentences of 6–24 words.
        for _ in 0..3 + rng.below(5) {
            let words = 6 + rng.below(19);
            for w in 0..words {
                let word = rng.pick(WORDS);
                if w == 0 {
                    let mut chars = word.chars();
                    if let Some(first) = chars.next() {
                        text.extend(first.to_uppercase());
                        text.push_str(chars.as_str());
                    }
                } else {
                    text.push(' ');
                    match rng.below(40) {
                        0 => text.push_str(&rng.below(10_000).to_string()),
                        1 => text.push_str(&format!("{}.{}", rng.below(100), rng.below(100))),
                        _ => text.push_str(word),
                    }
                    if w + 1 < words && rng.below(12) == 0 {
                        text.push(',');
                    }
                }
            }
            text.push_str(rng.pick(&[".", ".", ".", "?", "!", ";"]));
            text.push(' ');
        }
        text.push_str("\n\n");
    })
}

const IDENTS: &[&str] = &[
    "count",
    "tokens",
    "message",
    "window",
    "budget",
    "store",
    "session_id",
    "encoder",
    "value",
    "result",
    "index",
    "buffer",
    "config",
    "request",
    "response",
    "handler",
    "state",
    "items",
];
const TYPES: &[&str] = &[
    "u32",
    "usize",
    "String",
    "&str",
    "Vec<u8>",
    "Option<u64>",
    "bool",
];

fn code(target: usize) -> String {
    fill(target, 0x5eed_0002, |rng, text| match rng.below(3) {
        0 => {
            let (f, a, b) = (rng.pick(IDENTS), rng.pick(IDENTS), rng.pick(IDENTS));
            let (ta, tr) = (rng.pick(TYPES), rng.pick(TYPES));
            let n = rng.below(1000);
            text.push_str(&format!(
                "/// Returns the {f} for `{a}`.\npub fn {f}_{n}({a}: {ta}, {b}: &mut Vec<{tr}>) \
                 -> Result<{tr}, Error> {{\n    let mut total = 0;\n    for (i, item) in \
                 {b}.iter().enumerate() {{\n        if i % {m} == 0 {{\n            total += \
                 item.len();\n        }}\n    }}\n    tracing::debug!(%total, \"{f} done\");\n    \
                 Ok({a}.into())\n}}\n\n",
                m = 2 + rng.below(9),
            ));
        }
        1 => {
            let (f, a, b) = (rng.pick(IDENTS), rng.pick(IDENTS), rng.pick(IDENTS));
            text.push_str(&format!(
                "def {f}_{n}({a}, {b}=None):\n    \"\"\"Compute {f} from {a}.\"\"\"\n    if {b} \
                 is None:\n        {b} = []\n    return [x * {k} for x in {a} if x > {k}]\n\n\n",
                n = rng.below(1000),
                k = rng.below(100),
            ));
        }
        _ => {
            let (a, b) = (rng.pick(IDENTS), rng.pick(IDENTS));
            text.push_str(&format!(
                "{{\"id\": \"call_{id:x}\", \"type\": \"function\", \"function\": {{\"name\": \
                 \"{a}\", \"arguments\": \"{{\\\"{b}\\\": {v}, \\\"flag\\\": true}}\"}}, \
                 \"values\": [{v}, {w}.5, null]}}\n",
                id = rng.next(),
                v = rng.below(100_000),
                w = rng.below(1000),
            ));
        }
    })
}

const CJK: &[&str] = &[
    "我们",
    "今天",
    "天气",
    "非常",
    "好",
    "公园",
    "散步",
    "学习",
    "中文",
    "工作",
    "时间",
    "问题",
    "朋友",
    "东京",
    "日本語",
    "の",
    "テキスト",
    "を",
    "含む",
    "です",
    "ます",
    "は",
    "が",
    "カタカナ",
    "ひらがな",
    "漢字",
    "한국어",
    "문장",
    "있습니다",
    "그리고",
    "서울",
    "사람",
    "데이터",
    "모델",
];

fn cjk(target: usize) -> String {
    fill(target, 0x5eed_0003, |rng, text| {
        for _ in 0..4 + rng.below(12) {
            text.push_str(rng.pick(CJK));
        }
        text.push_str(rng.pick(&["，", "。", "、", "！", "？", "。\n"]));
    })
}

fn corpora(c: &mut Criterion) {
    let counters = counters();
    for (corpus, text) in [
        ("english", english(MB)),
        ("code", code(MB)),
        ("cjk", cjk(MB)),
    ] {
        let mut group = c.benchmark_group(format!("count/{corpus}"));
        group.throughput(Throughput::BytesDecimal(text.len() as u64));
        for (name, counter) in &counters {
            // Load the tables before timing.
            counter.count_text("warm up");
            group.bench_with_input(BenchmarkId::from_parameter(name), &text, |b, text| {
                b.iter(|| counter.count_text(black_box(text)));
            });
        }
        group.finish();
    }
}

/// One character repeated: no pre-tokenizer split, so a single piece the
/// length of the text. `a` exercises the merge loop; blanks also exercise
/// tiktoken's regex (and, from 100,000 on, the long-run path of
/// `Tiktoken`).
fn worst_case(c: &mut Criterion) {
    let counters = counters();
    for unit in ['a', ' '] {
        let label = if unit == ' ' { "space" } else { "a" };
        let mut group = c.benchmark_group(format!("count/worst-{label}"));
        group.sampling_mode(SamplingMode::Flat).sample_size(10);
        for len in [10_000, 100_000, MB] {
            let text = unit.to_string().repeat(len);
            group.throughput(Throughput::BytesDecimal(len as u64));
            for (name, counter) in &counters {
                counter.count_text(&text);
                group.bench_with_input(BenchmarkId::new(*name, len), &text, |b, text| {
                    b.iter(|| counter.count_text(black_box(text)));
                });
            }
        }
        group.finish();
    }
}

criterion_group!(benches, corpora, worst_case);
criterion_main!(benches);
