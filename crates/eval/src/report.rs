//! Reports: `results.json` (every score next to the settings that produced it), `report.md`,
//! `report.html` (tables and inline SVG plots), and [`compare`] for two runs.

use std::fmt::Write as _;
use std::path::{Path, PathBuf};

use reasonlab_answer::VerifyConfig;
use serde::{Deserialize, Serialize};

use crate::run::RunCounts;
use crate::score::{BenchmarkScores, GroupRow};
use crate::{EvalError, MetricKey, ModelInfo, PromptTemplate, Sampling};

pub const RESULTS_FILE: &str = "results.json";

/// The settings a score was produced with, repeated next to every benchmark's scores.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Settings {
    pub model: String,
    pub model_hash: String,
    pub template: PromptTemplate,
    pub n: usize,
    pub sampling: Sampling,
    pub settings_hash: String,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct BenchmarkResult {
    pub benchmark: String,
    pub settings: Settings,
    pub scores: BenchmarkScores,
}

/// The content of `results.json`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct RunResults {
    pub reasonlab_version: String,
    pub model: ModelInfo,
    pub template: PromptTemplate,
    pub n: usize,
    pub sampling: Sampling,
    pub settings_hash: String,
    pub ks: Vec<usize>,
    pub verify: VerifyConfig,
    pub limit: Option<usize>,
    pub counts: RunCounts,
    pub benchmarks: Vec<BenchmarkResult>,
}

/// Write `results.json`, `report.md` and `report.html` into `out` (atomically, each).
pub fn write_reports(run: &RunResults, out: &Path) -> Result<(), EvalError> {
    let write = |name: &str, bytes: &[u8]| {
        let path = out.join(name);
        reasonlab_core::fs::atomic_write(&path, bytes).map_err(EvalError::io(path))
    };
    let json = serde_json::to_string_pretty(run).map_err(|e| EvalError::BadRun {
        path: out.join(RESULTS_FILE),
        message: e.to_string(),
    })?;
    write(RESULTS_FILE, json.as_bytes())?;
    write("report.md", render_markdown(run).as_bytes())?;
    write("report.html", render_html(run).as_bytes())?;
    Ok(())
}

/// Read a run's `results.json` (from the file or its folder).
pub fn load_results(path: &Path) -> Result<RunResults, EvalError> {
    let file: PathBuf = if path.is_dir() {
        path.join(RESULTS_FILE)
    } else {
        path.to_path_buf()
    };
    let text = std::fs::read_to_string(&file).map_err(EvalError::io(&file))?;
    serde_json::from_str(&text).map_err(|e| EvalError::BadRun {
        path: file,
        message: e.to_string(),
    })
}

fn pct(x: f64) -> String {
    format!("{:.1}", 100.0 * x)
}

fn pct_se(mean: f64, se: f64) -> String {
    format!("{:.1} ± {:.1}", 100.0 * mean, 100.0 * se)
}

fn settings_lines(run: &RunResults) -> Vec<(String, String)> {
    let s = &run.sampling;
    vec![
        ("model".into(), run.model.name.clone()),
        ("model location".into(), run.model.location.clone()),
        ("model hash".into(), run.model.hash.clone()),
        ("template".into(), run.template.name().into()),
        ("samples per problem (n)".into(), run.n.to_string()),
        ("temperature".into(), s.temperature.to_string()),
        ("top_p".into(), s.top_p.to_string()),
        (
            "top_k".into(),
            s.top_k.map_or("none".into(), |k| k.to_string()),
        ),
        ("max_new_tokens".into(), s.max_new_tokens.to_string()),
        ("seed".into(), s.seed.to_string()),
        ("stop".into(), format!("{:?}", s.stop)),
        ("settings hash".into(), run.settings_hash.clone()),
        (
            "verifier".into(),
            serde_json::to_string(&run.verify).unwrap_or_default(),
        ),
        (
            "problems per benchmark".into(),
            run.limit.map_or("all".into(), |l| format!("first {l}")),
        ),
        (
            "completions".into(),
            format!(
                "{} generated, {} reused",
                run.counts.generated, run.counts.reused
            ),
        ),
        ("reasonlab".into(), run.reasonlab_version.clone()),
    ]
}

fn metric_keys(run: &RunResults) -> Vec<MetricKey> {
    let mut keys: Vec<MetricKey> = run.ks.iter().map(|&k| MetricKey::PassAt(k)).collect();
    keys.extend(
        run.ks
            .iter()
            .filter(|&&k| k > 1)
            .map(|&k| MetricKey::ConsAt(k)),
    );
    // Best-of-N, when a reward model re-ranked the samples.
    let ranked = run.benchmarks.iter().any(|b| {
        b.scores
            .metrics
            .keys()
            .any(|m| matches!(m, MetricKey::BestOfAt(_)))
    });
    if ranked {
        keys.extend(
            run.ks
                .iter()
                .filter(|&&k| k > 1)
                .map(|&k| MetricKey::BestOfAt(k)),
        );
    }
    keys
}

fn group_table_md(out: &mut String, title: &str, rows: &[GroupRow], k: usize) {
    if rows.is_empty() {
        return;
    }
    let _ = writeln!(out, "\n#### {title}\n");
    let _ = writeln!(out, "| {title} | problems | pass@1 (%) | cons@{k} (%) |");
    let _ = writeln!(out, "| --- | ---: | ---: | ---: |");
    for r in rows {
        let _ = writeln!(
            out,
            "| {} | {} | {} | {} |",
            r.group,
            r.n_problems,
            pct_se(r.pass1.mean, r.pass1.se),
            pct_se(r.cons.mean, r.cons.se)
        );
    }
}

/// `report.md`.
pub fn render_markdown(run: &RunResults) -> String {
    let mut out = String::new();
    let _ = writeln!(out, "# Evaluation: {}\n", run.model.name);
    let _ = writeln!(out, "| setting | value |\n| --- | --- |");
    for (k, v) in settings_lines(run) {
        let _ = writeln!(out, "| {k} | `{}` |", v.replace('|', "\\|"));
    }
    let keys = metric_keys(run);
    let _ = writeln!(out, "\n## Scores (%, ± standard error over problems)\n");
    let _ = write!(out, "| benchmark | problems |");
    for k in &keys {
        let _ = write!(out, " {k} |");
    }
    let _ = writeln!(out, " no answer | truncated | mean length |");
    let _ = write!(out, "| --- | ---: |");
    for _ in &keys {
        let _ = write!(out, " ---: |");
    }
    let _ = writeln!(out, " ---: | ---: | ---: |");
    for b in &run.benchmarks {
        let s = &b.scores;
        let _ = write!(out, "| {} | {} |", b.benchmark, s.n_problems);
        for k in &keys {
            match s.metrics.get(k) {
                Some(e) => {
                    let _ = write!(out, " {} |", pct_se(e.mean, e.se));
                }
                None => out.push_str(" – |"),
            }
        }
        let _ = writeln!(
            out,
            " {} | {} | {} |",
            pct(s.no_answer_rate),
            pct(s.length.truncated_rate),
            length_label(s)
        );
    }
    for b in &run.benchmarks {
        let s = &b.scores;
        if s.by_subject.is_empty() && s.by_level.is_empty() {
            continue;
        }
        let _ = writeln!(out, "\n### {}", b.benchmark);
        group_table_md(&mut out, "subject", &s.by_subject, s.k_max);
        group_table_md(&mut out, "level", &s.by_level, s.k_max);
    }
    out
}

fn length_label(s: &BenchmarkScores) -> String {
    match (&s.length.tokens, &s.length.chars) {
        (Some(t), _) => format!("{:.0} tok", t.mean),
        (None, Some(c)) => format!("{:.0} chars", c.mean),
        _ => "–".into(),
    }
}

fn esc(s: &str) -> String {
    s.replace('&', "&amp;")
        .replace('<', "&lt;")
        .replace('>', "&gt;")
        .replace('"', "&quot;")
}

/// Accuracy vs k (log2 axis), pass@k solid, cons@k dashed.
fn svg_accuracy_vs_k(s: &BenchmarkScores) -> String {
    let (w, h, l, r, t, b) = (420.0, 240.0, 45.0, 15.0, 15.0, 35.0);
    let n = s.pass_curve.len().max(1);
    let xmax = (n as f64).log2().max(1.0);
    let x = |k: usize| l + (w - l - r) * (k as f64).log2() / xmax;
    let y = |v: f64| t + (h - t - b) * (1.0 - v);
    let mut svg = format!(
        "<svg xmlns=\"http://www.w3.org/2000/svg\" width=\"{w}\" height=\"{h}\" \
         font-family=\"sans-serif\" font-size=\"11\">"
    );
    for i in 0..=4 {
        let v = i as f64 / 4.0;
        let _ = write!(
            svg,
            "<line x1=\"{l}\" x2=\"{}\" y1=\"{y0:.1}\" y2=\"{y0:.1}\" stroke=\"#ddd\"/>\
             <text x=\"{}\" y=\"{:.1}\" text-anchor=\"end\">{}%</text>",
            w - r,
            l - 4.0,
            y(v) + 4.0,
            (v * 100.0) as u32,
            y0 = y(v)
        );
    }
    let mut k = 1;
    while k <= n {
        let _ = write!(
            svg,
            "<text x=\"{:.1}\" y=\"{}\" text-anchor=\"middle\">{k}</text>",
            x(k),
            h - b + 15.0
        );
        k *= 2;
    }
    let _ = write!(
        svg,
        "<text x=\"{:.1}\" y=\"{}\" text-anchor=\"middle\">k</text>",
        (l + w - r) / 2.0,
        h - 4.0
    );
    for (curve, color, dash) in [
        (&s.pass_curve, "#1f77b4", ""),
        (&s.cons_curve, "#d62728", " stroke-dasharray=\"5,3\""),
    ] {
        let points: Vec<String> = curve
            .iter()
            .enumerate()
            .map(|(i, v)| format!("{:.1},{:.1}", x(i + 1), y(*v)))
            .collect();
        let _ = write!(
            svg,
            "<polyline fill=\"none\" stroke=\"{color}\" stroke-width=\"2\"{dash} points=\"{}\"/>",
            points.join(" ")
        );
    }
    let _ = write!(
        svg,
        "<text x=\"{}\" y=\"{}\" fill=\"#1f77b4\">pass@k</text>\
         <text x=\"{}\" y=\"{}\" fill=\"#d62728\">cons@k</text></svg>",
        l + 8.0,
        t + 12.0,
        l + 60.0,
        t + 12.0
    );
    svg
}

fn svg_histogram(s: &BenchmarkScores) -> String {
    let (w, h, l, r, t, b) = (420.0, 200.0, 45.0, 15.0, 10.0, 35.0);
    let bins = &s.length.histogram;
    let mut svg = format!(
        "<svg xmlns=\"http://www.w3.org/2000/svg\" width=\"{w}\" height=\"{h}\" \
         font-family=\"sans-serif\" font-size=\"11\">"
    );
    let max = bins.iter().map(|b| b.2).max().unwrap_or(0).max(1) as f64;
    let bw = (w - l - r) / bins.len().max(1) as f64;
    for (i, (_, _, c)) in bins.iter().enumerate() {
        let bh = (h - t - b) * *c as f64 / max;
        let _ = write!(
            svg,
            "<rect x=\"{:.1}\" y=\"{:.1}\" width=\"{:.1}\" height=\"{bh:.1}\" fill=\"#2ca02c\">\
             <title>{c}</title></rect>",
            l + i as f64 * bw + 1.0,
            h - b - bh,
            (bw - 2.0).max(1.0)
        );
    }
    if let (Some(first), Some(last)) = (bins.first(), bins.last()) {
        let _ = write!(
            svg,
            "<text x=\"{l}\" y=\"{}\">{}</text>\
             <text x=\"{}\" y=\"{}\" text-anchor=\"end\">{}</text>",
            h - b + 15.0,
            first.0,
            w - r,
            h - b + 15.0,
            last.1
        );
    }
    let _ = write!(
        svg,
        "<text x=\"{:.1}\" y=\"{}\" text-anchor=\"middle\">completion length ({})</text>\
         <text x=\"{}\" y=\"{}\" text-anchor=\"end\">{}</text></svg>",
        (l + w - r) / 2.0,
        h - 4.0,
        s.length.histogram_unit,
        l - 4.0,
        t + 10.0,
        max as usize
    );
    svg
}

fn group_table_html(out: &mut String, title: &str, rows: &[GroupRow], k: usize) {
    if rows.is_empty() {
        return;
    }
    let _ = write!(
        out,
        "<h4>by {title}</h4><table><tr><th>{title}</th><th>problems</th><th>pass@1 (%)</th>\
         <th>cons@{k} (%)</th></tr>"
    );
    for r in rows {
        let _ = write!(
            out,
            "<tr><td>{}</td><td>{}</td><td>{}</td><td>{}</td></tr>",
            esc(&r.group),
            r.n_problems,
            pct_se(r.pass1.mean, r.pass1.se),
            pct_se(r.cons.mean, r.cons.se)
        );
    }
    out.push_str("</table>");
}

/// `report.html`: one self-contained page, no scripts.
pub fn render_html(run: &RunResults) -> String {
    let mut out = String::from(
        "<!DOCTYPE html><html><head><meta charset=\"utf-8\"><title>reasonlab eval</title>\
         <style>body{font-family:sans-serif;max-width:960px;margin:2em auto}\
         table{border-collapse:collapse;margin:.5em 0}td,th{border:1px solid #ccc;\
         padding:3px 8px;text-align:right}td:first-child,th:first-child{text-align:left}\
         code{font-size:90%}</style></head><body>",
    );
    let _ = write!(out, "<h1>Evaluation: {}</h1><table>", esc(&run.model.name));
    for (k, v) in settings_lines(run) {
        let _ = write!(
            out,
            "<tr><td>{}</td><td><code>{}</code></td></tr>",
            esc(&k),
            esc(&v)
        );
    }
    out.push_str("</table><h2>Scores (%, ± standard error over problems)</h2><table><tr><th>benchmark</th><th>problems</th>");
    let keys = metric_keys(run);
    for k in &keys {
        let _ = write!(out, "<th>{k}</th>");
    }
    out.push_str("<th>no answer</th><th>truncated</th><th>mean length</th></tr>");
    for b in &run.benchmarks {
        let s = &b.scores;
        let _ = write!(
            out,
            "<tr><td>{}</td><td>{}</td>",
            esc(&b.benchmark),
            s.n_problems
        );
        for k in &keys {
            let cell = s
                .metrics
                .get(k)
                .map_or("–".to_string(), |e| pct_se(e.mean, e.se));
            let _ = write!(out, "<td>{cell}</td>");
        }
        let _ = write!(
            out,
            "<td>{}</td><td>{}</td><td>{}</td></tr>",
            pct(s.no_answer_rate),
            pct(s.length.truncated_rate),
            length_label(s)
        );
    }
    out.push_str("</table>");
    for b in &run.benchmarks {
        let s = &b.scores;
        let _ = write!(out, "<h3>{}</h3><div>", esc(&b.benchmark));
        out.push_str(&svg_accuracy_vs_k(s));
        out.push_str(&svg_histogram(s));
        out.push_str("</div>");
        group_table_html(&mut out, "subject", &s.by_subject, s.k_max);
        group_table_html(&mut out, "level", &s.by_level, s.k_max);
    }
    out.push_str("</body></html>\n");
    out
}

/// A side-by-side table of two runs (folders or `results.json` files): the settings that
/// differ, then every metric both runs have, per benchmark, with the difference B − A.
pub fn compare(run_a: &Path, run_b: &Path) -> Result<String, EvalError> {
    let a = load_results(run_a)?;
    let b = load_results(run_b)?;
    let mut out = String::new();
    let _ = writeln!(out, "A: {}\nB: {}\n", run_a.display(), run_b.display());
    let (sa, sb) = (settings_lines(&a), settings_lines(&b));
    let _ = writeln!(out, "| setting | A | B |\n| --- | --- | --- |");
    for ((k, va), (_, vb)) in sa.iter().zip(&sb) {
        let mark = if va != vb { " **≠**" } else { "" };
        let _ = writeln!(out, "| {k}{mark} | {va} | {vb} |");
    }
    let _ = writeln!(
        out,
        "\n| benchmark | metric | A (%) | B (%) | B − A |\n| --- | --- | ---: | ---: | ---: |"
    );
    for ra in &a.benchmarks {
        let Some(rb) = b.benchmarks.iter().find(|x| x.benchmark == ra.benchmark) else {
            let _ = writeln!(out, "| {} | (only in A) | | | |", ra.benchmark);
            continue;
        };
        // pass@ before cons@, then by k: the key's own order.
        let rows: Vec<(&MetricKey, f64, f64, f64, f64)> = ra
            .scores
            .metrics
            .iter()
            .filter_map(|(k, ea)| {
                rb.scores
                    .metrics
                    .get(k)
                    .map(|eb| (k, ea.mean, ea.se, eb.mean, eb.se))
            })
            .collect();
        for (k, ma, sea, mb, seb) in rows {
            let _ = writeln!(
                out,
                "| {} | {k} | {} | {} | {:+.1} |",
                ra.benchmark,
                pct_se(ma, sea),
                pct_se(mb, seb),
                100.0 * (mb - ma)
            );
        }
    }
    for rb in &b.benchmarks {
        if !a.benchmarks.iter().any(|x| x.benchmark == rb.benchmark) {
            let _ = writeln!(out, "| {} | (only in B) | | | |", rb.benchmark);
        }
    }
    Ok(out)
}
