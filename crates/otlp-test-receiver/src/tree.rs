//! The span tree: received spans as indented text, children under parents.

use std::collections::{BTreeMap, HashMap};

use opentelemetry_proto::tonic::trace::v1::status::StatusCode;

use crate::received::ReceivedSpan;

/// Which attributes a line shows.
#[derive(Debug, Clone, Copy)]
pub(crate) enum Shown<'a> {
    All,
    Only(&'a [&'a str]),
}

/// One line per span, indented two spaces per level: `name  k=v k=v`, and
/// `  !error: message` after a span whose status is Error. Roots (spans
/// without a parent, or whose parent never arrived) and the children of a
/// span are ordered by start time, then name.
pub(crate) fn render(spans: &[ReceivedSpan], shown: Shown<'_>) -> String {
    let key = |s: &ReceivedSpan| (s.start_unix_nanos, s.name.clone(), s.span_id.clone());
    let by_id: HashMap<(&str, &str), &ReceivedSpan> = spans
        .iter()
        .map(|s| ((s.trace_id.as_str(), s.span_id.as_str()), s))
        .collect();
    let mut children: BTreeMap<(&str, &str), Vec<&ReceivedSpan>> = BTreeMap::new();
    let mut roots = Vec::new();
    for span in spans {
        match &span.parent_span_id {
            Some(parent) if by_id.contains_key(&(span.trace_id.as_str(), parent.as_str())) => {
                children
                    .entry((span.trace_id.as_str(), parent.as_str()))
                    .or_default()
                    .push(span);
            }
            _ => roots.push(span),
        }
    }
    roots.sort_by_key(|s| key(s));
    for list in children.values_mut() {
        list.sort_by_key(|s| key(s));
    }
    let mut out = String::new();
    // Depth-first, without recursion: (span, depth), last pushed first.
    let mut stack: Vec<(&ReceivedSpan, usize)> = roots.iter().rev().map(|s| (*s, 0)).collect();
    while let Some((span, depth)) = stack.pop() {
        line(&mut out, span, depth, shown);
        if let Some(kids) = children.get(&(span.trace_id.as_str(), span.span_id.as_str())) {
            stack.extend(kids.iter().rev().map(|k| (*k, depth + 1)));
        }
    }
    out
}

fn line(out: &mut String, span: &ReceivedSpan, depth: usize, shown: Shown<'_>) {
    out.push_str(&"  ".repeat(depth));
    out.push_str(&span.name);
    let mut sep = "  ";
    let mut field = |out: &mut String, k: &str, v: String| {
        out.push_str(sep);
        out.push_str(k);
        out.push('=');
        out.push_str(&v);
        sep = " ";
    };
    match shown {
        Shown::All => {
            for (k, v) in &span.attributes {
                field(out, k, v.to_string());
            }
        }
        Shown::Only(keys) => {
            for k in keys {
                if let Some(v) = span.attributes.get(*k) {
                    field(out, k, v.to_string());
                }
            }
        }
    }
    if span.status == StatusCode::Error {
        out.push_str("  !error: ");
        out.push_str(&span.status_message);
    }
    out.push('\n');
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::value::Value;
    use opentelemetry_proto::tonic::trace::v1::span::SpanKind;

    fn span(name: &str, id: &str, parent: Option<&str>, start: u64) -> ReceivedSpan {
        ReceivedSpan {
            name: name.into(),
            trace_id: "t".into(),
            span_id: id.into(),
            parent_span_id: parent.map(Into::into),
            kind: SpanKind::Internal,
            start_unix_nanos: start,
            end_unix_nanos: start + 1,
            status: StatusCode::Unset,
            status_message: String::new(),
            attributes: BTreeMap::new(),
            events: Vec::new(),
            resource: BTreeMap::new(),
            scope: String::new(),
        }
    }

    #[test]
    fn children_under_parents_in_start_order() {
        let mut exec = span("execute", "1", None, 10);
        exec.attributes.insert("turn".into(), Value::Int(1));
        exec.attributes
            .insert("a".into(), Value::String("x y".into()));
        let mut failed = span("store save", "4", Some("1"), 30);
        failed.status = StatusCode::Error;
        failed.status_message = "conflict".into();
        // Arrival order is not start order: children are sent first.
        let spans = vec![
            failed,
            span("chat offline", "2", Some("1"), 20),
            span("load", "3", Some("1"), 11),
            span("orphan", "5", Some("99"), 5),
            exec,
        ];
        assert_eq!(
            render(&spans, Shown::All),
            "orphan\nexecute  a=\"x y\" turn=1\n  load\n  chat offline\n  store save  !error: conflict\n"
        );
        assert_eq!(
            render(&spans, Shown::Only(&["turn", "missing"])),
            "orphan\nexecute  turn=1\n  load\n  chat offline\n  store save  !error: conflict\n"
        );
    }
}
