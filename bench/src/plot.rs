//! SVG line charts drawn by the bench itself (no plotting dependency).
//!
//! # Design
//! A [`LineChart`] has categorical x values (e.g. N = 1, 1k, 10k, evenly
//! spaced, which is a log axis for powers of ten) and one [`Series`] per
//! peer; [`render`] lays one or more charts side by side in one SVG with a
//! shared legend underneath. The y axis starts at zero (ratios between
//! lines stay visible) and ends at a "nice" round number. A missing point
//! (a peer that failed or timed out at that N) breaks its line.
//!
//! # Limitations
//! Fixed size and palette (eight colours, then dashes); no log y axis.

use std::fmt::Write as _;

/// One line: a value per category of the chart, `None` where missing.
#[derive(Debug, Clone, PartialEq)]
pub struct Series {
    pub name: String,
    pub points: Vec<Option<f64>>,
}

/// One panel.
#[derive(Debug, Clone, PartialEq)]
pub struct LineChart {
    pub title: String,
    pub x_label: String,
    pub y_label: String,
    /// The x axis, left to right.
    pub categories: Vec<String>,
    pub series: Vec<Series>,
}

const PANEL_W: f64 = 440.0;
const PANEL_H: f64 = 320.0;
const MARGIN_L: f64 = 70.0;
const MARGIN_R: f64 = 20.0;
const MARGIN_T: f64 = 36.0;
const MARGIN_B: f64 = 48.0;
const LEGEND_ROW: f64 = 20.0;
const LEGEND_COLS: usize = 4;
const PALETTE: [&str; 8] = ["#222222", "#d62728", "#ff7f0e", "#9467bd", "#8c564b", "#1f77b4", "#2ca02c", "#e377c2"];

/// The SVG document with `charts` side by side and one legend for every
/// series name (in first-seen order; a name keeps its colour across panels).
pub fn render(charts: &[LineChart]) -> String {
    let mut names: Vec<&str> = Vec::new();
    for s in charts.iter().flat_map(|c| &c.series) {
        if !names.contains(&s.name.as_str()) {
            names.push(&s.name);
        }
    }
    let panels = charts.len().max(1) as f64;
    let legend_rows = names.len().div_ceil(LEGEND_COLS) as f64;
    let width = PANEL_W * panels;
    let height = PANEL_H + 10.0 + legend_rows * LEGEND_ROW + 10.0;
    let mut out = String::new();
    // Writing to a String cannot fail; the results are ignored below.
    let _ = writeln!(
        out,
        r#"<svg xmlns="http://www.w3.org/2000/svg" width="{width:.0}" height="{height:.0}" viewBox="0 0 {width:.0} {height:.0}" font-family="sans-serif" font-size="12">"#
    );
    let _ = writeln!(out, r#"<rect width="100%" height="100%" fill="white"/>"#);
    for (i, chart) in charts.iter().enumerate() {
        panel(&mut out, chart, i as f64 * PANEL_W, &names);
    }
    let col_w = width / LEGEND_COLS as f64;
    for (i, name) in names.iter().enumerate() {
        let x = 20.0 + (i % LEGEND_COLS) as f64 * col_w;
        let y = PANEL_H + 10.0 + (i / LEGEND_COLS) as f64 * LEGEND_ROW + LEGEND_ROW / 2.0;
        let (color, dash) = style(i);
        let _ = writeln!(
            out,
            r#"<line x1="{x:.1}" y1="{y:.1}" x2="{:.1}" y2="{y:.1}" stroke="{color}" stroke-width="2.5"{dash}/><circle cx="{:.1}" cy="{y:.1}" r="3.5" fill="{color}"/><text x="{:.1}" y="{:.1}">{}</text>"#,
            x + 28.0,
            x + 14.0,
            x + 34.0,
            y + 4.0,
            escape(name)
        );
    }
    out.push_str("</svg>\n");
    out
}

fn style(i: usize) -> (&'static str, &'static str) {
    let color = PALETTE[i % PALETTE.len()];
    let dash = if i >= PALETTE.len() { r#" stroke-dasharray="6 3""# } else { "" };
    (color, dash)
}

fn panel(out: &mut String, chart: &LineChart, x0: f64, names: &[&str]) {
    let plot_w = PANEL_W - MARGIN_L - MARGIN_R;
    let plot_h = PANEL_H - MARGIN_T - MARGIN_B;
    let (left, top) = (x0 + MARGIN_L, MARGIN_T);
    let bottom = top + plot_h;
    let max = chart
        .series
        .iter()
        .flat_map(|s| s.points.iter().flatten())
        .copied()
        .filter(|v| v.is_finite())
        .fold(0.0, f64::max);
    let (y_max, step) = nice_axis(max);
    let y_of = |v: f64| bottom - (v / y_max) * plot_h;
    let n = chart.categories.len().max(1);
    let x_of = |i: usize| left + plot_w * (i as f64 + 0.5) / n as f64;

    let _ = writeln!(
        out,
        r#"<text x="{:.1}" y="20" text-anchor="middle" font-size="14" font-weight="bold">{}</text>"#,
        x0 + PANEL_W / 2.0,
        escape(&chart.title)
    );
    // Grid and y ticks.
    let ticks = (y_max / step).round() as usize;
    for t in 0..=ticks {
        let v = step * t as f64;
        let y = y_of(v);
        let _ = writeln!(
            out,
            r##"<line x1="{left:.1}" y1="{y:.1}" x2="{:.1}" y2="{y:.1}" stroke="#e0e0e0"/><text x="{:.1}" y="{:.1}" text-anchor="end">{}</text>"##,
            left + plot_w,
            left - 6.0,
            y + 4.0,
            tick_label(v)
        );
    }
    let _ = writeln!(
        out,
        r##"<line x1="{left:.1}" y1="{top:.1}" x2="{left:.1}" y2="{bottom:.1}" stroke="#444"/><line x1="{left:.1}" y1="{bottom:.1}" x2="{:.1}" y2="{bottom:.1}" stroke="#444"/>"##,
        left + plot_w
    );
    for (i, c) in chart.categories.iter().enumerate() {
        let x = x_of(i);
        let _ = writeln!(
            out,
            r##"<line x1="{x:.1}" y1="{bottom:.1}" x2="{x:.1}" y2="{:.1}" stroke="#444"/><text x="{x:.1}" y="{:.1}" text-anchor="middle">{}</text>"##,
            bottom + 4.0,
            bottom + 18.0,
            escape(c)
        );
    }
    let _ = writeln!(
        out,
        r#"<text x="{:.1}" y="{:.1}" text-anchor="middle">{}</text>"#,
        left + plot_w / 2.0,
        bottom + 38.0,
        escape(&chart.x_label)
    );
    let _ = writeln!(
        out,
        r#"<text transform="translate({:.1},{:.1}) rotate(-90)" text-anchor="middle">{}</text>"#,
        x0 + 16.0,
        top + plot_h / 2.0,
        escape(&chart.y_label)
    );
    for s in &chart.series {
        let idx = names.iter().position(|n| *n == s.name).unwrap_or(0);
        let (color, dash) = style(idx);
        // Consecutive present points form one polyline; a gap starts another.
        let mut runs: Vec<Vec<(f64, f64)>> = vec![Vec::new()];
        for (i, p) in s.points.iter().enumerate().take(n) {
            match p {
                Some(v) if v.is_finite() => {
                    if let Some(run) = runs.last_mut() {
                        run.push((x_of(i), y_of(*v)));
                    }
                }
                _ => runs.push(Vec::new()),
            }
        }
        for run in runs.iter().filter(|r| !r.is_empty()) {
            let pts: Vec<String> = run.iter().map(|(x, y)| format!("{x:.1},{y:.1}")).collect();
            let _ = writeln!(
                out,
                r#"<polyline points="{}" fill="none" stroke="{color}" stroke-width="2"{dash}><title>{}</title></polyline>"#,
                pts.join(" "),
                escape(&s.name)
            );
            for (x, y) in run {
                let _ = writeln!(out, r#"<circle cx="{x:.1}" cy="{y:.1}" r="3.5" fill="{color}"/>"#);
            }
        }
    }
}

/// An axis maximum ≥ `max` and a tick step giving 4–10 ticks, both round
/// (1, 2 or 5 times a power of ten).
fn nice_axis(max: f64) -> (f64, f64) {
    if max <= 0.0 || !max.is_finite() {
        return (1.0, 0.25);
    }
    let raw = max / 5.0;
    let pow = 10f64.powf(raw.log10().floor());
    let step = [1.0, 2.0, 5.0, 10.0].into_iter().map(|m| m * pow).find(|s| max / s <= 8.0).unwrap_or(10.0 * pow);
    ((max / step).ceil().max(1.0) * step, step)
}

fn tick_label(v: f64) -> String {
    if v >= 1e6 {
        format!("{}M", trim(v / 1e6))
    } else if v >= 1e3 {
        format!("{}k", trim(v / 1e3))
    } else {
        trim(v)
    }
}

fn trim(v: f64) -> String {
    let s = format!("{v:.2}");
    s.trim_end_matches('0').trim_end_matches('.').to_owned()
}

fn escape(s: &str) -> String {
    s.replace('&', "&amp;").replace('<', "&lt;").replace('>', "&gt;").replace('"', "&quot;")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn nice_axes_are_round_and_cover_the_maximum() {
        assert_eq!(nice_axis(0.0), (1.0, 0.25));
        assert_eq!(nice_axis(23_456.0), (25_000.0, 5_000.0));
        assert_eq!(nice_axis(100.0), (100.0, 20.0));
        assert_eq!(nice_axis(7.0), (7.0, 1.0));
        for max in [0.3, 1.0, 9.9, 12_345.0, 987_654.0] {
            let (top, step) = nice_axis(max);
            assert!(top >= max && (4.0..=10.0).contains(&(top / step).round()), "{max}: {top} / {step}");
        }
    }

    #[test]
    fn chart_has_a_line_per_series_a_gap_for_missing_points_and_a_legend() {
        let chart = LineChart {
            title: "rps <keep-alive>".into(),
            x_label: "Services (N)".into(),
            y_label: "requests/s".into(),
            categories: vec!["1".into(), "1k".into(), "10k".into()],
            series: vec![
                Series { name: "direct".into(), points: vec![Some(10.0), Some(10.0), Some(10.0)] },
                Series { name: "iptables".into(), points: vec![Some(9.0), None, Some(3.0)] },
            ],
        };
        let svg = render(&[chart.clone(), chart]);
        assert!(svg.starts_with("<svg"), "{svg}");
        assert!(svg.trim_end().ends_with("</svg>"));
        assert!(svg.contains("rps &lt;keep-alive&gt;"));
        // direct: 1 polyline per panel; iptables: 2 runs (gap) per panel.
        assert_eq!(svg.matches("<polyline").count(), 2 * (1 + 2));
        assert_eq!(svg.matches(">direct</text>").count(), 1, "one legend entry per name");
        assert_eq!(svg.matches(">10k</text>").count(), 2);
    }
}
