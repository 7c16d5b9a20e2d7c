//! The encryption layer's section of the page (`statestore-crypto`, issue
//! 15): what the layer adds to a turn, seal/open throughput and stored
//! sizes on the realistic mix. Read from the `crypto` suite's results and
//! its `bench-metric:` lines; absent when that suite did not run.

use std::fmt::Write as _;

use super::evaluate::Lookup;
use super::format::{rate, sig3};

/// The layer's variants as the suite names them.
const VARIANTS: [(&str, &str); 2] = [
    ("encrypted+zstd", "encrypted + zstd (the default)"),
    ("encrypted", "encrypted, no compression"),
];
/// The stored-size lines of the suite, after `crypto/sizes/`.
const SIZES: [&str; 3] = ["encrypted+zstd", "encrypted", "compressed only"];

/// The section, or `None` when no figure of the suite is in the results.
pub(super) fn section(r: &Lookup<'_>) -> Option<String> {
    let mut d = String::new();
    let mut any = false;
    let _ = writeln!(
        d,
        "## Encryption layer (`statestore-crypto`)\n\nOne turn (`load_recent_with(20)` + a \
         version-guarded append of two 1 KB messages) on the plain store and through the \
         layer, medians of 30 interleaved rounds of 100 turns (`bench-metric: \
         crypto/interleaved(…)`):\n\n| store | plain | layer | added per turn | layer ÷ plain |\n\
         |---|---|---|---|---|"
    );
    for backend in ["memory", "redis"] {
        let Some(plain) = r.metric(&format!("crypto/interleaved({backend})/plain")) else {
            continue;
        };
        for (name, label) in VARIANTS {
            let Some(layered) = r.metric(&format!("crypto/interleaved({backend})/{name}")) else {
                continue;
            };
            any = true;
            let _ = writeln!(
                d,
                "| {backend}, {label} | {} µs | {} µs | {} µs | {:.2}× |",
                sig3(plain),
                sig3(layered),
                sig3(layered - plain),
                layered / plain
            );
        }
    }
    let _ = writeln!(
        d,
        "\nSealing and opening the bodies of the realistic mix (user 300 B, assistant 1.2 KB, \
         every third turn a tool call with a 3 KB result), MB of bodies per second:\n\n\
         | variant | seal | open |\n|---|---|---|"
    );
    for name in ["encrypt+zstd", "encrypt", "zstd"] {
        let (seal, open) = (
            r.get(&format!("crypto/seal/{name}")),
            r.get(&format!("crypto/open/{name}")),
        );
        if seal.is_none() && open.is_none() {
            continue;
        }
        any = true;
        let _ = writeln!(
            d,
            "| {name} | {} | {} |",
            seal.map_or_else(|| "—".into(), rate),
            open.map_or_else(|| "—".into(), rate)
        );
    }
    if let Some(plain) = r.metric("crypto/sizes/plain") {
        let _ = writeln!(
            d,
            "\nStored size of the mix (each message's JSON as the store keeps it) against \
             the same messages without the layer ({} bytes):\n\n| layer | stored | of plain |\n\
             |---|---|---|",
            sig3(plain)
        );
        for name in SIZES {
            if let Some(size) = r.metric(&format!("crypto/sizes/{name}")) {
                any = true;
                let _ = writeln!(
                    d,
                    "| {name} | {size:.0} B | {:.1} % |",
                    size * 100.0 / plain
                );
            }
        }
    }
    any.then_some(d)
}

#[cfg(test)]
mod tests {
    use std::collections::BTreeMap;

    use super::section;
    use crate::bench::evaluate::{Lookup, evaluate};
    use crate::bench::record::Metric;
    use crate::bench::targets::CRYPTO_REDIS_RATIO;

    fn metric(id: &str, value: &str) -> Metric {
        Metric {
            id: id.into(),
            value: value.into(),
            run: "r".into(),
        }
    }

    #[test]
    fn the_section_and_the_target_read_the_suites_lines() {
        let metrics = [
            metric("crypto/interleaved(redis)/plain", "700.0 µs per turn (…)"),
            metric(
                "crypto/interleaved(redis)/encrypted+zstd",
                "735.0 µs per turn, +5.0 % over plain",
            ),
            metric(
                &format!("{CRYPTO_REDIS_RATIO}encrypted+zstd"),
                "1.050 (735.0 µs ÷ 700.0 µs per turn)",
            ),
            metric(
                "crypto/sizes/plain",
                "1000 bytes as stored without the layer",
            ),
            metric(
                "crypto/sizes/encrypted",
                "1400 bytes stored, 140.0 % of plain",
            ),
        ];
        let redis = BTreeMap::new();
        let r = Lookup {
            results: &[],
            redis: &redis,
            metrics: &metrics,
            server_work: &[],
        };
        let text = section(&r).unwrap_or_default();
        assert!(
            text.contains(
                "| redis, encrypted + zstd (the default) | 700 µs | 735 µs | 35.0 µs | 1.05× |"
            ),
            "{text}"
        );
        assert!(text.contains("| encrypted | 1400 B | 140.0 % |"), "{text}");
        let row = evaluate(&r)
            .into_iter()
            .find(|v| v.what.contains("encryption layer"));
        assert_eq!(row.and_then(|v| v.pass), Some(true));
        // Nothing of the suite: no section.
        let none = Lookup {
            results: &[],
            redis: &redis,
            metrics: &[],
            server_work: &[],
        };
        assert!(section(&none).is_none());
    }
}
