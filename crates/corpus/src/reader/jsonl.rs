//! JSONL documents: one JSON object per line with a text field (default `text`), and
//! optional id and URL fields.

use std::io::BufRead;

use super::{Document, Line, ReadLimits, ReadStats, read_line_capped};

/// Which fields hold the text, id and URL.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct Fields {
    pub text: String,
    pub id: String,
    pub url: String,
}

impl Default for Fields {
    fn default() -> Self {
        Self {
            text: "text".into(),
            id: "id".into(),
            url: "url".into(),
        }
    }
}

fn field_string(v: &serde_json::Value) -> Option<String> {
    match v {
        serde_json::Value::String(s) => Some(s.clone()),
        serde_json::Value::Number(n) => Some(n.to_string()),
        _ => None,
    }
}

/// Read JSONL documents; the id defaults to `name:line`.
pub fn read(
    mut r: impl BufRead,
    name: &str,
    fields: &Fields,
    limits: ReadLimits,
    f: &mut dyn FnMut(Document),
) -> ReadStats {
    let mut stats = ReadStats::default();
    let mut buf = Vec::new();
    let mut lineno = 0u64;
    loop {
        lineno += 1;
        match read_line_capped(&mut r, &mut buf, limits.max_line_bytes) {
            Err(e) => {
                stats.truncated += 1;
                stats.note(format!(
                    "{name}:{lineno}: read error, rest of file skipped: {e}"
                ));
                break;
            }
            Ok(Line::Eof) => break,
            Ok(Line::TooLong) => {
                stats.records += 1;
                stats.too_long += 1;
                stats.note(format!(
                    "{name}:{lineno}: line longer than {} bytes",
                    limits.max_line_bytes
                ));
                continue;
            }
            Ok(Line::Ok) => {}
        }
        if buf.iter().all(|b| b.is_ascii_whitespace()) {
            continue;
        }
        stats.records += 1;
        let Ok(line) = std::str::from_utf8(&buf) else {
            stats.invalid_utf8 += 1;
            stats.note(format!("{name}:{lineno}: invalid UTF-8"));
            continue;
        };
        let v: serde_json::Value = match serde_json::from_str(line) {
            Ok(v) => v,
            Err(e) => {
                stats.malformed += 1;
                stats.note(format!("{name}:{lineno}: {e}"));
                continue;
            }
        };
        let text = v.get(&fields.text).and_then(|t| t.as_str()).unwrap_or("");
        if text.trim().is_empty() {
            stats.empty += 1;
            continue;
        }
        let id = v
            .get(&fields.id)
            .and_then(field_string)
            .unwrap_or_else(|| format!("{name}:{lineno}"));
        let url = v
            .get(&fields.url)
            .and_then(field_string)
            .unwrap_or_default();
        stats.documents += 1;
        f(Document {
            id,
            url,
            text: text.to_string(),
        });
    }
    stats
}
