//! [`Value`]: an OTLP attribute value (`AnyValue`), flattened.

use std::collections::BTreeMap;
use std::fmt;

use opentelemetry_proto::tonic::common::v1::{AnyValue, KeyValue, any_value};

/// An attribute's value as it arrived (OTLP's `AnyValue`).
///
/// Compares with plain Rust values, so assertions read naturally:
///
/// ```
/// use otlp_test_receiver::Value;
///
/// assert_eq!(Value::String("memory".into()), "memory");
/// assert_eq!(Value::Int(3), 3);
/// assert_eq!(Value::Bool(true), true);
/// ```
#[derive(Debug, Clone, PartialEq)]
pub enum Value {
    /// A string.
    String(String),
    /// A boolean.
    Bool(bool),
    /// A signed 64-bit integer.
    Int(i64),
    /// A double.
    Double(f64),
    /// Raw bytes.
    Bytes(Vec<u8>),
    /// A homogeneous or mixed array.
    Array(Vec<Value>),
    /// A nested key-value list.
    Map(BTreeMap<String, Value>),
    /// No value (an `AnyValue` with nothing set, or a string-table index
    /// this receiver does not resolve).
    Empty,
}

impl Value {
    /// The string, if this is one.
    pub fn as_str(&self) -> Option<&str> {
        match self {
            Value::String(s) => Some(s),
            _ => None,
        }
    }

    /// The integer, if this is one.
    pub fn as_i64(&self) -> Option<i64> {
        match self {
            Value::Int(i) => Some(*i),
            _ => None,
        }
    }

    /// The number, if this is an integer or a double.
    #[allow(
        clippy::cast_precision_loss,
        reason = "test values; an approximate comparison is what is asked"
    )]
    pub fn as_f64(&self) -> Option<f64> {
        match self {
            Value::Int(i) => Some(*i as f64),
            Value::Double(d) => Some(*d),
            _ => None,
        }
    }

    /// The boolean, if this is one.
    pub fn as_bool(&self) -> Option<bool> {
        match self {
            Value::Bool(b) => Some(*b),
            _ => None,
        }
    }

    pub(crate) fn from_any(value: Option<&AnyValue>) -> Self {
        use any_value::Value as V;
        match value.and_then(|v| v.value.as_ref()) {
            Some(V::StringValue(s)) => Value::String(s.clone()),
            Some(V::BoolValue(b)) => Value::Bool(*b),
            Some(V::IntValue(i)) => Value::Int(*i),
            Some(V::DoubleValue(d)) => Value::Double(*d),
            Some(V::BytesValue(b)) => Value::Bytes(b.clone()),
            Some(V::ArrayValue(a)) => {
                Value::Array(a.values.iter().map(|v| Value::from_any(Some(v))).collect())
            }
            Some(V::KvlistValue(kv)) => Value::Map(attributes(&kv.values)),
            Some(V::StringValueStrindex(_)) | None => Value::Empty,
        }
    }
}

/// Key-values flattened into a map; a key given twice keeps its last value.
pub(crate) fn attributes(kvs: &[KeyValue]) -> BTreeMap<String, Value> {
    kvs.iter()
        .map(|kv| (kv.key.clone(), Value::from_any(kv.value.as_ref())))
        .collect()
}

/// Strings bare unless they hold a space, `=`, a quote or nothing (then
/// quoted as Rust does); arrays as `[a,b]`, maps as `{k=v,…}`, bytes in hex.
impl fmt::Display for Value {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Value::String(s) => {
                if s.is_empty() || s.contains(|c: char| c.is_whitespace() || "=\"".contains(c)) {
                    write!(f, "{s:?}")
                } else {
                    f.write_str(s)
                }
            }
            Value::Bool(b) => write!(f, "{b}"),
            Value::Int(i) => write!(f, "{i}"),
            Value::Double(d) => write!(f, "{d}"),
            Value::Bytes(b) => f.write_str(&hex(b)),
            Value::Array(items) => {
                f.write_str("[")?;
                for (i, item) in items.iter().enumerate() {
                    if i > 0 {
                        f.write_str(",")?;
                    }
                    write!(f, "{item}")?;
                }
                f.write_str("]")
            }
            Value::Map(map) => {
                f.write_str("{")?;
                for (i, (k, v)) in map.iter().enumerate() {
                    if i > 0 {
                        f.write_str(",")?;
                    }
                    write!(f, "{k}={v}")?;
                }
                f.write_str("}")
            }
            Value::Empty => f.write_str("<empty>"),
        }
    }
}

/// Lowercase hex, as trace and span ids are usually written.
pub(crate) fn hex(bytes: &[u8]) -> String {
    use fmt::Write;
    let mut s = String::with_capacity(bytes.len() * 2);
    for b in bytes {
        let _ = write!(s, "{b:02x}");
    }
    s
}

impl PartialEq<str> for Value {
    fn eq(&self, other: &str) -> bool {
        self.as_str() == Some(other)
    }
}

impl PartialEq<&str> for Value {
    fn eq(&self, other: &&str) -> bool {
        self.as_str() == Some(*other)
    }
}

impl PartialEq<String> for Value {
    fn eq(&self, other: &String) -> bool {
        self.as_str() == Some(other.as_str())
    }
}

impl PartialEq<i64> for Value {
    fn eq(&self, other: &i64) -> bool {
        self.as_i64() == Some(*other)
    }
}

impl PartialEq<f64> for Value {
    fn eq(&self, other: &f64) -> bool {
        self.as_f64() == Some(*other)
    }
}

impl PartialEq<bool> for Value {
    fn eq(&self, other: &bool) -> bool {
        self.as_bool() == Some(*other)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn displays_as_the_span_tree_writes_it() {
        assert_eq!(Value::String("memory".into()).to_string(), "memory");
        assert_eq!(Value::String("a b".into()).to_string(), "\"a b\"");
        assert_eq!(Value::String(String::new()).to_string(), "\"\"");
        assert_eq!(
            Value::Array(vec![Value::Int(1), Value::String("x".into())]).to_string(),
            "[1,x]"
        );
        assert_eq!(Value::Bytes(vec![0, 255]).to_string(), "00ff");
    }

    #[test]
    fn converts_every_any_value() {
        use any_value::Value as V;
        let any = |v: V| AnyValue { value: Some(v) };
        assert_eq!(Value::from_any(Some(&any(V::IntValue(7)))), 7);
        assert_eq!(Value::from_any(Some(&any(V::DoubleValue(0.5)))), 0.5);
        assert_eq!(Value::from_any(None), Value::Empty);
        let map = Value::from_any(Some(&any(V::KvlistValue(
            opentelemetry_proto::tonic::common::v1::KeyValueList {
                values: vec![KeyValue {
                    key: "k".into(),
                    value: Some(any(V::BoolValue(true))),
                    ..KeyValue::default()
                }],
            },
        ))));
        assert_eq!(map.to_string(), "{k=true}");
    }
}
