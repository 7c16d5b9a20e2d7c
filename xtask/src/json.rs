//! Just enough JSON to read criterion's `estimates.json` and
//! `benchmark.json`, and to read and write `docs/benchmarks.json` (std
//! only, like the rest of the xtask).

/// A parsed JSON value.
#[derive(Debug, Clone, PartialEq)]
pub(crate) enum Json {
    Null,
    Bool(bool),
    Num(f64),
    Str(String),
    Arr(Vec<Json>),
    Obj(Vec<(String, Json)>),
}

impl Json {
    /// Parses a whole document.
    pub(crate) fn parse(text: &str) -> Result<Json, String> {
        let mut p = Parser {
            s: text.as_bytes(),
            i: 0,
        };
        let value = p.value()?;
        p.ws();
        if p.i == p.s.len() {
            Ok(value)
        } else {
            Err(format!("trailing characters at byte {}", p.i))
        }
    }

    /// The member `key` of an object.
    pub(crate) fn get(&self, key: &str) -> Option<&Json> {
        match self {
            Json::Obj(members) => members.iter().find(|(k, _)| k == key).map(|(_, v)| v),
            _ => None,
        }
    }

    /// Follows `path` through nested objects.
    pub(crate) fn at(&self, path: &[&str]) -> Option<&Json> {
        path.iter().try_fold(self, |v, key| v.get(key))
    }

    pub(crate) fn num(&self) -> Option<f64> {
        match self {
            Json::Num(n) => Some(*n),
            _ => None,
        }
    }

    pub(crate) fn str(&self) -> Option<&str> {
        match self {
            Json::Str(s) => Some(s),
            _ => None,
        }
    }

    pub(crate) fn arr(&self) -> &[Json] {
        match self {
            Json::Arr(items) => items,
            _ => &[],
        }
    }

    /// The document as text: one member or item per line, indented.
    pub(crate) fn write(&self) -> String {
        let mut out = String::new();
        self.write_to(&mut out, 0);
        out.push('\n');
        out
    }

    fn write_to(&self, out: &mut String, depth: usize) {
        let indent = |out: &mut String, depth: usize| {
            out.push('\n');
            out.push_str(&"  ".repeat(depth));
        };
        match self {
            Json::Null => out.push_str("null"),
            Json::Bool(b) => out.push_str(if *b { "true" } else { "false" }),
            // Rust's shortest round-trip form; JSON has no NaN or infinity.
            Json::Num(n) if n.is_finite() => out.push_str(&format!("{n:?}")),
            Json::Num(_) => out.push_str("null"),
            Json::Str(s) => write_string(out, s),
            Json::Arr(items) if items.is_empty() => out.push_str("[]"),
            Json::Arr(items) => {
                out.push('[');
                for (i, item) in items.iter().enumerate() {
                    if i > 0 {
                        out.push(',');
                    }
                    indent(out, depth + 1);
                    item.write_to(out, depth + 1);
                }
                indent(out, depth);
                out.push(']');
            }
            Json::Obj(members) if members.is_empty() => out.push_str("{}"),
            Json::Obj(members) => {
                out.push('{');
                for (i, (key, value)) in members.iter().enumerate() {
                    if i > 0 {
                        out.push(',');
                    }
                    indent(out, depth + 1);
                    write_string(out, key);
                    out.push_str(": ");
                    value.write_to(out, depth + 1);
                }
                indent(out, depth);
                out.push('}');
            }
        }
    }
}

fn write_string(out: &mut String, s: &str) {
    out.push('"');
    for c in s.chars() {
        match c {
            '"' => out.push_str("\\\""),
            '\\' => out.push_str("\\\\"),
            '\n' => out.push_str("\\n"),
            '\r' => out.push_str("\\r"),
            '\t' => out.push_str("\\t"),
            c if u32::from(c) < 0x20 => out.push_str(&format!("\\u{:04x}", u32::from(c))),
            c => out.push(c),
        }
    }
    out.push('"');
}

struct Parser<'a> {
    s: &'a [u8],
    i: usize,
}

impl Parser<'_> {
    fn peek(&self) -> Option<u8> {
        self.s.get(self.i).copied()
    }

    fn next(&mut self) -> Result<u8, String> {
        let b = self.peek().ok_or("unexpected end of JSON")?;
        self.i += 1;
        Ok(b)
    }

    fn ws(&mut self) {
        while self.peek().is_some_and(|b| b.is_ascii_whitespace()) {
            self.i += 1;
        }
    }

    fn expect(&mut self, word: &str) -> Result<(), String> {
        for want in word.bytes() {
            if self.next()? != want {
                return Err(format!("expected {word:?} at byte {}", self.i));
            }
        }
        Ok(())
    }

    fn value(&mut self) -> Result<Json, String> {
        self.ws();
        match self.peek().ok_or("unexpected end of JSON")? {
            b'n' => self.expect("null").map(|()| Json::Null),
            b't' => self.expect("true").map(|()| Json::Bool(true)),
            b'f' => self.expect("false").map(|()| Json::Bool(false)),
            b'"' => self.string().map(Json::Str),
            b'[' => {
                self.i += 1;
                let mut items = Vec::new();
                self.ws();
                if self.peek() == Some(b']') {
                    self.i += 1;
                    return Ok(Json::Arr(items));
                }
                loop {
                    items.push(self.value()?);
                    self.ws();
                    match self.next()? {
                        b',' => {}
                        b']' => return Ok(Json::Arr(items)),
                        _ => return Err(format!("expected , or ] at byte {}", self.i)),
                    }
                }
            }
            b'{' => {
                self.i += 1;
                let mut members = Vec::new();
                self.ws();
                if self.peek() == Some(b'}') {
                    self.i += 1;
                    return Ok(Json::Obj(members));
                }
                loop {
                    self.ws();
                    let key = self.string()?;
                    self.ws();
                    if self.next()? != b':' {
                        return Err(format!("expected : at byte {}", self.i));
                    }
                    members.push((key, self.value()?));
                    self.ws();
                    match self.next()? {
                        b',' => {}
                        b'}' => return Ok(Json::Obj(members)),
                        _ => return Err(format!("expected , or }} at byte {}", self.i)),
                    }
                }
            }
            _ => {
                let start = self.i;
                while self
                    .peek()
                    .is_some_and(|b| b.is_ascii_digit() || b"+-.eE".contains(&b))
                {
                    self.i += 1;
                }
                let text = std::str::from_utf8(self.s.get(start..self.i).unwrap_or_default())
                    .map_err(|e| e.to_string())?;
                text.parse()
                    .map(Json::Num)
                    .map_err(|_| format!("bad JSON value at byte {start}"))
            }
        }
    }

    fn hex4(&mut self) -> Result<u16, String> {
        let mut n = 0u16;
        for _ in 0..4 {
            let d = char::from(self.next()?)
                .to_digit(16)
                .ok_or("bad \\u escape")?;
            n = n * 16 + u16::try_from(d).map_err(|e| e.to_string())?;
        }
        Ok(n)
    }

    fn string(&mut self) -> Result<String, String> {
        if self.next()? != b'"' {
            return Err(format!("expected a string at byte {}", self.i));
        }
        let mut out = Vec::new();
        loop {
            match self.next()? {
                b'"' => return String::from_utf8(out).map_err(|e| e.to_string()),
                b'\\' => {
                    let c = match self.next()? {
                        b'"' => '"',
                        b'\\' => '\\',
                        b'/' => '/',
                        b'b' => '\u{8}',
                        b'f' => '\u{c}',
                        b'n' => '\n',
                        b'r' => '\r',
                        b't' => '\t',
                        b'u' => {
                            let first = self.hex4()?;
                            let mut units = vec![first];
                            if (0xd800..0xdc00).contains(&first) {
                                self.expect("\\u")?;
                                units.push(self.hex4()?);
                            }
                            char::decode_utf16(units)
                                .next()
                                .and_then(std::result::Result::ok)
                                .ok_or("bad \\u escape")?
                        }
                        other => return Err(format!("bad escape \\{}", char::from(other))),
                    };
                    let mut buf = [0; 4];
                    out.extend_from_slice(c.encode_utf8(&mut buf).as_bytes());
                }
                b => out.push(b),
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::Json;

    #[test]
    fn reads_criterion_files() {
        let estimates = r#"{"mean":{"confidence_interval":{"confidence_level":0.95,
            "lower_bound":1.5e3,"upper_bound":1700.25},"point_estimate":1600,
            "standard_error":12.0},"slope":null}"#;
        let v = Json::parse(estimates).unwrap();
        assert_eq!(
            v.at(&["mean", "confidence_interval", "lower_bound"])
                .and_then(Json::num),
            Some(1500.0)
        );
        assert_eq!(v.get("slope"), Some(&Json::Null));
        let benchmark = r#"{"group_id":"redis/a \"b\" \u00b5 \ud83d\ude00","function_id":null,
            "throughput":{"Elements":64},"list":[1, [], {}, true, false]}"#;
        let v = Json::parse(benchmark).unwrap();
        assert_eq!(
            v.get("group_id").and_then(Json::str),
            Some("redis/a \"b\" µ 😀")
        );
        assert_eq!(
            v.at(&["throughput", "Elements"]).and_then(Json::num),
            Some(64.0)
        );
        assert!(Json::parse("{\"a\":1,}").is_err());
        assert!(Json::parse("[1] x").is_err());
    }

    #[test]
    fn writes_what_it_reads() {
        let v = Json::Obj(vec![
            ("name".into(), Json::Str("a \"b\" \\ µ\n\u{1}".into())),
            ("n".into(), Json::Num(1234.5678e-3)),
            ("big".into(), Json::Num(3.0e20)),
            ("nan".into(), Json::Num(f64::NAN)),
            (
                "list".into(),
                Json::Arr(vec![
                    Json::Null,
                    Json::Bool(true),
                    Json::Arr(vec![]),
                    Json::Obj(vec![]),
                ]),
            ),
        ]);
        let back = Json::parse(&v.write()).unwrap();
        assert_eq!(back.get("name"), v.get("name"));
        assert_eq!(back.get("n"), v.get("n"));
        assert_eq!(back.get("big"), v.get("big"));
        assert_eq!(back.get("nan"), Some(&Json::Null));
        assert_eq!(back.get("list"), v.get("list"));
    }
}
