//! Decoding the most common stored message fast: a message with a role, a
//! text body, a cached token count and a timestamp, nothing else, exactly
//! as [`encode_message`] writes it:
//!
//! ```text
//! {"role":"user","content":"text with \"escapes\"\n","token_count":{"encoding":"o200k_base","tokens":12},"timestamp":1733390000000}
//! ```
//!
//! (the token count and the timestamp may be absent). Such a message is read here by one pass
//! over its bytes, in about a quarter of what `serde_json`'s derived
//! deserializer takes (which matches each field name, and visits the body
//! through [`Content`]'s deserializer): on a 10,000-message load, most of
//! the client's work after the bytes arrive.
//!
//! Anything else — another field, another order, white space, a number
//! written otherwise, a string `serde_json` would refuse — returns `None`,
//! and [`decode_message`] reads the message with `serde_json`. This path
//! never accepts what `serde_json` refuses nor reads anything differently;
//! the tests hold it to that on arbitrary messages and on arbitrary bytes.
//!
//! [`encode_message`]: super::encode_message
//! [`decode_message`]: super::decode_message

use crate::{Content, Message, Role, Timestamp, TokenCount};

/// `bytes` as a message of the plain shape, or `None` for `serde_json`.
pub(super) fn message(bytes: &[u8]) -> Option<Message> {
    let mut r = Reader { bytes, at: 0 };
    r.literal(b"{\"role\":\"")?;
    let role = match r.until(b'"')? {
        b"user" => Role::User,
        b"assistant" => Role::Assistant,
        b"system" => Role::System,
        b"tool" => Role::Tool,
        _ => return None,
    };
    r.literal(b",\"content\":")?;
    let text = r.string()?;
    let token_count = if r.literal(b",\"token_count\":{\"encoding\":").is_some() {
        let encoding = r.string()?;
        r.literal(b",\"tokens\":")?;
        let tokens = u32::try_from(r.integer()?).ok()?;
        r.literal(b"}")?;
        Some(TokenCount::new(encoding.as_str(), tokens))
    } else {
        None
    };
    let timestamp = if r.literal(b",\"timestamp\":").is_some() {
        Some(Timestamp::from_unix_millis(r.integer()?))
    } else {
        None
    };
    r.literal(b"}")?;
    if r.at != bytes.len() {
        return None;
    }
    let mut message = Message::plain(role, Content::Text(text), timestamp);
    message.token_count = token_count;
    Some(message)
}

struct Reader<'a> {
    bytes: &'a [u8],
    at: usize,
}

impl<'a> Reader<'a> {
    /// Consumes `expected`, or returns `None` having consumed nothing.
    fn literal(&mut self, expected: &[u8]) -> Option<()> {
        let end = self.at.checked_add(expected.len())?;
        (self.bytes.get(self.at..end)? == expected).then(|| self.at = end)
    }

    /// The bytes up to `end`, which is consumed too.
    fn until(&mut self, end: u8) -> Option<&'a [u8]> {
        let rest = self.bytes.get(self.at..)?;
        let len = rest.iter().position(|&b| b == end)?;
        self.at += len + 1;
        rest.get(..len)
    }

    /// A JSON integer as `u64` reads it: digits, no sign, no leading zero,
    /// no fraction or exponent, at most `u64::MAX`.
    fn integer(&mut self) -> Option<u64> {
        let rest = self.bytes.get(self.at..)?;
        let len = rest.iter().position(|b| !b.is_ascii_digit())?;
        let digits = rest.get(..len)?;
        if len == 0 || (len > 1 && digits.first() == Some(&b'0')) {
            return None;
        }
        // A fraction or an exponent: serde_json's business.
        if matches!(rest.get(len), Some(b'.' | b'e' | b'E')) {
            return None;
        }
        let mut n: u64 = 0;
        for &d in digits {
            n = n.checked_mul(10)?.checked_add(u64::from(d - b'0'))?;
        }
        self.at += len;
        Some(n)
    }

    /// A JSON string, unescaped; `None` for anything JSON does not allow
    /// in one (a control character, a bad escape, a lone surrogate, bytes
    /// that are not UTF-8).
    fn string(&mut self) -> Option<String> {
        self.literal(b"\"")?;
        // At most as long as what is left; one allocation.
        let mut out = Vec::with_capacity(self.bytes.len().saturating_sub(self.at));
        loop {
            let rest = self.bytes.get(self.at..)?;
            let run = rest
                .iter()
                .position(|&b| b == b'"' || b == b'\\' || b < 0x20)?;
            out.extend_from_slice(rest.get(..run)?);
            self.at += run + 1;
            match rest.get(run) {
                Some(b'"') => return String::from_utf8(out).ok(),
                Some(b'\\') => {}
                _ => return None, // a control character
            }
            let escape = *self.bytes.get(self.at)?;
            self.at += 1;
            let c = match escape {
                b'"' => '"',
                b'\\' => '\\',
                b'/' => '/',
                b'b' => '\u{8}',
                b'f' => '\u{c}',
                b'n' => '\n',
                b'r' => '\r',
                b't' => '\t',
                b'u' => self.unicode()?,
                _ => return None,
            };
            let mut buf = [0; 4];
            out.extend_from_slice(c.encode_utf8(&mut buf).as_bytes());
        }
    }

    /// The character of a `\u` escape (its `\u` consumed): four hex
    /// digits, and for a high surrogate a `\u` low surrogate after it.
    fn unicode(&mut self) -> Option<char> {
        let high = self.hex4()?;
        let code = match high {
            0xd800..=0xdbff => {
                self.literal(b"\\u")?;
                let low = self.hex4()?;
                if !(0xdc00..=0xdfff).contains(&low) {
                    return None;
                }
                0x10000 + ((high - 0xd800) << 10) + (low - 0xdc00)
            }
            0xdc00..=0xdfff => return None,
            _ => high,
        };
        char::from_u32(code)
    }

    fn hex4(&mut self) -> Option<u32> {
        let digits = self.bytes.get(self.at..self.at.checked_add(4)?)?;
        let mut n = 0;
        for &d in digits {
            n = n * 16 + char::from(d).to_digit(16)?;
        }
        self.at += 4;
        Some(n)
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used, reason = "test code")]

    use proptest::prelude::*;

    use super::message;
    use crate::{Message, Role, Timestamp, TokenCount};

    fn serde(bytes: &[u8]) -> Option<Message> {
        serde_json::from_slice(bytes).ok()
    }

    #[test]
    fn reads_what_the_encoder_writes() {
        for m in [
            Message::user("hi"),
            Message::assistant("a \"quoted\"\nline\twith \\ and / and \u{1} and é and 🦀"),
            Message::system(""),
            Message::tool("call-1", "42"),
        ] {
            let bytes = serde_json::to_vec(&m).unwrap();
            let fast = message(&bytes);
            // Only role, text and timestamp take the fast path.
            if m.role != Role::Tool {
                assert_eq!(
                    fast.as_ref(),
                    Some(&m),
                    "{}",
                    String::from_utf8_lossy(&bytes)
                );
            } else {
                assert_eq!(fast, None, "a tool message has its call id");
            }
        }
    }

    #[test]
    fn declines_what_it_does_not_know_and_refuses_nothing_serde_reads_otherwise() {
        for text in [
            r#"{"role":"user","content":"a"}"#,
            r#"{"role":"user","content":"a","timestamp":0}"#,
            r#"{"role":"user","content":"a","timestamp":01}"#,
            r#"{"role":"user","content":"a","timestamp":1.5}"#,
            r#"{"role":"user","content":"a","timestamp":1e3}"#,
            r#"{"role":"user","content":"a","timestamp":18446744073709551616}"#,
            r#"{"role":"user","content":"a","timestamp":-1}"#,
            r#"{"role":"user","content":"a" }"#,
            r#"{"role":"user","content":"a"}x"#,
            r#"{"role":"wizard","content":"a"}"#,
            r#"{"role":"user","content":["a"]}"#,
            r#"{"role":"user","content":"\ud83e\udd80"}"#,
            r#"{"role":"user","content":"\ud83e"}"#,
            r#"{"role":"user","content":"\udd80"}"#,
            r#"{"role":"user","content":"\x"}"#,
            "{\"role\":\"user\",\"content\":\"tab\there\"}",
            r#"{"role":"user","content":"a","name":"n"}"#,
            r#"{"content":"a","role":"user"}"#,
        ] {
            let fast = message(text.as_bytes());
            if let Some(fast) = &fast {
                assert_eq!(Some(fast), serde(text.as_bytes()).as_ref(), "{text}");
            }
        }
        let mut invalid = br#"{"role":"user","content":"#.to_vec();
        invalid.extend([b'"', 0xff, b'"', b'}']);
        assert_eq!(message(&invalid), None, "not UTF-8");
        assert!(serde(&invalid).is_none());
    }

    proptest! {
        #[test]
        fn agrees_with_serde_on_every_plain_message(
            role in prop_oneof![Just(Role::User), Just(Role::Assistant), Just(Role::System)],
            text in any::<String>(),
            at in proptest::option::of(any::<u64>()),
            // A few names: every name made is interned by the process.
            count in proptest::option::of((
                prop_oneof![Just("o200k_base"), Just("cl100k_base"), Just("chars/4")],
                any::<u32>(),
            )),
        ) {
            let mut m = Message::new(role, text);
            m.timestamp = at.map(Timestamp::from_unix_millis);
            m.token_count = count.map(|(encoding, tokens)| TokenCount::new(encoding, tokens));
            let bytes = serde_json::to_vec(&m).unwrap();
            prop_assert_eq!(message(&bytes), Some(m));
        }

        #[test]
        fn never_reads_bytes_differently_from_serde(
            head in prop_oneof![
                Just(br#"{"role":"user","content":"#.to_vec()),
                Just(br#"{"role":"assistant","content":"#.to_vec()),
            ],
            body in proptest::collection::vec(any::<u8>(), 0..40),
            tail in prop_oneof![
                Just(b"}".to_vec()),
                Just(br#","token_count":{"encoding":"o200k_base","tokens":7}}"#.to_vec()),
                Just(br#","token_count":{"encoding":"x","tokens":4294967296}}"#.to_vec()),
                Just(br#","token_count":{"encoding":"x","tokens":1},"timestamp":5}"#.to_vec()),
                Just(br#","timestamp":12}"#.to_vec()),
                Just(br#","timestamp":0}"#.to_vec()),
            ],
        ) {
            let mut bytes = head;
            bytes.push(b'"');
            bytes.extend(body);
            bytes.push(b'"');
            bytes.extend(tail);
            if let Some(fast) = message(&bytes) {
                prop_assert_eq!(Some(fast), serde(&bytes));
            }
        }

        #[test]
        fn never_reads_escapes_differently_from_serde(
            body in proptest::collection::vec(
                prop_oneof![
                    Just("\\".to_owned()), Just("\"".to_owned()), Just("u".to_owned()),
                    Just("d83e".to_owned()), Just("dd80".to_owned()), Just("00e9".to_owned()),
                    Just("n".to_owned()), Just("/".to_owned()), Just("a".to_owned()),
                ],
                0..12,
            ),
        ) {
            let text = format!(r#"{{"role":"user","content":"{}"}}"#, body.concat());
            if let Some(fast) = message(text.as_bytes()) {
                prop_assert_eq!(Some(fast), serde(text.as_bytes()));
            }
        }
    }
}
