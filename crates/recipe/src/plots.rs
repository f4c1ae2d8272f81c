//! Training curves as standalone SVG files and one HTML report (no plotting dependency).

use std::fmt::Write as _;
use std::path::Path;

use reasonlab_train::grpo::StepMetrics;

/// A line chart of `series` (name, points) with axes and a legend, as SVG text.
pub fn line_chart(title: &str, x_label: &str, series: &[(&str, Vec<(f64, f64)>)]) -> String {
    const W: f64 = 560.0;
    const H: f64 = 300.0;
    const L: f64 = 56.0;
    const R: f64 = 16.0;
    const T: f64 = 32.0;
    const B: f64 = 40.0;
    const COLORS: [&str; 4] = ["#1f77b4", "#d62728", "#2ca02c", "#9467bd"];
    let pts = series
        .iter()
        .flat_map(|s| s.1.iter())
        .filter(|p| p.1.is_finite());
    let (mut x0, mut x1, mut y0, mut y1) = (f64::MAX, f64::MIN, f64::MAX, f64::MIN);
    for &(x, y) in pts {
        x0 = x0.min(x);
        x1 = x1.max(x);
        y0 = y0.min(y);
        y1 = y1.max(y);
    }
    if x0 > x1 {
        (x0, x1, y0, y1) = (0.0, 1.0, 0.0, 1.0);
    }
    if (x1 - x0).abs() < 1e-12 {
        x1 = x0 + 1.0;
    }
    if (y1 - y0).abs() < 1e-12 {
        y1 = y0 + 1.0;
    }
    let sx = |x: f64| L + (x - x0) / (x1 - x0) * (W - L - R);
    let sy = |y: f64| H - B - (y - y0) / (y1 - y0) * (H - T - B);
    let mut svg = format!(
        r#"<svg xmlns="http://www.w3.org/2000/svg" width="{W}" height="{H}" viewBox="0 0 {W} {H}" font-family="sans-serif" font-size="11">
<rect width="100%" height="100%" fill="white"/>
<text x="{}" y="18" text-anchor="middle" font-size="13">{title}</text>
<line x1="{L}" y1="{}" x2="{}" y2="{}" stroke="black"/><line x1="{L}" y1="{T}" x2="{L}" y2="{}" stroke="black"/>
<text x="{}" y="{}" text-anchor="middle">{x_label}</text>
"#,
        W / 2.0,
        H - B,
        W - R,
        H - B,
        H - B,
        (L + W - R) / 2.0,
        H - 8.0
    );
    for i in 0..=4 {
        let y = y0 + (y1 - y0) * i as f64 / 4.0;
        let x = x0 + (x1 - x0) * i as f64 / 4.0;
        let _ = write!(
            svg,
            r#"<text x="{}" y="{}" text-anchor="end">{:.3}</text><text x="{}" y="{}" text-anchor="middle">{:.0}</text>"#,
            L - 4.0,
            sy(y) + 4.0,
            y,
            sx(x),
            H - B + 14.0,
            x
        );
    }
    for (i, (name, points)) in series.iter().enumerate() {
        let color = COLORS[i % COLORS.len()];
        let path: Vec<String> = points
            .iter()
            .filter(|p| p.1.is_finite())
            .map(|&(x, y)| format!("{:.1},{:.1}", sx(x), sy(y)))
            .collect();
        let _ = write!(
            svg,
            r#"<polyline fill="none" stroke="{color}" stroke-width="1.5" points="{}"/><text x="{}" y="{}" fill="{color}">{name}</text>"#,
            path.join(" "),
            L + 8.0,
            T + 12.0 + 14.0 * i as f64
        );
    }
    svg.push_str("</svg>\n");
    svg
}

/// `reward.svg`, `length.svg` and `report.html` (DeepSeek-R1 Figure 3's two panels: reward /
/// accuracy and mean response length against step).
pub fn write_report(
    dir: &Path,
    history: &[StepMetrics],
    before: &serde_json::Value,
    after: &serde_json::Value,
) -> std::io::Result<()> {
    let xy = |f: &dyn Fn(&StepMetrics) -> f64| -> Vec<(f64, f64)> {
        history.iter().map(|m| (m.step as f64, f(m))).collect()
    };
    let reward = line_chart(
        "GRPO: reward and accuracy per step",
        "step",
        &[
            ("reward", xy(&|m| m.reward_mean)),
            ("accuracy", xy(&|m| m.accuracy)),
        ],
    );
    let length = line_chart(
        "Mean completion length (tokens)",
        "step",
        &[("length", xy(&|m| m.completion_len_mean))],
    );
    std::fs::write(dir.join("reward.svg"), &reward)?;
    std::fs::write(dir.join("length.svg"), &length)?;
    let mut rows = String::new();
    if let (Some(b), Some(a)) = (before.as_object(), after.as_object()) {
        for (k, v) in b {
            let _ = write!(
                rows,
                "<tr><td>{k}</td><td>{v}</td><td>{}</td></tr>",
                a.get(k).cloned().unwrap_or_default()
            );
        }
    }
    let html = format!(
        "<!doctype html><html><head><meta charset=\"utf-8\"><title>reasonlab demo</title>\
         <style>body{{font-family:sans-serif;margin:2em}}td,th{{padding:4px 12px;border-bottom:1px solid #ddd}}</style></head>\
         <body><h1>reasonlab demo: R1-Zero GRPO</h1><h2>Held-out evaluation</h2>\
         <table><tr><th>metric</th><th>before</th><th>after</th></tr>{rows}</table>\
         <h2>Training curves</h2>{reward}{length}</body></html>"
    );
    std::fs::write(dir.join("report.html"), html)
}

/// One SVG per panel (`(title, keys)`: each key of the metric rows plotted against `step`) and
/// `report.html` with all of them, in `dir` (created if needed).
pub fn write_metric_report(
    dir: &Path,
    title: &str,
    rows: &[serde_json::Value],
    panels: &[(&str, &[&str])],
) -> std::io::Result<()> {
    std::fs::create_dir_all(dir)?;
    let mut body = String::new();
    for (panel, keys) in panels {
        let series: Vec<(&str, Vec<(f64, f64)>)> = keys
            .iter()
            .map(|&k| {
                let pts = rows
                    .iter()
                    .filter_map(|r| Some((r.get("step")?.as_f64()?, r.get(k)?.as_f64()?)))
                    .collect();
                (k, pts)
            })
            .filter(|(_, pts): &(&str, Vec<(f64, f64)>)| !pts.is_empty())
            .collect();
        if series.is_empty() {
            continue;
        }
        let svg = line_chart(panel, "step", &series);
        let file: String = panel
            .chars()
            .map(|c| {
                if c.is_ascii_alphanumeric() {
                    c.to_ascii_lowercase()
                } else {
                    '_'
                }
            })
            .collect();
        std::fs::write(dir.join(format!("{file}.svg")), &svg)?;
        body.push_str(&svg);
    }
    let html = format!(
        "<!doctype html><html><head><meta charset=\"utf-8\"><title>{title}</title>\
         <style>body{{font-family:sans-serif;margin:2em}}</style></head>\
         <body><h1>{title}</h1>{body}</body></html>"
    );
    std::fs::write(dir.join("report.html"), html)
}
