//! HTML to plain text that keeps mathematics (DeepSeekMath §2.1 keeps LaTeX in its pages):
//!
//! * MathJax `<script type="math/tex">…</script>` → `$…$` (`; mode=display` → `$$…$$`);
//! * MathML `<math alttext="…">` → `$…$`; without alttext, a TeX `<annotation>` inside it
//!   (KaTeX writes one), else the element's text;
//! * KaTeX's visual duplicate `<span class="katex-html">` is dropped;
//! * images whose `alt` is LaTeX (WordPress `latex.php`, `class="latex"`) → `$alt$`;
//! * LaTeX already in the text (`$…$`, `\(…\)`, `\[…\]`) passes through unchanged.
//!
//! Scripts, styles and other non-content elements are dropped; block elements end lines;
//! entities are decoded. A forgiving scanner, not a full HTML5 parser.

fn decode_entities(s: &str) -> String {
    if !s.contains('&') {
        return s.to_string();
    }
    let mut out = String::with_capacity(s.len());
    let mut rest = s;
    while let Some(i) = rest.find('&') {
        out.push_str(&rest[..i]);
        rest = &rest[i..];
        let end = rest[1..]
            .find(|c: char| c == ';' || c == '&' || c.is_whitespace())
            .map(|e| e + 1);
        let (ent, consumed) = match end {
            Some(e) if e <= 12 && rest.as_bytes().get(e) == Some(&b';') => (&rest[1..e], e + 1),
            _ => {
                out.push('&');
                rest = &rest[1..];
                continue;
            }
        };
        let c = match ent {
            "amp" => Some('&'),
            "lt" => Some('<'),
            "gt" => Some('>'),
            "quot" => Some('"'),
            "apos" => Some('\''),
            "nbsp" => Some(' '),
            "minus" => Some('−'),
            "times" => Some('×'),
            "divide" => Some('÷'),
            "le" => Some('≤'),
            "ge" => Some('≥'),
            "ne" => Some('≠'),
            "pi" => Some('π'),
            _ => {
                if let Some(hex) = ent.strip_prefix("#x").or_else(|| ent.strip_prefix("#X")) {
                    u32::from_str_radix(hex, 16).ok().and_then(char::from_u32)
                } else if let Some(dec) = ent.strip_prefix('#') {
                    dec.parse().ok().and_then(char::from_u32)
                } else {
                    None
                }
            }
        };
        match c {
            Some(c) => {
                out.push(c);
                rest = &rest[consumed..];
            }
            None => {
                out.push('&');
                rest = &rest[1..];
            }
        }
    }
    out.push_str(rest);
    out
}

/// A parsed start or end tag.
struct Tag<'a> {
    name: String,
    end: bool,
    self_closing: bool,
    attrs: &'a str,
}

impl Tag<'_> {
    fn attr(&self, key: &str) -> Option<String> {
        let a = self.attrs;
        let lower = a.to_ascii_lowercase();
        let mut from = 0;
        while let Some(i) = lower[from..].find(key) {
            let at = from + i;
            from = at + key.len();
            let before_ok = at == 0 || lower.as_bytes()[at - 1].is_ascii_whitespace();
            let after = lower[from..].trim_start();
            if !before_ok || !after.starts_with('=') {
                continue;
            }
            let vstart = a.len() - after.len() + 1;
            let v = a[vstart..].trim_start();
            let value = if let Some(q) = v.chars().next().filter(|c| *c == '"' || *c == '\'') {
                v[1..].split(q).next().unwrap_or("")
            } else {
                v.split(|c: char| c.is_whitespace() || c == '>')
                    .next()
                    .unwrap_or("")
            };
            return Some(decode_entities(value));
        }
        None
    }
}

fn parse_tag(inner: &str) -> Tag<'_> {
    let (end, body) = match inner.strip_prefix('/') {
        Some(b) => (true, b),
        None => (false, inner),
    };
    let self_closing = body.ends_with('/');
    let name_end = body
        .find(|c: char| c.is_whitespace() || c == '/')
        .unwrap_or(body.len());
    Tag {
        name: body[..name_end].to_ascii_lowercase(),
        end,
        self_closing,
        attrs: &body[name_end..],
    }
}

const SKIP: &[&str] = &[
    "script", "style", "noscript", "head", "template", "svg", "iframe", "nav", "footer", "button",
    "select", "form",
];
const BLOCK: &[&str] = &[
    "p",
    "div",
    "br",
    "li",
    "ul",
    "ol",
    "h1",
    "h2",
    "h3",
    "h4",
    "h5",
    "h6",
    "tr",
    "table",
    "pre",
    "blockquote",
    "section",
    "article",
    "header",
    "dd",
    "dt",
    "hr",
    "title",
    "td",
    "th",
];

/// Skip to the end tag of `name` (counting nesting); returns the index after it and the raw
/// inner HTML.
fn skip_element<'a>(html: &'a str, from: usize, name: &str) -> (usize, &'a str) {
    let lower_open = format!("<{name}");
    let lower_close = format!("</{name}");
    let mut depth = 1;
    let mut i = from;
    let bytes = html.as_bytes();
    while i < html.len() {
        let Some(j) = html[i..].find('<') else { break };
        let at = i + j;
        let rest = &html[at..];
        let starts = |p: &str| {
            rest.len() >= p.len() && rest.as_bytes()[..p.len()].eq_ignore_ascii_case(p.as_bytes())
        };
        let boundary = |p: &str| {
            bytes
                .get(at + p.len())
                .is_none_or(|b| !b.is_ascii_alphanumeric())
        };
        if starts(&lower_close) && boundary(&lower_close) {
            depth -= 1;
            if depth == 0 {
                let close = html[at..]
                    .find('>')
                    .map(|k| at + k + 1)
                    .unwrap_or(html.len());
                return (close, &html[from..at]);
            }
        } else if starts(&lower_open)
            && boundary(&lower_open)
            && name != "script"
            && name != "style"
        {
            depth += 1;
        }
        i = at + 1;
    }
    (html.len(), &html[from..])
}

fn looks_like_latex_img(tag: &Tag) -> bool {
    let src = tag.attr("src").unwrap_or_default().to_ascii_lowercase();
    let class = tag.attr("class").unwrap_or_default().to_ascii_lowercase();
    src.contains("latex")
        || src.contains("mathtex")
        || src.contains("codecogs")
        || class.contains("latex")
        || class.contains("tex")
}

fn tex_annotation(inner: &str) -> Option<String> {
    let lower = inner.to_ascii_lowercase();
    let i = lower.find("<annotation")?;
    let open_end = i + lower[i..].find('>')? + 1;
    let tag = &lower[i..open_end];
    if !tag.contains("tex") {
        return None;
    }
    let close = open_end + lower[open_end..].find("</annotation")?;
    Some(decode_entities(inner[open_end..close].trim()))
}

/// Convert HTML to text, keeping math as LaTeX (see the module doc).
pub fn html_to_text(html: &str) -> String {
    let mut out = String::with_capacity(html.len() / 3);
    let mut i = 0;
    while i < html.len() {
        let Some(j) = html[i..].find('<') else {
            out.push_str(&decode_entities(&html[i..]));
            break;
        };
        out.push_str(&decode_entities(&html[i..i + j]));
        let at = i + j;
        if html[at..].starts_with("<!--") {
            i = html[at..]
                .find("-->")
                .map(|k| at + k + 3)
                .unwrap_or(html.len());
            continue;
        }
        let Some(close) = html[at..].find('>') else {
            break;
        };
        let inner = &html[at + 1..at + close];
        i = at + close + 1;
        if inner.starts_with('!') || inner.starts_with('?') {
            continue;
        }
        let tag = parse_tag(inner);
        if tag.end {
            if BLOCK.contains(&tag.name.as_str()) {
                out.push('\n');
            }
            continue;
        }
        match tag.name.as_str() {
            "script" => {
                let ty = tag.attr("type").unwrap_or_default().to_ascii_lowercase();
                let (next, body) = skip_element(html, i, "script");
                i = next;
                if ty.starts_with("math/tex") {
                    let delim = if ty.contains("mode=display") {
                        "$$"
                    } else {
                        "$"
                    };
                    out.push_str(delim);
                    out.push_str(body.trim());
                    out.push_str(delim);
                }
            }
            "math" => {
                let (next, body) = skip_element(html, i, "math");
                i = next;
                let display = tag.attr("display").is_some_and(|d| d == "block");
                let delim = if display { "$$" } else { "$" };
                let tex = tag
                    .attr("alttext")
                    .filter(|a| !a.trim().is_empty())
                    .or_else(|| tex_annotation(body))
                    .unwrap_or_else(|| {
                        html_to_text(body)
                            .split_whitespace()
                            .collect::<Vec<_>>()
                            .join(" ")
                    });
                out.push_str(delim);
                out.push_str(tex.trim());
                out.push_str(delim);
            }
            "span"
                if tag
                    .attr("class")
                    .is_some_and(|c| c.split_whitespace().any(|x| x == "katex-html")) =>
            {
                i = skip_element(html, i, "span").0;
            }
            "img" => {
                if looks_like_latex_img(&tag)
                    && let Some(alt) = tag.attr("alt").filter(|a| !a.trim().is_empty())
                {
                    out.push('$');
                    out.push_str(alt.trim());
                    out.push('$');
                }
            }
            name if SKIP.contains(&name) && !tag.self_closing => {
                i = skip_element(html, i, name).0;
            }
            name if BLOCK.contains(&name) => out.push('\n'),
            _ => {}
        }
    }
    // Collapse spaces within lines and drop blank lines.
    let mut text = String::with_capacity(out.len());
    for line in out.lines() {
        let mut first = true;
        for w in line.split_whitespace() {
            if first {
                if !text.is_empty() {
                    text.push('\n');
                }
                first = false;
            } else {
                text.push(' ');
            }
            text.push_str(w);
        }
    }
    text
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn keeps_mathjax_mathml_katex_and_latex_images() {
        let html = r#"<html><head><title>T</title><style>p{}</style></head><body>
<p>Let <script type="math/tex">x^2 < 1</script> and
<script type="math/tex; mode=display">\int_0^1 f</script></p>
<div>MathML: <math alttext="a+b"><mi>a</mi><mo>+</mo><mi>b</mi></math></div>
<p><span class="katex"><span class="katex-mathml"><math><semantics><mrow><mi>y</mi></mrow><annotation encoding="application/x-tex">y^3</annotation></semantics></math></span><span class="katex-html" aria-hidden="true"><span class="base">y3</span></span></span> done</p>
<img src="https://s0.wp.com/latex.php?latex=e%5E%7Bi%5Cpi%7D" alt="e^{i\pi}" class="latex">
<p>Inline \(z\) stays &amp; so does $w$.</p><script>var x = "<p>no</p>";</script>
<!-- comment <p>hidden</p> --></body></html>"#;
        let t = html_to_text(html);
        assert!(t.contains("Let $x^2 < 1$ and\n$$\\int_0^1 f$$"), "{t}");
        assert!(t.contains("MathML: $a+b$"), "{t}");
        assert!(t.contains("$y^3$ done"), "{t}");
        assert!(!t.contains("y3"), "{t}");
        assert!(t.contains("$e^{i\\pi}$"), "{t}");
        assert!(t.contains("Inline \\(z\\) stays & so does $w$."), "{t}");
        assert!(
            !t.contains("no") && !t.contains("hidden") && !t.contains("p{}"),
            "{t}"
        );
    }

    #[test]
    fn tolerates_broken_html() {
        assert_eq!(html_to_text("a <b unclosed"), "a");
        assert_eq!(
            html_to_text("<p>x &bogus; &#x41; &#9999999999;</p>"),
            "x &bogus; A &#9999999999;"
        );
        assert_eq!(html_to_text("<script>never closed"), "");
    }
}
