//! Training curves as standalone SVG and PNG files and one HTML report, with no plotting
//! dependency: a chart is laid out once as a [`Scene`] of lines and texts in pixel
//! coordinates, then written as SVG text or rasterised (anti-aliased lines, DejaVu Sans glyphs
//! pre-rendered by `scripts/make_bitmap_font.py`) into a PNG.

use std::fmt::Write as _;
use std::io::Write as _;
use std::path::Path;

use reasonlab_train::grpo::StepMetrics;

/// Horizontal text anchor, as SVG's `text-anchor`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Anchor {
    Start,
    Middle,
    End,
}

impl Anchor {
    fn svg(self) -> &'static str {
        match self {
            Anchor::Start => "start",
            Anchor::Middle => "middle",
            Anchor::End => "end",
        }
    }
}

/// Font sizes with a pre-rendered atlas.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum FontSize {
    Small,
    Title,
}

impl FontSize {
    fn px(self) -> u32 {
        match self {
            FontSize::Small => 11,
            FontSize::Title => 13,
        }
    }
}

/// One drawing primitive, in pixels (y down). Text `y` is the baseline.
#[derive(Debug, Clone, PartialEq)]
pub enum Prim {
    Polyline {
        points: Vec<(f64, f64)>,
        color: [u8; 3],
        width: f64,
    },
    Text {
        x: f64,
        y: f64,
        text: String,
        anchor: Anchor,
        size: FontSize,
        color: [u8; 3],
    },
}

/// A chart laid out in pixels on a white `w × h` canvas.
#[derive(Debug, Clone, PartialEq)]
pub struct Scene {
    pub w: u32,
    pub h: u32,
    pub prims: Vec<Prim>,
}

const BLACK: [u8; 3] = [0, 0, 0];
const COLORS: [[u8; 3]; 4] = [
    [0x1f, 0x77, 0xb4],
    [0xd6, 0x27, 0x28],
    [0x2c, 0xa0, 0x2c],
    [0x94, 0x67, 0xbd],
];

/// A named series of `(x, mean, spread)` points for [`error_chart_scene`].
pub type ErrorSeries<'a> = (&'a str, Vec<(f64, f64, f64)>);

/// Lay out a line chart of `series` (name, points) with axes, ticks and a legend.
pub fn chart_scene(title: &str, x_label: &str, series: &[(&str, Vec<(f64, f64)>)]) -> Scene {
    let with: Vec<ErrorSeries<'_>> = series
        .iter()
        .map(|(n, p)| (*n, p.iter().map(|&(x, y)| (x, y, 0.0)).collect()))
        .collect();
    error_chart_scene(title, x_label, &with)
}

/// A line chart of means with error bars: each point is `(x, mean, spread)`, drawn as the mean
/// with a bar from `mean - spread` to `mean + spread` (no bar where the spread is 0).
pub fn error_chart_scene(title: &str, x_label: &str, series: &[ErrorSeries<'_>]) -> Scene {
    const W: f64 = 560.0;
    const H: f64 = 300.0;
    const L: f64 = 56.0;
    const R: f64 = 16.0;
    const T: f64 = 32.0;
    const B: f64 = 40.0;
    let finite = |p: &&(f64, f64, f64)| p.0.is_finite() && p.1.is_finite() && p.2.is_finite();
    let pts = series.iter().flat_map(|s| s.1.iter()).filter(finite);
    let (mut x0, mut x1, mut y0, mut y1) = (f64::MAX, f64::MIN, f64::MAX, f64::MIN);
    for &(x, y, e) in pts {
        x0 = x0.min(x);
        x1 = x1.max(x);
        y0 = y0.min(y - e.abs());
        y1 = y1.max(y + e.abs());
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
    let text =
        |x: f64, y: f64, t: String, anchor: Anchor, size: FontSize, color: [u8; 3]| Prim::Text {
            x,
            y,
            text: t,
            anchor,
            size,
            color,
        };
    let axis = |points: Vec<(f64, f64)>| Prim::Polyline {
        points,
        color: BLACK,
        width: 1.0,
    };
    let mut prims = vec![
        text(
            W / 2.0,
            18.0,
            title.into(),
            Anchor::Middle,
            FontSize::Title,
            BLACK,
        ),
        axis(vec![(L, H - B), (W - R, H - B)]),
        axis(vec![(L, T), (L, H - B)]),
        text(
            (L + W - R) / 2.0,
            H - 8.0,
            x_label.into(),
            Anchor::Middle,
            FontSize::Small,
            BLACK,
        ),
    ];
    for i in 0..=4 {
        let y = y0 + (y1 - y0) * i as f64 / 4.0;
        let x = x0 + (x1 - x0) * i as f64 / 4.0;
        prims.push(text(
            L - 4.0,
            sy(y) + 4.0,
            format!("{y:.3}"),
            Anchor::End,
            FontSize::Small,
            BLACK,
        ));
        prims.push(text(
            sx(x),
            H - B + 14.0,
            format!("{x:.0}"),
            Anchor::Middle,
            FontSize::Small,
            BLACK,
        ));
    }
    for (i, (name, points)) in series.iter().enumerate() {
        let color = COLORS[i % COLORS.len()];
        for &(x, y, e) in points.iter().filter(finite) {
            if e != 0.0 {
                let (px, lo, hi) = (sx(x), sy(y - e.abs()), sy(y + e.abs()));
                prims.push(Prim::Polyline {
                    points: vec![(px, lo), (px, hi)],
                    color,
                    width: 1.0,
                });
                for cap in [lo, hi] {
                    prims.push(Prim::Polyline {
                        points: vec![(px - 3.0, cap), (px + 3.0, cap)],
                        color,
                        width: 1.0,
                    });
                }
            }
        }
        prims.push(Prim::Polyline {
            points: points
                .iter()
                .filter(finite)
                .map(|&(x, y, _)| (sx(x), sy(y)))
                .collect(),
            color,
            width: 1.5,
        });
        prims.push(text(
            L + 8.0,
            T + 12.0 + 14.0 * i as f64,
            (*name).into(),
            Anchor::Start,
            FontSize::Small,
            color,
        ));
    }
    Scene {
        w: W as u32,
        h: H as u32,
        prims,
    }
}

fn hex(c: [u8; 3]) -> String {
    format!("#{:02x}{:02x}{:02x}", c[0], c[1], c[2])
}

fn xml_escape(t: &str) -> String {
    t.replace('&', "&amp;")
        .replace('<', "&lt;")
        .replace('>', "&gt;")
}

impl Scene {
    /// The scene as a standalone SVG document.
    pub fn to_svg(&self) -> String {
        let (w, h) = (self.w, self.h);
        let mut svg = format!(
            r#"<svg xmlns="http://www.w3.org/2000/svg" width="{w}" height="{h}" viewBox="0 0 {w} {h}" font-family="sans-serif" font-size="11">
<rect width="100%" height="100%" fill="white"/>
"#
        );
        for p in &self.prims {
            match p {
                Prim::Polyline {
                    points,
                    color,
                    width,
                } => {
                    let pts: Vec<String> = points
                        .iter()
                        .map(|(x, y)| format!("{x:.1},{y:.1}"))
                        .collect();
                    let _ = write!(
                        svg,
                        r#"<polyline fill="none" stroke="{}" stroke-width="{width}" points="{}"/>"#,
                        hex(*color),
                        pts.join(" ")
                    );
                }
                Prim::Text {
                    x,
                    y,
                    text,
                    anchor,
                    size,
                    color,
                } => {
                    let _ = write!(
                        svg,
                        r#"<text x="{x}" y="{y}" text-anchor="{}" font-size="{}" fill="{}">{}</text>"#,
                        anchor.svg(),
                        size.px(),
                        hex(*color),
                        xml_escape(text)
                    );
                }
            }
        }
        svg.push_str("\n</svg>\n");
        svg
    }

    /// The scene rasterised as an RGB PNG file's bytes.
    pub fn to_png(&self) -> Vec<u8> {
        let mut c = Canvas::new(self.w, self.h);
        for p in &self.prims {
            match p {
                Prim::Polyline {
                    points,
                    color,
                    width,
                } => {
                    for seg in points.windows(2) {
                        c.segment(seg[0], seg[1], *width, *color);
                    }
                }
                Prim::Text {
                    x,
                    y,
                    text,
                    anchor,
                    size,
                    color,
                } => c.text(*x, *y, text, *anchor, Font::get(*size), *color),
            }
        }
        c.encode_png()
    }
}

/// A pre-rendered glyph atlas (see `scripts/make_bitmap_font.py` for the layout).
struct Font {
    height: usize,
    baseline: usize,
    /// (advance, alpha offset) for ASCII 32..=126.
    glyphs: Vec<(usize, usize)>,
    data: &'static [u8],
}

impl Font {
    fn parse(data: &'static [u8]) -> Font {
        let (height, baseline) = (data[0] as usize, data[1] as usize);
        let mut glyphs = Vec::with_capacity(95);
        let mut at = 2;
        for _ in 32..=126 {
            let adv = data[at] as usize;
            glyphs.push((adv, at + 1));
            at += 1 + adv * height;
        }
        Font {
            height,
            baseline,
            glyphs,
            data,
        }
    }

    fn get(size: FontSize) -> &'static Font {
        use std::sync::OnceLock;
        static SMALL: OnceLock<Font> = OnceLock::new();
        static TITLE: OnceLock<Font> = OnceLock::new();
        match size {
            FontSize::Small => {
                SMALL.get_or_init(|| Font::parse(include_bytes!("font/dejavu-sans-11.bin")))
            }
            FontSize::Title => {
                TITLE.get_or_init(|| Font::parse(include_bytes!("font/dejavu-sans-13.bin")))
            }
        }
    }

    /// Glyph of `c`; characters outside printable ASCII draw as `?`.
    fn glyph(&self, c: char) -> (usize, usize) {
        let i = (c as u32).wrapping_sub(32);
        self.glyphs[if i < 95 {
            i as usize
        } else {
            ('?' as usize) - 32
        }]
    }
}

/// An RGB pixel buffer on white.
struct Canvas {
    w: usize,
    h: usize,
    rgb: Vec<u8>,
}

impl Canvas {
    fn new(w: u32, h: u32) -> Self {
        let (w, h) = (w as usize, h as usize);
        Self {
            w,
            h,
            rgb: vec![255; w * h * 3],
        }
    }

    fn blend(&mut self, x: i64, y: i64, color: [u8; 3], alpha: f64) {
        if x < 0 || y < 0 || x >= self.w as i64 || y >= self.h as i64 || alpha <= 0.0 {
            return;
        }
        let a = alpha.min(1.0);
        let i = (y as usize * self.w + x as usize) * 3;
        for (px, &c) in self.rgb[i..i + 3].iter_mut().zip(&color) {
            let old = f64::from(*px);
            *px = (old + (f64::from(c) - old) * a).round() as u8;
        }
    }

    /// An anti-aliased segment of width `width`: each pixel's coverage from the distance of
    /// its centre to the segment.
    fn segment(&mut self, a: (f64, f64), b: (f64, f64), width: f64, color: [u8; 3]) {
        let r = width / 2.0 + 0.5;
        let (x0, x1) = (a.0.min(b.0) - r, a.0.max(b.0) + r);
        let (y0, y1) = (a.1.min(b.1) - r, a.1.max(b.1) + r);
        let (dx, dy) = (b.0 - a.0, b.1 - a.1);
        let len2 = dx * dx + dy * dy;
        for py in y0.floor() as i64..=y1.ceil() as i64 {
            for px in x0.floor() as i64..=x1.ceil() as i64 {
                let (cx, cy) = (px as f64 + 0.5, py as f64 + 0.5);
                let t = if len2 > 0.0 {
                    (((cx - a.0) * dx + (cy - a.1) * dy) / len2).clamp(0.0, 1.0)
                } else {
                    0.0
                };
                let (qx, qy) = (a.0 + t * dx - cx, a.1 + t * dy - cy);
                let d = (qx * qx + qy * qy).sqrt();
                self.blend(px, py, color, (width / 2.0 + 0.5 - d).clamp(0.0, 1.0));
            }
        }
    }

    fn text(&mut self, x: f64, y: f64, text: &str, anchor: Anchor, font: &Font, color: [u8; 3]) {
        let width: usize = text.chars().map(|c| font.glyph(c).0).sum();
        let left = match anchor {
            Anchor::Start => x,
            Anchor::Middle => x - width as f64 / 2.0,
            Anchor::End => x - width as f64,
        }
        .round() as i64;
        let top = (y.round() as i64) - font.baseline as i64;
        let mut pen = left;
        for c in text.chars() {
            let (adv, off) = font.glyph(c);
            for gy in 0..font.height {
                for gx in 0..adv {
                    let a = font.data[off + gy * adv + gx];
                    if a > 0 {
                        self.blend(
                            pen + gx as i64,
                            top + gy as i64,
                            color,
                            f64::from(a) / 255.0,
                        );
                    }
                }
            }
            pen += adv as i64;
        }
    }

    /// PNG: signature, IHDR (8-bit RGB), one zlib IDAT of filter-0 rows, IEND.
    fn encode_png(&self) -> Vec<u8> {
        fn chunk(out: &mut Vec<u8>, kind: &[u8; 4], data: &[u8]) {
            out.extend_from_slice(&(data.len() as u32).to_be_bytes());
            let mut crc = flate2::Crc::new();
            crc.update(kind);
            crc.update(data);
            out.extend_from_slice(kind);
            out.extend_from_slice(data);
            out.extend_from_slice(&crc.sum().to_be_bytes());
        }
        let mut out = b"\x89PNG\r\n\x1a\n".to_vec();
        let mut ihdr = Vec::with_capacity(13);
        ihdr.extend_from_slice(&(self.w as u32).to_be_bytes());
        ihdr.extend_from_slice(&(self.h as u32).to_be_bytes());
        ihdr.extend_from_slice(&[8, 2, 0, 0, 0]);
        chunk(&mut out, b"IHDR", &ihdr);
        let mut z = flate2::write::ZlibEncoder::new(Vec::new(), flate2::Compression::default());
        for row in self.rgb.chunks(self.w * 3) {
            // Writing to a Vec cannot fail.
            let _ = z.write_all(&[0]);
            let _ = z.write_all(row);
        }
        let idat = z.finish().unwrap_or_default();
        chunk(&mut out, b"IDAT", &idat);
        chunk(&mut out, b"IEND", &[]);
        out
    }
}

/// Write `name.svg` and `name.png` of `scene` into `dir`; returns the SVG text.
pub fn write_chart(dir: &Path, name: &str, scene: &Scene) -> std::io::Result<String> {
    let svg = scene.to_svg();
    std::fs::write(dir.join(format!("{name}.svg")), &svg)?;
    std::fs::write(dir.join(format!("{name}.png")), scene.to_png())?;
    Ok(svg)
}

/// `reward.{svg,png}`, `length.{svg,png}` and `report.html` (DeepSeek-R1 Figure 3's two
/// panels: reward / accuracy and mean response length against step).
pub fn write_report(
    dir: &Path,
    history: &[StepMetrics],
    before: &crate::demo::DemoEval,
    after: &crate::demo::DemoEval,
) -> std::io::Result<()> {
    let xy = |f: &dyn Fn(&StepMetrics) -> f64| -> Vec<(f64, f64)> {
        history.iter().map(|m| (m.step as f64, f(m))).collect()
    };
    let reward = chart_scene(
        "GRPO: reward and accuracy per step",
        "step",
        &[
            ("reward", xy(&|m| m.reward_mean)),
            ("accuracy", xy(&|m| m.accuracy)),
        ],
    );
    let length = chart_scene(
        "Mean completion length (tokens)",
        "step",
        &[("length", xy(&|m| m.completion_len_mean))],
    );
    let reward = write_chart(dir, "reward", &reward)?;
    let length = write_chart(dir, "length", &length)?;
    let mut rows = String::new();
    for (k, v) in &before.metrics {
        let _ = write!(
            rows,
            "<tr><td>{k}</td><td>{v:.3}</td><td>{:.3}</td></tr>",
            after.get(*k)
        );
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

/// One SVG and one PNG per panel (`(title, keys)`: each key of the metric rows plotted against
/// `step`) and `report.html` with all of them, in `dir` (created if needed).
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
        let scene = chart_scene(panel, "step", &series);
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
        body.push_str(&write_chart(dir, &file, &scene)?);
    }
    let html = format!(
        "<!doctype html><html><head><meta charset=\"utf-8\"><title>{title}</title>\
         <style>body{{font-family:sans-serif;margin:2em}}</style></head>\
         <body><h1>{title}</h1>{body}</body></html>"
    );
    std::fs::write(dir.join("report.html"), html)
}

/// `plots/*.svg|png` and `plots/report.html` of a run folder from its `metrics.jsonl`: one
/// panel per `(title, keys)`, each key plotted against `step`.
pub fn write_curves(
    dir: &crate::run::RunDir,
    title: &str,
    panels: &[(&str, &[&str])],
) -> Result<(), crate::run::RunError> {
    let rows: Vec<serde_json::Value> =
        reasonlab_core::jsonl::read(&dir.metrics(), reasonlab_core::jsonl::BadLines::Skip)?;
    let plots = dir.plots();
    write_metric_report(&plots, title, &rows, panels).map_err(crate::run::io(&plots))
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::io::Read as _;

    /// Decode our own PNG (checking every CRC) back to (w, h, rgb).
    fn decode(png: &[u8]) -> (usize, usize, Vec<u8>) {
        assert_eq!(&png[..8], b"\x89PNG\r\n\x1a\n");
        let (mut at, mut w, mut h, mut idat) = (8, 0, 0, Vec::new());
        while at < png.len() {
            let len = u32::from_be_bytes(png[at..at + 4].try_into().unwrap()) as usize;
            let kind = &png[at + 4..at + 8];
            let data = &png[at + 8..at + 8 + len];
            let crc = u32::from_be_bytes(png[at + 8 + len..at + 12 + len].try_into().unwrap());
            let mut c = flate2::Crc::new();
            c.update(kind);
            c.update(data);
            assert_eq!(c.sum(), crc, "CRC of {:?}", std::str::from_utf8(kind));
            match kind {
                b"IHDR" => {
                    w = u32::from_be_bytes(data[..4].try_into().unwrap()) as usize;
                    h = u32::from_be_bytes(data[4..8].try_into().unwrap()) as usize;
                    assert_eq!(&data[8..], &[8, 2, 0, 0, 0]);
                }
                b"IDAT" => idat.extend_from_slice(data),
                _ => {}
            }
            at += 12 + len;
        }
        let mut raw = Vec::new();
        flate2::read::ZlibDecoder::new(&idat[..])
            .read_to_end(&mut raw)
            .unwrap();
        assert_eq!(raw.len(), h * (1 + 3 * w));
        let rgb = raw
            .chunks(1 + 3 * w)
            .flat_map(|r| {
                assert_eq!(r[0], 0);
                r[1..].to_vec()
            })
            .collect();
        (w, h, rgb)
    }

    #[test]
    fn png_shows_the_series_where_the_svg_puts_it() {
        let series = [("reward", vec![(0.0, 0.0), (10.0, 1.0)])];
        let scene = chart_scene("Title here", "step", &series);
        let (w, h, rgb) = decode(&scene.to_png());
        assert_eq!((w, h), (560, 300));
        let px = |x: usize, y: usize| &rgb[(y * w + x) * 3..(y * w + x) * 3 + 3];
        // The series line runs from the plot's bottom-left to its top-right corner: its midpoint
        // is drawn in the first series colour, a point far from it stays white.
        let Prim::Polyline { points, .. } = &scene.prims[scene.prims.len() - 2] else {
            panic!("series polyline expected");
        };
        let (mx, my) = (
            (points[0].0 + points[1].0) / 2.0,
            (points[0].1 + points[1].1) / 2.0,
        );
        let mut near = (mx as usize - 1..=mx as usize + 1)
            .flat_map(|x| (my as usize - 1..=my as usize + 1).map(move |y| (x, y)));
        assert!(near.any(|(x, y)| px(x, y) == COLORS[0]));
        assert_eq!(px(500, 250), [255, 255, 255]);
        // The title is drawn as dark pixels centred at the top, the margins are white.
        let dark_in = |x0: usize, x1: usize, y0: usize, y1: usize| {
            (y0..y1)
                .flat_map(|y| (x0..x1).map(move |x| (x, y)))
                .filter(|&(x, y)| px(x, y).iter().all(|&v| v < 128))
                .count()
        };
        assert!(dark_in(240, 320, 6, 22) > 30, "title pixels");
        assert_eq!(dark_in(0, 200, 0, 22), 0);
        // The SVG has the same primitives.
        let svg = scene.to_svg();
        assert!(svg.contains(">Title here</text>") && svg.contains("#1f77b4"));
    }
}
