//! The page's SVG charts, log-log, written from the record: per-turn
//! latency against history length, and throughput against concurrent
//! sessions.
//!
//! Hand-written SVG rather than `plotters`: a chart here is decade ticks on
//! two log axes, one polyline with markers per series and a legend — about
//! two hundred lines — while `plotters` (even with only `svg_backend` and
//! `line_series`) would add a dozen crates to the one crate every `cargo
//! xtask` command builds, and its output would still need our own log
//! ticks and labels.

use std::fmt::Write as _;

/// One line of a chart: `(x, y)` points, both positive.
pub(super) struct Series {
    pub(super) name: String,
    pub(super) points: Vec<(f64, f64)>,
}

/// A log-log chart.
pub(super) struct Chart {
    pub(super) title: String,
    pub(super) x_label: String,
    pub(super) y_label: String,
    /// How a tick value on each axis is written.
    pub(super) x_tick: fn(f64) -> String,
    pub(super) y_tick: fn(f64) -> String,
    pub(super) series: Vec<Series>,
}

/// Series colours, in order (colour-blind-safe Okabe–Ito).
const COLOURS: &[&str] = &[
    "#0072b2", "#d55e00", "#009e73", "#cc79a7", "#e69f00", "#56b4e9", "#000000",
];
const MARKERS: &[Marker] = &[
    Marker::Circle,
    Marker::Square,
    Marker::Diamond,
    Marker::Triangle,
];

#[derive(Clone, Copy)]
enum Marker {
    Circle,
    Square,
    Diamond,
    Triangle,
}

const WIDTH: f64 = 860.0;
const HEIGHT: f64 = 440.0;
/// The plot area inside the margins.
const LEFT: f64 = 80.0;
const RIGHT: f64 = 560.0;
const TOP: f64 = 40.0;
const BOTTOM: f64 = 380.0;

/// The decades covering `[min, max]` (both positive): `10^floor(log min)`
/// to `10^ceil(log max)`, at least two.
pub(super) fn decades(min: f64, max: f64) -> Vec<f64> {
    if !(min.is_finite() && max.is_finite() && min > 0.0 && max >= min) {
        return Vec::new();
    }
    let low = min.log10().floor();
    let high = max.log10().ceil().max(low + 1.0);
    let mut out = Vec::new();
    // Whole exponents, exact in f64.
    let mut exponent = low;
    while exponent <= high {
        out.push(10f64.powf(exponent));
        exponent += 1.0;
    }
    out
}

/// Where `value` falls between `low` and `high` (decades) on a log axis
/// from `from` to `to`.
pub(super) fn log_scale(value: f64, low: f64, high: f64, from: f64, to: f64) -> f64 {
    let t = (value.log10() - low.log10()) / (high.log10() - low.log10());
    from + t * (to - from)
}

/// Whether a point can be drawn on log axes.
fn plottable(&(x, y): &(f64, f64)) -> bool {
    x.is_finite() && y.is_finite() && x > 0.0 && y > 0.0
}

fn escape(text: &str) -> String {
    text.replace('&', "&amp;")
        .replace('<', "&lt;")
        .replace('>', "&gt;")
        .replace('"', "&quot;")
}

/// Writes one marker at `(x, y)`.
fn marker(out: &mut String, kind: Marker, x: f64, y: f64, colour: &str) {
    let _ = match kind {
        Marker::Circle => writeln!(
            out,
            r#"<circle cx="{x:.1}" cy="{y:.1}" r="3.5" fill="{colour}"/>"#
        ),
        Marker::Square => writeln!(
            out,
            r#"<rect x="{:.1}" y="{:.1}" width="7" height="7" fill="{colour}"/>"#,
            x - 3.5,
            y - 3.5
        ),
        Marker::Diamond => writeln!(
            out,
            r#"<polygon points="{x:.1},{:.1} {:.1},{y:.1} {x:.1},{:.1} {:.1},{y:.1}" fill="{colour}"/>"#,
            y - 4.5,
            x + 4.5,
            y + 4.5,
            x - 4.5
        ),
        Marker::Triangle => writeln!(
            out,
            r#"<polygon points="{x:.1},{:.1} {:.1},{:.1} {:.1},{:.1}" fill="{colour}"/>"#,
            y - 4.5,
            x + 4.5,
            y + 3.5,
            x - 4.5,
            y + 3.5
        ),
    };
}

impl Chart {
    /// The chart as an SVG document, and the names of the series left out
    /// because they have no points (also noted under the legend).
    pub(super) fn svg(&self) -> (String, Vec<String>) {
        let drawn: Vec<&Series> = self
            .series
            .iter()
            .filter(|s| s.points.iter().any(plottable))
            .collect();
        let missing: Vec<String> = self
            .series
            .iter()
            .filter(|s| !drawn.iter().any(|d| std::ptr::eq(*d, *s)))
            .map(|s| s.name.clone())
            .collect();
        let mut out = String::new();
        let _ = writeln!(
            out,
            r#"<svg xmlns="http://www.w3.org/2000/svg" width="{WIDTH}" height="{HEIGHT}" viewBox="0 0 {WIDTH} {HEIGHT}" font-family="sans-serif" font-size="12">"#
        );
        let _ = writeln!(
            out,
            r#"<rect width="{WIDTH}" height="{HEIGHT}" fill="white"/>"#
        );
        let _ = writeln!(
            out,
            r#"<text x="{:.1}" y="22" text-anchor="middle" font-size="14" font-weight="bold">{}</text>"#,
            (LEFT + RIGHT) / 2.0,
            escape(&self.title)
        );
        let points = drawn
            .iter()
            .flat_map(|s| s.points.iter().copied())
            .filter(plottable);
        let (mut x_min, mut x_max, mut y_min, mut y_max) =
            (f64::INFINITY, 0.0_f64, f64::INFINITY, 0.0_f64);
        for (x, y) in points {
            x_min = x_min.min(x);
            x_max = x_max.max(x);
            y_min = y_min.min(y);
            y_max = y_max.max(y);
        }
        if drawn.is_empty() {
            let _ = writeln!(
                out,
                r#"<text x="{:.1}" y="{:.1}" text-anchor="middle">nothing measured</text>"#,
                (LEFT + RIGHT) / 2.0,
                (TOP + BOTTOM) / 2.0
            );
        } else {
            let xs = decades(x_min, x_max);
            let ys = decades(y_min, y_max);
            let (x_low, x_high) = (xs.first().copied(), xs.last().copied());
            let (y_low, y_high) = (ys.first().copied(), ys.last().copied());
            if let (Some(x_low), Some(x_high), Some(y_low), Some(y_high)) =
                (x_low, x_high, y_low, y_high)
            {
                let px = |x: f64| log_scale(x, x_low, x_high, LEFT, RIGHT);
                let py = |y: f64| log_scale(y, y_low, y_high, BOTTOM, TOP);
                self.axes(&mut out, &xs, &ys, &px, &py);
                for (i, s) in drawn.iter().enumerate() {
                    let colour = COLOURS.get(i % COLOURS.len()).copied().unwrap_or("#000");
                    let kind = MARKERS
                        .get(i % MARKERS.len())
                        .copied()
                        .unwrap_or(Marker::Circle);
                    let mut pts: Vec<(f64, f64)> =
                        s.points.iter().copied().filter(plottable).collect();
                    pts.sort_by(|a, b| a.0.total_cmp(&b.0));
                    let line: Vec<String> = pts
                        .iter()
                        .map(|&(x, y)| format!("{:.1},{:.1}", px(x), py(y)))
                        .collect();
                    let _ = writeln!(
                        out,
                        r#"<polyline points="{}" fill="none" stroke="{colour}" stroke-width="2"/>"#,
                        line.join(" ")
                    );
                    for &(x, y) in &pts {
                        marker(&mut out, kind, px(x), py(y), colour);
                    }
                    // The legend entry.
                    let ly = TOP + 10.0 + 20.0 * i as f64;
                    let _ = writeln!(
                        out,
                        r#"<line x1="{:.1}" y1="{ly:.1}" x2="{:.1}" y2="{ly:.1}" stroke="{colour}" stroke-width="2"/>"#,
                        RIGHT + 15.0,
                        RIGHT + 39.0
                    );
                    marker(&mut out, kind, RIGHT + 27.0, ly, colour);
                    let _ = writeln!(
                        out,
                        r#"<text x="{:.1}" y="{:.1}">{}</text>"#,
                        RIGHT + 45.0,
                        ly + 4.0,
                        escape(&s.name)
                    );
                }
            }
        }
        for (i, name) in missing.iter().enumerate() {
            let _ = writeln!(
                out,
                r##"<text x="{:.1}" y="{:.1}" fill="#666">not measured: {}</text>"##,
                RIGHT + 15.0,
                TOP + 10.0 + 20.0 * (drawn.len() + i) as f64 + 4.0,
                escape(name)
            );
        }
        out.push_str("</svg>\n");
        (out, missing)
    }

    /// The frame, the decade ticks with their grid lines and labels, and
    /// the axis labels.
    fn axes(
        &self,
        out: &mut String,
        xs: &[f64],
        ys: &[f64],
        px: &dyn Fn(f64) -> f64,
        py: &dyn Fn(f64) -> f64,
    ) {
        let _ = writeln!(
            out,
            r##"<rect x="{LEFT}" y="{TOP}" width="{}" height="{}" fill="none" stroke="#333"/>"##,
            RIGHT - LEFT,
            BOTTOM - TOP
        );
        for &x in xs {
            let at = px(x);
            let _ = writeln!(
                out,
                r##"<line x1="{at:.1}" y1="{TOP}" x2="{at:.1}" y2="{BOTTOM}" stroke="#ddd"/>"##
            );
            let _ = writeln!(
                out,
                r#"<text x="{at:.1}" y="{:.1}" text-anchor="middle">{}</text>"#,
                BOTTOM + 16.0,
                escape(&(self.x_tick)(x))
            );
        }
        for &y in ys {
            let at = py(y);
            let _ = writeln!(
                out,
                r##"<line x1="{LEFT}" y1="{at:.1}" x2="{RIGHT}" y2="{at:.1}" stroke="#ddd"/>"##
            );
            let _ = writeln!(
                out,
                r#"<text x="{:.1}" y="{:.1}" text-anchor="end">{}</text>"#,
                LEFT - 6.0,
                at + 4.0,
                escape(&(self.y_tick)(y))
            );
        }
        let _ = writeln!(
            out,
            r#"<text x="{:.1}" y="{:.1}" text-anchor="middle">{}</text>"#,
            (LEFT + RIGHT) / 2.0,
            BOTTOM + 38.0,
            escape(&self.x_label)
        );
        let _ = writeln!(
            out,
            r#"<text x="18" y="{:.1}" text-anchor="middle" transform="rotate(-90 18 {:.1})">{}</text>"#,
            (TOP + BOTTOM) / 2.0,
            (TOP + BOTTOM) / 2.0,
            escape(&self.y_label)
        );
    }
}

#[cfg(test)]
mod tests {
    use super::{Chart, Series, decades, log_scale};

    fn chart(series: Vec<Series>) -> Chart {
        Chart {
            title: "turn <latency> & more".into(),
            x_label: "messages".into(),
            y_label: "time".into(),
            x_tick: |x| format!("{x}"),
            y_tick: |y| format!("{y}"),
            series,
        }
    }

    #[test]
    fn decades_cover_the_range() {
        assert_eq!(decades(10.0, 100_000.0), vec![10.0, 100.0, 1e3, 1e4, 1e5]);
        assert_eq!(decades(3.0, 420.0), vec![1.0, 10.0, 100.0, 1e3]);
        // One point still gets a decade to sit in.
        assert_eq!(decades(10.0, 10.0), vec![10.0, 100.0]);
        assert!(decades(f64::INFINITY, f64::INFINITY).is_empty());
    }

    #[test]
    fn log_scale_maps_decades_evenly() {
        let at = |v| log_scale(v, 10.0, 100_000.0, 0.0, 400.0);
        assert!((at(10.0) - 0.0).abs() < 1e-9);
        assert!((at(100.0) - 100.0).abs() < 1e-9);
        assert!((at(10_000.0) - 300.0).abs() < 1e-9);
        assert!((at(100_000.0) - 400.0).abs() < 1e-9);
        // An inverted (y) axis runs the other way.
        assert!((log_scale(1_000.0, 10.0, 100_000.0, 400.0, 0.0) - 200.0).abs() < 1e-9);
    }

    #[test]
    fn a_missing_series_is_left_out_and_noted() {
        let (svg, missing) = chart(vec![
            Series {
                name: "memory".into(),
                points: vec![(10.0, 1_000.0), (100.0, 1_100.0)],
            },
            Series {
                name: "Redis".into(),
                points: vec![(10.0, f64::INFINITY), (100.0, 0.0)],
            },
        ])
        .svg();
        assert_eq!(missing, vec!["Redis".to_owned()]);
        assert_eq!(svg.matches("<polyline").count(), 1);
        assert!(svg.contains("not measured: Redis"));
        assert!(svg.contains(">memory</text>"));
    }

    /// Every element opened is closed, in order, and text is escaped.
    #[test]
    fn svg_is_well_formed() {
        let (svg, _) = chart(vec![
            Series {
                name: "a <b>".into(),
                points: vec![(10.0, 5.0), (1e5, 5e4), (1e3, 70.0)],
            },
            Series {
                name: "c".into(),
                points: vec![(1.0, 2.0)],
            },
        ])
        .svg();
        assert!(svg.starts_with("<svg xmlns=\"http://www.w3.org/2000/svg\""));
        assert!(svg.contains("turn &lt;latency&gt; &amp; more"));
        assert!(svg.contains("a &lt;b&gt;"));
        let mut open: Vec<String> = Vec::new();
        let mut rest = svg.as_str();
        while let Some(start) = rest.find('<') {
            let end = rest[start..].find('>').expect("a tag ends") + start;
            let tag = &rest[start + 1..end];
            assert!(!tag.contains('<'), "unescaped < in {tag:?}");
            if let Some(name) = tag.strip_prefix('/') {
                assert_eq!(open.pop().as_deref(), Some(name), "closing {name}");
            } else if !tag.ends_with('/') {
                let name = tag.split_whitespace().next().expect("a tag name");
                open.push(name.to_owned());
            }
            let text = &rest[end + 1..rest[end..].find('<').map_or(rest.len(), |n| n + end)];
            assert!(!text.contains('>'), "unescaped > in {text:?}");
            rest = &rest[end + 1..];
        }
        assert!(open.is_empty(), "left open: {open:?}");
        // Points are drawn sorted by x: the 1,000 point between the others.
        let line = svg
            .lines()
            .find(|l| l.starts_with("<polyline"))
            .expect("a polyline");
        let xs: Vec<f64> = line
            .split('"')
            .nth(1)
            .expect("points")
            .split(' ')
            .map(|p| p.split(',').next().expect("x").parse().expect("a number"))
            .collect();
        assert!(xs.windows(2).all(|w| w[0] < w[1]), "{xs:?}");
    }
}
