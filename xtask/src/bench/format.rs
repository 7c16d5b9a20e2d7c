//! How the page writes numbers.

use super::record::{Measured, Throughput};

/// Nanoseconds, to three significant figures; a negative time as "-163
/// µs".
pub(super) fn time(ns: f64) -> String {
    if ns < 0.0 {
        return format!("-{}", time(-ns));
    }
    let (value, unit) = if ns < 1e3 {
        (ns, "ns")
    } else if ns < 1e6 {
        (ns / 1e3, "µs")
    } else if ns < 1e9 {
        (ns / 1e6, "ms")
    } else {
        (ns / 1e9, "s")
    };
    format!("{} {unit}", sig3(value))
}

pub(super) fn sig3(x: f64) -> String {
    if !x.is_finite() {
        "?".into()
    } else if x.abs() >= 100.0 {
        format!("{x:.0}")
    } else if x.abs() >= 10.0 {
        format!("{x:.1}")
    } else {
        format!("{x:.2}")
    }
}

/// A whole number with thousands separators.
pub(super) fn thousands(x: f64) -> String {
    let digits = format!("{:.0}", x.abs());
    let mut out = String::new();
    for (i, c) in digits.chars().enumerate() {
        if i > 0 && (digits.len() - i) % 3 == 0 {
            out.push(',');
        }
        out.push(c);
    }
    if x < 0.0 { format!("-{out}") } else { out }
}

pub(super) fn rate(m: &Measured) -> String {
    match (m.throughput, m.per_second()) {
        (Some(Throughput::Elements(_)), Some(r)) => format!("{}/s", thousands(r)),
        (Some(Throughput::Bytes(_)), Some(r)) => format!("{} MiB/s", sig3(r / 1048576.0)),
        (Some(Throughput::BytesDecimal(_)), Some(r)) => format!("{} MB/s", sig3(r / 1e6)),
        _ => String::new(),
    }
}

pub(super) fn cell(s: &str) -> String {
    s.replace('|', "\\|")
}

pub(super) fn median_of(values: &[f64]) -> f64 {
    let mut v = values.to_vec();
    v.sort_by(f64::total_cmp);
    match v.len() {
        0 => f64::NAN,
        n if n % 2 == 1 => v.get(n / 2).copied().unwrap_or(f64::NAN),
        n => {
            (v.get(n / 2 - 1).copied().unwrap_or(f64::NAN)
                + v.get(n / 2).copied().unwrap_or(f64::NAN))
                / 2.0
        }
    }
}

#[cfg(test)]
mod tests {
    use super::{sig3, thousands, time};

    #[test]
    fn formats_numbers() {
        assert_eq!(time(571.4), "571 ns");
        assert_eq!(time(1_234.0), "1.23 µs");
        assert_eq!(time(287_000.0), "287 µs");
        assert_eq!(time(12_345_678.0), "12.3 ms");
        assert_eq!(time(-162_763.0), "-163 µs");
        assert_eq!(sig3(f64::NAN), "?");
        assert_eq!(thousands(1_234_567.4), "1,234,567");
        assert_eq!(thousands(999.0), "999");
    }
}
