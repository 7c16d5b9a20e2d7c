//! The token counters: exact counts against tiktoken-rs, chat-format counts
//! against `tiktoken_rs::num_tokens_from_messages`, the per-message cache,
//! pathological input and the character estimate.
#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::indexing_slicing,
    reason = "test code"
)]

use std::sync::atomic::{AtomicUsize, Ordering};

use context_window::count::{IMAGE_TOKENS, PER_MESSAGE, REPLY_PRIMING};
use context_window::{
    CharEstimate, OpenAiEncoding, Tiktoken, TokenCounter, annotate, count_message, exact,
    message_tokens,
};
use statestore_core::{ContentPart, Message, Role, TokenCount, ToolCall};
use tiktoken_rs::{ChatCompletionRequestMessage, CoreBPE, FunctionCall};

const BOTH: [OpenAiEncoding; 2] = [OpenAiEncoding::O200kBase, OpenAiEncoding::Cl100kBase];

/// tiktoken's own encoder: the reference.
fn reference(encoding: OpenAiEncoding) -> &'static CoreBPE {
    match encoding {
        OpenAiEncoding::O200kBase => tiktoken_rs::o200k_base_singleton(),
        OpenAiEncoding::Cl100kBase => tiktoken_rs::cl100k_base_singleton(),
        _ => unreachable!("an encoding this test does not know"),
    }
}

/// Every exact counter compiled in, for `encoding`.
fn counters(encoding: OpenAiEncoding) -> Vec<Box<dyn TokenCounter>> {
    #[cfg_attr(not(feature = "bpe-openai"), allow(unused_mut))]
    let mut all: Vec<Box<dyn TokenCounter>> =
        vec![Box::new(Tiktoken::new(encoding)), Box::new(exact(encoding))];
    #[cfg(feature = "bpe-openai")]
    all.push(Box::new(context_window::BpeOpenAi::new(encoding)));
    all
}

/// A mixed corpus: prose, code, scripts, emoji, whitespace, numbers, long
/// runs, special-token strings and the empty string.
fn corpus() -> Vec<(&'static str, String)> {
    let mut texts: Vec<(&'static str, String)> = [
        ("empty", ""),
        (
            "english",
            "The quick brown fox jumps over the lazy dog. It's a sentence that's been \
             used since the 1880s; they'd say it contains every letter, and we've checked. \
             DON'T SHOUT, I'LL hear you. Mr. O'Neill paid $1,234.56 on 2024-05-13 at 10:45am.",
        ),
        (
            "rust",
            "fn main() {\n    let v: Vec<u32> = (0..10).map(|x| x * x).collect();\n    \
             println!(\"{:?}\", v);\n}\n\nimpl<T: Clone> Foo<T> for Bar {\n\tfn baz(&self) -> \
             Option<&T> { self.0.get(0) } // comment\n}\n",
        ),
        (
            "python",
            "def fib(n: int) -> int:\n    \"\"\"Return the n-th Fibonacci number.\"\"\"\n    \
             if n < 2:\n        return n\n    return fib(n - 1) + fib(n - 2)\n\n\nif __name__ \
             == '__main__':\n    print([fib(i) for i in range(20)])\n",
        ),
        (
            "json",
            r#"{"id":"call_9f8e7d","type":"function","function":{"name":"get_weather","arguments":"{\"city\":\"Paris\",\"unit\":\"celsius\"}"},"values":[1,2.5,-3e10,null,true,false],"nested":{"a":{"b":{"c":[]}}}}"#,
        ),
        (
            "cjk",
            "我们今天去公园散步，天气非常好。日本語のテキストも含まれています。\
             한국어 문장도 있습니다. 漢字とひらがなとカタカナ、그리고 한글。",
        ),
        (
            "emoji",
            "Family 👨‍👩‍👧‍👦, rainbow flag 🏳️‍🌈, flags 🇫🇷🇯🇵🇺🇸, skin tones 👋🏽👍🏿, \
             keycap 1️⃣, technologist 👩🏻‍💻, heart ❤️‍🔥 and plain 😀😃😄!",
        ),
        (
            "rtl",
            "مرحبا بالعالم! هذه جملة باللغة العربية. שלום עולם, זה משפט בעברית. \
             Mixed: العربية and עברית with English.",
        ),
        (
            "whitespace",
            "  leading\ttabs\t\tand   runs    of     spaces\n\n\n\nblank lines\r\n\r\nCRLF \
             \u{a0}nbsp\u{3000}ideographic  \n   \n\t\n trailing   ",
        ),
        (
            "numbers",
            "0 1 12 123 1234 12345 123456 3.14159265358979 -42 1e-9 0xFF 1,000,000 \
             ١٢٣٤ ٤٥٦ 一二三 ½ ² 10^100",
        ),
        (
            "scripts",
            "Ελληνικά, Русский текст, हिन्दी भाषा, ภาษาไทย, e\u{301}te\u{301} (decomposed), \
             Z͑ͫ̓ͪ̂ͫ̽͏̴̙̤̞͉͚̯̞̠͍A̴̵̜̰͔ͫ͗͢L̠ͨͧͩ͘G̴̻͈͍͔̹̑͗̎̅͛́Ǫ̵̹̻̝̳͂̌̌͘!",
        ),
        (
            "special-token strings",
            "<|endoftext|> <|im_start|>user\nhi<|im_end|> <|fim_prefix|>a<|fim_middle|>\
             b<|fim_suffix|> <|endofprompt|><|startoftext|>",
        ),
        (
            "url and markdown",
            "See https://example.com/path?q=a%20b&x=1#frag and **bold** _it_ `code`\n\
             | a | b |\n|---|---|\n| 1 | 2 |\n> quote\n- [ ] task",
        ),
    ]
    .into_iter()
    .map(|(label, text)| (label, text.to_owned()))
    .collect();
    texts.push(("a x 5000", "a".repeat(5000)));
    texts.push(("== x 2000", "==".repeat(2000)));
    texts.push(("space x 3000 then x", format!("{}x", " ".repeat(3000))));
    texts.push(("newline x 3000", "\n".repeat(3000)));
    texts.push(("digits x 3000", "7".repeat(3000)));
    texts.push(("CJK x 2000", "中".repeat(2000)));
    let all = texts
        .iter()
        .map(|(_, t)| t.as_str())
        .collect::<Vec<_>>()
        .join("\n");
    texts.push(("everything", all));
    texts
}

#[test]
fn every_counter_matches_tiktoken_encode_ordinary() {
    for encoding in BOTH {
        let tiktoken = reference(encoding);
        for counter in counters(encoding) {
            assert_eq!(counter.encoding(), encoding.name());
            for (label, text) in corpus() {
                assert_eq!(
                    counter.count_text(&text),
                    tiktoken.encode_ordinary(&text).len(),
                    "{counter:?} on {label}"
                );
            }
        }
    }
}

#[test]
fn encoding_names_are_tiktoken_s() {
    assert_eq!(OpenAiEncoding::O200kBase.name(), "o200k_base");
    assert_eq!(OpenAiEncoding::Cl100kBase.name(), "cl100k_base");
    assert_eq!(OpenAiEncoding::O200kBase.to_string(), "o200k_base");
    assert_eq!(exact(OpenAiEncoding::O200kBase).encoding(), "o200k_base");
    assert_eq!(exact(OpenAiEncoding::Cl100kBase).encoding(), "cl100k_base");
    assert_eq!(CharEstimate.encoding(), "chars/4");
}

/// Special-token strings are ordinary text: several tokens, not one.
#[test]
fn special_token_strings_count_as_text() {
    for encoding in BOTH {
        let tiktoken = reference(encoding);
        for counter in counters(encoding) {
            for special in ["<|endoftext|>", "<|endofprompt|>"] {
                let n = counter.count_text(special);
                assert_eq!(n, tiktoken.encode_ordinary(special).len());
                assert_eq!(tiktoken.count_with_special_tokens(special), 1);
                assert!(n > 1, "{counter:?}: {special} counted as {n}");
            }
        }
    }
}

/// The default counter is the one the README says it is.
#[test]
fn exact_is_the_fastest_compiled_in() {
    let shown = format!("{:?}", exact(OpenAiEncoding::O200kBase));
    if cfg!(feature = "bpe-openai") {
        assert!(shown.starts_with("BpeOpenAi"), "{shown}");
    } else {
        assert!(shown.starts_with("Tiktoken"), "{shown}");
    }
}

#[test]
fn model_names_map_to_tiktoken_s_encodings() {
    for model in [
        "gpt-5",
        "gpt-5-mini",
        "gpt-5.1",
        "gpt-4.1",
        "gpt-4.1-nano-2025-04-14",
        "gpt-4.5-preview",
        "gpt-4o",
        "gpt-4o-mini",
        "gpt-4o-2024-08-06",
        "chatgpt-4o-latest",
        "o1",
        "o1-mini",
        "o3",
        "o3-mini",
        "o4-mini",
        "gpt-4",
        "gpt-4-0613",
        "gpt-4-turbo",
        "gpt-4-32k",
        "gpt-3.5-turbo",
        "gpt-3.5-turbo-0125",
        "gpt-35-turbo",
        "text-embedding-3-small",
        "text-embedding-ada-002",
    ] {
        let ours = OpenAiEncoding::for_model(model);
        let theirs = match tiktoken_rs::tokenizer::get_tokenizer(model) {
            Some(tiktoken_rs::tokenizer::Tokenizer::O200kBase) => Some(OpenAiEncoding::O200kBase),
            Some(tiktoken_rs::tokenizer::Tokenizer::Cl100kBase) => Some(OpenAiEncoding::Cl100kBase),
            _ => None,
        };
        assert!(ours.is_some(), "{model}");
        assert_eq!(ours, theirs, "{model}");
    }
    for model in [
        "claude-sonnet-4",
        "gemini-2.5-pro",
        "llama-3",
        "",
        "davinci",
    ] {
        assert_eq!(OpenAiEncoding::for_model(model), None, "{model}");
    }
}

/// A conversation with a system prompt, names, tool calls and tool results
/// (no special-token strings: the reference counts those as special).
fn conversation() -> Vec<Message> {
    vec![
        Message::system("You are a helpful assistant. Answer briefly; use tools when needed."),
        Message::user("What's the weather in Paris and in 東京 today? 🌦️").with_name("alice"),
        Message::assistant("").with_tool_calls(vec![
            ToolCall::new(
                "call_1",
                "get_weather",
                r#"{"city":"Paris","unit":"celsius"}"#,
            ),
            ToolCall::new(
                "call_2",
                "get_weather",
                r#"{"city":"東京","unit":"celsius"}"#,
            ),
        ]),
        Message::tool("call_1", r#"{"celsius":21,"sky":"clear"}"#),
        Message::tool("call_2", r#"{"celsius":27,"sky":"rain"}"#),
        Message::assistant("Paris: 21 °C and clear. Tokyo: 27 °C with rain.\n\nAnything else?")
            .with_name("weather_bot"),
        Message::user("Write a Rust function that adds two numbers.").with_name("bob_2"),
        Message::assistant("```rust\nfn add(a: i64, b: i64) -> i64 {\n    a + b\n}\n```"),
        Message::user("مرحبا! שלום!    and a few   spaces\t\ttabs\n\n\nnewlines"),
    ]
}

/// The same conversation in tiktoken-rs's request type.
fn as_requests(messages: &[Message]) -> Vec<ChatCompletionRequestMessage> {
    messages
        .iter()
        .map(|m| ChatCompletionRequestMessage {
            role: m.role.as_str().to_owned(),
            content: Some(m.text().into_owned()),
            name: m.name().map(str::to_owned),
            tool_calls: m
                .tool_calls()
                .iter()
                .map(|c| FunctionCall {
                    name: c.name.clone(),
                    arguments: c.arguments.clone(),
                })
                .collect(),
            ..Default::default()
        })
        .collect()
}

#[test]
fn chat_counts_match_num_tokens_from_messages() {
    let messages = conversation();
    let requests = as_requests(&messages);
    for model in ["gpt-4o", "gpt-4"] {
        let encoding = OpenAiEncoding::for_model(model).unwrap();
        let expected = tiktoken_rs::num_tokens_from_messages(model, &requests).unwrap();
        for counter in counters(encoding) {
            let ours: usize = messages
                .iter()
                .map(|m| count_message(&*counter, m))
                .sum::<usize>()
                + REPLY_PRIMING;
            assert_eq!(ours, expected, "{model} with {counter:?}");
        }
    }
}

#[test]
fn parts_count_each_text_and_a_fixed_cost_per_image() {
    let counter = exact(OpenAiEncoding::O200kBase);
    let message = Message::user(vec![
        ContentPart::text("Describe this picture:"),
        ContentPart::image_url("https://example.com/cat.png"),
        ContentPart::text("and this one."),
        ContentPart::image_url("data:image/png;base64,iVBORw0KGgo="),
    ]);
    let expected = PER_MESSAGE
        + counter.count_text("user")
        + counter.count_text("Describe this picture:")
        + counter.count_text("and this one.")
        + 2 * IMAGE_TOKENS;
    assert_eq!(count_message(counter, &message), expected);
}

/// Counts the calls to the counter it wraps.
#[derive(Debug)]
struct Counting<C> {
    inner: C,
    calls: AtomicUsize,
}

impl<C> Counting<C> {
    fn new(inner: C) -> Self {
        Self {
            inner,
            calls: AtomicUsize::new(0),
        }
    }

    fn calls(&self) -> usize {
        self.calls.load(Ordering::SeqCst)
    }
}

impl<C: TokenCounter> TokenCounter for Counting<C> {
    fn encoding(&self) -> &str {
        self.inner.encoding()
    }

    fn count_text(&self, text: &str) -> usize {
        self.calls.fetch_add(1, Ordering::SeqCst);
        self.inner.count_text(text)
    }
}

fn tool_calling_message() -> Message {
    Message::assistant("Looking that up.")
        .with_name("bot")
        .with_tool_calls(vec![ToolCall::new(
            "call_1",
            "search",
            r#"{"query":"token counting"}"#,
        )])
}

#[test]
fn annotate_then_message_tokens_does_not_count_again() {
    let o200k = Counting::new(exact(OpenAiEncoding::O200kBase));
    let mut message = tool_calling_message();

    annotate(&o200k, &mut message);
    let after_annotate = o200k.calls();
    assert!(after_annotate > 0);
    let tokens = count_message(exact(OpenAiEncoding::O200kBase), &message);
    assert_eq!(
        message.token_count,
        Some(TokenCount {
            encoding: "o200k_base".into(),
            tokens: u32::try_from(tokens).unwrap(),
        })
    );

    assert_eq!(message_tokens(&o200k, &message), tokens);
    annotate(&o200k, &mut message);
    assert_eq!(o200k.calls(), after_annotate, "the cache was not used");

    // The cache survives storage (JSON), and is still used after it.
    let stored: Message = serde_json::from_str(&serde_json::to_string(&message).unwrap()).unwrap();
    assert_eq!(message_tokens(&o200k, &stored), tokens);
    assert_eq!(o200k.calls(), after_annotate);

    // The cached number is what is returned: a planted one comes back as is.
    message.token_count = Some(TokenCount {
        encoding: "o200k_base".into(),
        tokens: 999_999,
    });
    assert_eq!(message_tokens(&o200k, &message), 999_999);
    assert_eq!(o200k.calls(), after_annotate);
}

#[test]
fn a_count_cached_for_another_encoding_is_not_used() {
    let mut message = tool_calling_message();
    message.token_count = Some(TokenCount {
        encoding: "o200k_base".into(),
        tokens: 999_999,
    });

    let cl100k = Counting::new(exact(OpenAiEncoding::Cl100kBase));
    let expected = count_message(&Tiktoken::new(OpenAiEncoding::Cl100kBase), &message);
    assert_eq!(message_tokens(&cl100k, &message), expected);
    assert_ne!(expected, 999_999);
    let calls = cl100k.calls();
    assert!(calls > 0, "the other encoding's count was used");

    // Annotating replaces the other encoding's count...
    annotate(&cl100k, &mut message);
    assert_eq!(
        message.token_count.as_ref().map(|c| c.encoding.as_str()),
        Some("cl100k_base")
    );
    assert_eq!(message_tokens(&cl100k, &message), expected);
    // ...and the estimate does not take the exact count for its own.
    let estimate = Counting::new(CharEstimate);
    assert_eq!(
        message_tokens(&estimate, &message),
        count_message(&CharEstimate, &message)
    );
    assert!(estimate.calls() > 0);
}

/// One character repeated for a megabyte: no pre-tokenizer split, the
/// worst case for tiktoken's merge loop (and, for blanks, for its regex).
#[test]
fn a_megabyte_of_one_character() {
    const MB: usize = 1 << 20;
    for unit in ["a", " ", "="] {
        let text = unit.repeat(MB);
        for encoding in BOTH {
            let n = exact(encoding).count_text(&text);
            assert!(n > 0 && n <= text.len(), "{encoding} {unit:?}: {n}");
            if unit == "a" {
                // Both vocabularies have "aaaaaaaa" and nothing longer.
                assert_eq!(n, MB / 8, "{encoding}");
            }
        }
    }
}

/// All exact counters agree on long runs (shorter than a megabyte: tiktoken
/// is slow on these, the more so in a debug build).
#[test]
fn long_runs_of_one_character_agree() {
    for unit in ["a", " ", "=", "\n", "7", "中", "😀"] {
        let text = unit.repeat(1 << 16);
        for encoding in BOTH {
            let tiktoken = reference(encoding).encode_ordinary(&text).len();
            for counter in counters(encoding) {
                assert_eq!(
                    counter.count_text(&text),
                    tiktoken,
                    "{counter:?} on {unit:?}"
                );
            }
        }
    }
}

#[test]
fn char_estimate_is_a_token_per_four_bytes_rounded_up() {
    for (text, expected) in [
        ("", 0),
        ("a", 1),
        ("abc", 1),
        ("abcd", 1),
        ("abcde", 2),
        ("abcdefgh", 2),
        ("abcdefghi", 3),
        ("é", 1),    // 2 bytes
        ("中文", 2), // 6 bytes
        ("😀😀", 2), // 8 bytes
    ] {
        assert_eq!(CharEstimate.count_text(text), expected, "{text:?}");
    }
    let message = Message::new(Role::User, "abcde");
    assert_eq!(
        count_message(&CharEstimate, &message),
        PER_MESSAGE + 1 + 2 // "user" is 4 bytes, "abcde" 5
    );
}

#[cfg(feature = "bpe-openai")]
mod bpe_openai_agrees {
    use context_window::{BpeOpenAi, OpenAiEncoding, Tiktoken, TokenCounter};
    use proptest::prelude::*;

    /// Characters at the pre-tokenizer's seams: letters of each case,
    /// digits, apostrophes (contractions), blanks, line breaks, punctuation,
    /// marks, CJK, emoji parts and RTL letters.
    const ALPHABET: &[&str] = &[
        "a", "Z", "é", "E\u{301}", "'", "'s", "'LL", "1", "42", " ", "  ", "\t", "\n", "\r\n",
        "\u{a0}", "\u{3000}", ".", "!", "/", "=", "{", "\"", "_", "中", "が", "한", "😀",
        "\u{200d}", "🇫", "\u{fe0f}", "م", "ש", "<|", "|>", "ǅ", "ʰ",
    ];

    fn tricky() -> impl Strategy<Value = String> {
        prop::collection::vec(prop::sample::select(ALPHABET), 0..40).prop_map(|v| v.concat())
    }

    proptest! {
        #[test]
        fn on_tricky_text(text in tricky()) {
            for encoding in [OpenAiEncoding::O200kBase, OpenAiEncoding::Cl100kBase] {
                prop_assert_eq!(
                    BpeOpenAi::new(encoding).count_text(&text),
                    Tiktoken::new(encoding).count_text(&text),
                    "{} on {:?}", encoding, text
                );
            }
        }

        #[test]
        fn on_any_text(text in any::<String>()) {
            for encoding in [OpenAiEncoding::O200kBase, OpenAiEncoding::Cl100kBase] {
                prop_assert_eq!(
                    BpeOpenAi::new(encoding).count_text(&text),
                    Tiktoken::new(encoding).count_text(&text),
                    "{} on {:?}", encoding, text
                );
            }
        }
    }
}
