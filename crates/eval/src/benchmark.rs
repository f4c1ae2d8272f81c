//! Benchmarks: the built-in sets embedded in the binary, and user JSONL files with a field
//! mapping.
//!
//! The built-ins are copies of `shared/data` files kept under `data/benchmarks/` at the
//! repository root (provenance, licences and sha256 in `data/benchmarks/README.md`). They are
//! embedded with `include_str!`: together they are 1.8 MB, so the `reasonlab` binary evaluates
//! anywhere without locating a data directory relative to the executable (which breaks under
//! `cargo install`, symlinks and containers).

use std::collections::HashSet;
use std::io::BufRead;
use std::path::{Path, PathBuf};

use serde::{Deserialize, Serialize};
use serde_json::Value;

use crate::EvalError;

/// One evaluation problem (the `shared/data` record shape).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Problem {
    pub id: String,
    pub problem: String,
    pub answer: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub solution: Option<String>,
    /// MATH subject (`Algebra`, ...).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub subject: Option<String>,
    /// MATH level 1..5; for CMATH the school grade 1..6.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub level: Option<u32>,
    pub source: String,
}

/// Language of a benchmark's problems; picks the few-shot prompt and the chat instruction.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Language {
    En,
    Zh,
}

/// Which DeepSeekMath few-shot chain-of-thought prompt fits a benchmark.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum FewShotStyle {
    /// 8-shot `Q:`/`A:` GSM8K prompt.
    Gsm8k,
    /// Minerva 4-shot `Problem:`/`Solution:` MATH prompt.
    MinervaMath,
    /// 6-shot `问题：`/`答案：` CMATH prompt.
    Cmath,
}

/// The built-in benchmarks.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum BuiltIn {
    Gsm8kTest,
    Math500,
    Aime24,
    Amc23,
    CmathTest,
    MgsmZh,
}

impl BuiltIn {
    pub const ALL: [BuiltIn; 6] = [
        BuiltIn::Gsm8kTest,
        BuiltIn::Math500,
        BuiltIn::Aime24,
        BuiltIn::Amc23,
        BuiltIn::CmathTest,
        BuiltIn::MgsmZh,
    ];

    pub fn name(self) -> &'static str {
        match self {
            BuiltIn::Gsm8kTest => "gsm8k_test",
            BuiltIn::Math500 => "math500",
            BuiltIn::Aime24 => "aime24",
            BuiltIn::Amc23 => "amc23",
            BuiltIn::CmathTest => "cmath_test",
            BuiltIn::MgsmZh => "mgsm_zh",
        }
    }

    pub fn from_name(name: &str) -> Option<BuiltIn> {
        let name = name.trim().to_ascii_lowercase().replace('-', "_");
        let aliases: &[(&str, BuiltIn)] = &[
            ("gsm8k", BuiltIn::Gsm8kTest),
            ("math_500", BuiltIn::Math500),
            ("aime2024", BuiltIn::Aime24),
            ("amc2023", BuiltIn::Amc23),
            ("cmath", BuiltIn::CmathTest),
            ("mgsm", BuiltIn::MgsmZh),
        ];
        BuiltIn::ALL
            .into_iter()
            .find(|b| b.name() == name)
            .or_else(|| aliases.iter().find(|(a, _)| *a == name).map(|(_, b)| *b))
    }

    /// The embedded JSONL text.
    pub fn jsonl(self) -> &'static str {
        match self {
            BuiltIn::Gsm8kTest => include_str!("../../../data/benchmarks/gsm8k_test.jsonl"),
            BuiltIn::Math500 => include_str!("../../../data/benchmarks/math500.jsonl"),
            BuiltIn::Aime24 => include_str!("../../../data/benchmarks/aime24.jsonl"),
            BuiltIn::Amc23 => include_str!("../../../data/benchmarks/amc23.jsonl"),
            BuiltIn::CmathTest => include_str!("../../../data/benchmarks/cmath_test.jsonl"),
            BuiltIn::MgsmZh => include_str!("../../../data/benchmarks/mgsm_zh.jsonl"),
        }
    }

    pub fn language(self) -> Language {
        match self {
            BuiltIn::CmathTest | BuiltIn::MgsmZh => Language::Zh,
            _ => Language::En,
        }
    }

    /// DeepSeekMath `evaluation/configs/few_shot_test_configs.json` pairs GSM8K with
    /// `CoTGSMPrompt`, MATH with `MinervaMathPrompt` and CMATH with `CoTCMATHPrompt`. It has no
    /// few-shot MGSM-zh entry; we use the Chinese CMATH prompt for it (our choice). AIME and AMC
    /// are competition math, so they get the MATH prompt.
    pub fn few_shot_style(self) -> FewShotStyle {
        match self {
            BuiltIn::Gsm8kTest => FewShotStyle::Gsm8k,
            BuiltIn::Math500 | BuiltIn::Aime24 | BuiltIn::Amc23 => FewShotStyle::MinervaMath,
            BuiltIn::CmathTest | BuiltIn::MgsmZh => FewShotStyle::Cmath,
        }
    }
}

/// Names of the fields of a user JSONL file.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(default)]
pub struct FieldMap {
    pub id: String,
    pub problem: String,
    pub answer: String,
    pub solution: String,
    pub subject: String,
    pub level: String,
}

impl Default for FieldMap {
    fn default() -> Self {
        Self {
            id: "id".into(),
            problem: "problem".into(),
            answer: "answer".into(),
            solution: "solution".into(),
            subject: "subject".into(),
            level: "level".into(),
        }
    }
}

/// A benchmark to evaluate on.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Benchmark {
    BuiltIn(BuiltIn),
    /// A user JSONL file (optionally `.gz`/`.zst`). A missing id becomes `line-N`.
    File {
        name: String,
        path: PathBuf,
        fields: FieldMap,
        language: Language,
        few_shot: FewShotStyle,
    },
}

impl Benchmark {
    /// A built-in name, or a path to a JSONL file (default field names, English, MATH prompt),
    /// optionally named as `NAME=PATH`.
    pub fn parse(spec: &str) -> Result<Benchmark, EvalError> {
        if let Some(b) = BuiltIn::from_name(spec) {
            return Ok(Benchmark::BuiltIn(b));
        }
        let (name, path) = match spec.split_once('=') {
            Some((n, p)) if !n.is_empty() && !n.contains(['/', '\\']) => (n.to_string(), p),
            _ => {
                let stem = Path::new(spec)
                    .file_name()
                    .and_then(|s| s.to_str())
                    .map(|s| s.split('.').next().unwrap_or(s).to_string())
                    .unwrap_or_default();
                (stem, spec)
            }
        };
        let path = PathBuf::from(path);
        if name.is_empty() || !path.is_file() {
            return Err(EvalError::UnknownBenchmark {
                name: spec.to_string(),
            });
        }
        Ok(Benchmark::File {
            name,
            path,
            fields: FieldMap::default(),
            language: Language::En,
            few_shot: FewShotStyle::MinervaMath,
        })
    }

    pub fn name(&self) -> &str {
        match self {
            Benchmark::BuiltIn(b) => b.name(),
            Benchmark::File { name, .. } => name,
        }
    }

    pub fn language(&self) -> Language {
        match self {
            Benchmark::BuiltIn(b) => b.language(),
            Benchmark::File { language, .. } => *language,
        }
    }

    pub fn few_shot_style(&self) -> FewShotStyle {
        match self {
            Benchmark::BuiltIn(b) => b.few_shot_style(),
            Benchmark::File { few_shot, .. } => *few_shot,
        }
    }

    /// Load every problem. Ids must be unique; malformed lines are errors with file and line.
    pub fn load(&self) -> Result<Vec<Problem>, EvalError> {
        let problems = match self {
            Benchmark::BuiltIn(b) => {
                let path = PathBuf::from(format!("<built-in>/{}.jsonl", b.name()));
                let mut out = Vec::new();
                for (i, line) in b.jsonl().lines().enumerate() {
                    if let Some(p) = parse_line(line, i + 1, &path, &FieldMap::default())? {
                        out.push(p);
                    }
                }
                if *b == BuiltIn::CmathTest {
                    // CMATH's per-level table is by school grade (Wei et al. 2023, Table 3).
                    for (p, line) in out.iter_mut().zip(b.jsonl().lines()) {
                        let v: Value = serde_json::from_str(line).unwrap_or(Value::Null);
                        p.level = v.get("grade").and_then(Value::as_u64).map(|g| g as u32);
                    }
                }
                out
            }
            Benchmark::File {
                path, fields, name, ..
            } => {
                let reader = reasonlab_core::jsonl::open(path)?;
                let mut out = Vec::new();
                for (i, line) in reader.lines().enumerate() {
                    let line = line.map_err(EvalError::io(path))?;
                    if let Some(mut p) = parse_line(&line, i + 1, path, fields)? {
                        if p.source.is_empty() {
                            p.source = name.clone();
                        }
                        out.push(p);
                    }
                }
                out
            }
        };
        if problems.is_empty() {
            return Err(EvalError::EmptyBenchmark {
                benchmark: self.name().to_string(),
            });
        }
        let mut seen = HashSet::new();
        for p in &problems {
            if !seen.insert(p.id.as_str()) {
                return Err(EvalError::DuplicateId {
                    benchmark: self.name().to_string(),
                    id: p.id.clone(),
                });
            }
        }
        Ok(problems)
    }
}

fn as_text(v: &Value) -> Option<String> {
    match v {
        Value::String(s) => Some(s.clone()),
        Value::Number(n) => Some(n.to_string()),
        Value::Bool(b) => Some(b.to_string()),
        _ => None,
    }
}

/// Accepts `3`, `"3"` and MATH's `"Level 3"`.
fn as_level(v: &Value) -> Option<u32> {
    match v {
        Value::Number(n) => n.as_u64().map(|x| x as u32),
        Value::String(s) => {
            let digits: String = s.chars().filter(char::is_ascii_digit).collect();
            digits.parse().ok()
        }
        _ => None,
    }
}

fn parse_line(
    line: &str,
    line_no: usize,
    path: &Path,
    fields: &FieldMap,
) -> Result<Option<Problem>, EvalError> {
    if line.trim().is_empty() {
        return Ok(None);
    }
    let bad = |message: String| EvalError::BadRecord {
        path: path.to_path_buf(),
        line: line_no,
        message,
    };
    let v: Value = serde_json::from_str(line).map_err(|e| bad(e.to_string()))?;
    let required = |field: &str| {
        v.get(field)
            .and_then(as_text)
            .ok_or_else(|| bad(format!("missing or non-text field {field:?}")))
    };
    let id = v
        .get(&fields.id)
        .and_then(as_text)
        .unwrap_or_else(|| format!("line-{line_no}"));
    Ok(Some(Problem {
        id,
        problem: required(&fields.problem)?,
        answer: required(&fields.answer)?,
        solution: v.get(&fields.solution).and_then(as_text),
        subject: v.get(&fields.subject).and_then(as_text),
        level: v.get(&fields.level).and_then(as_level),
        source: v.get("source").and_then(as_text).unwrap_or_default(),
    }))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn built_ins_load_with_expected_sizes() {
        let expect = [
            (BuiltIn::Gsm8kTest, 1319),
            (BuiltIn::Math500, 500),
            (BuiltIn::Aime24, 30),
            (BuiltIn::Amc23, 40),
            (BuiltIn::CmathTest, 1098),
            (BuiltIn::MgsmZh, 250),
        ];
        for (b, n) in expect {
            let problems = Benchmark::BuiltIn(b).load().unwrap();
            assert_eq!(problems.len(), n, "{}", b.name());
            assert!(problems.iter().all(|p| !p.answer.is_empty()));
        }
        let math = Benchmark::BuiltIn(BuiltIn::Math500).load().unwrap();
        assert!(
            math.iter()
                .all(|p| p.subject.is_some() && p.level.is_some())
        );
        let cmath = Benchmark::BuiltIn(BuiltIn::CmathTest).load().unwrap();
        assert!(cmath.iter().all(|p| matches!(p.level, Some(1..=6))));
    }

    #[test]
    fn embedded_files_match_readme_hashes() {
        let readme = include_str!("../../../data/benchmarks/README.md");
        for b in BuiltIn::ALL {
            let hash = crate::sha256_hex(b.jsonl().as_bytes());
            let line = format!("{hash}  {}.jsonl", b.name());
            assert!(readme.contains(&line), "README lacks {line}");
        }
    }

    #[test]
    fn names_and_aliases() {
        assert_eq!(BuiltIn::from_name("MATH-500"), Some(BuiltIn::Math500));
        assert_eq!(BuiltIn::from_name("gsm8k"), Some(BuiltIn::Gsm8kTest));
        assert!(matches!(
            Benchmark::parse("no_such_bench"),
            Err(EvalError::UnknownBenchmark { .. })
        ));
    }

    #[test]
    fn user_file_with_field_mapping_and_bad_line() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("mine.jsonl");
        std::fs::write(
            &path,
            "{\"qid\": 7, \"question\": \"1+1?\", \"gold\": 2, \"level\": \"Level 3\"}\n\n\
             {\"question\": \"2+2?\", \"gold\": \"4\"}\n",
        )
        .unwrap();
        let Benchmark::File {
            name,
            path: p,
            language,
            few_shot,
            ..
        } = Benchmark::parse(path.to_str().unwrap()).unwrap()
        else {
            panic!("not a file benchmark")
        };
        assert_eq!(name, "mine");
        let bench = Benchmark::File {
            name,
            path: p,
            fields: FieldMap {
                id: "qid".into(),
                problem: "question".into(),
                answer: "gold".into(),
                ..FieldMap::default()
            },
            language,
            few_shot,
        };
        let problems = bench.load().unwrap();
        assert_eq!(problems[0].id, "7");
        assert_eq!(problems[0].answer, "2");
        assert_eq!(problems[0].level, Some(3));
        assert_eq!(problems[1].id, "line-3");
        assert_eq!(problems[1].source, "mine");

        std::fs::write(&path, "{\"question\": \"x\"}\n").unwrap();
        let err = bench.load().unwrap_err().to_string();
        assert!(
            err.contains("mine.jsonl:1:") && err.contains("gold"),
            "{err}"
        );
    }
}
