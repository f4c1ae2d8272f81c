//! `fasttext test` metrics (`src/meter.cc`): examples, precision and recall at k, and
//! per-label precision / recall / F1.

/// Counts for all labels together or for one label.
#[derive(Debug, Default, Clone, Copy, PartialEq, Eq)]
pub struct Counts {
    pub gold: u64,
    pub predicted: u64,
    pub predicted_gold: u64,
}

impl Counts {
    /// NaN when nothing was predicted, as fastText prints it.
    pub fn precision(&self) -> f64 {
        if self.predicted == 0 {
            f64::NAN
        } else {
            self.predicted_gold as f64 / self.predicted as f64
        }
    }

    pub fn recall(&self) -> f64 {
        if self.gold == 0 {
            f64::NAN
        } else {
            self.predicted_gold as f64 / self.gold as f64
        }
    }

    pub fn f1(&self) -> f64 {
        if self.predicted + self.gold == 0 {
            f64::NAN
        } else {
            2.0 * self.predicted_gold as f64 / (self.predicted + self.gold) as f64
        }
    }
}

/// Accumulated test results.
#[derive(Debug, Clone)]
pub struct Meter {
    pub examples: u64,
    pub all: Counts,
    pub per_label: Vec<Counts>,
}

impl Meter {
    pub fn new(nlabels: usize) -> Self {
        Self {
            examples: 0,
            all: Counts::default(),
            per_label: vec![Counts::default(); nlabels],
        }
    }

    /// Log one example's gold labels and predictions (`Meter::log`).
    pub fn log(&mut self, gold: &[i32], predictions: &[(f32, i32)]) {
        self.examples += 1;
        self.all.gold += gold.len() as u64;
        self.all.predicted += predictions.len() as u64;
        for &(_, p) in predictions {
            let c = &mut self.per_label[p as usize];
            c.predicted += 1;
            if gold.contains(&p) {
                c.predicted_gold += 1;
                self.all.predicted_gold += 1;
            }
        }
        for &g in gold {
            self.per_label[g as usize].gold += 1;
        }
    }

    /// `N`, `P@k`, `R@k` lines exactly as `fasttext test` prints them (3 significant digits).
    pub fn general_metrics(&self, k: usize) -> String {
        format!(
            "N\t{}\nP@{k}\t{}\nR@{k}\t{}\n",
            self.examples,
            fmt_g(self.all.precision(), 3),
            fmt_g(self.all.recall(), 3)
        )
    }
}

/// Format like C++ `ostream << setprecision(p)` in default float notation (`%g`).
pub fn fmt_g(x: f64, p: usize) -> String {
    if x.is_nan() {
        return "nan".into();
    }
    if x.is_infinite() {
        return if x > 0.0 { "inf".into() } else { "-inf".into() };
    }
    if x == 0.0 {
        return "0".into();
    }
    let p = p.max(1);
    let exp = format!("{:.*e}", p - 1, x);
    let (mantissa, e) = exp.split_once('e').unwrap_or((&exp, "0"));
    let e: i32 = e.parse().unwrap_or(0);
    let strip = |s: &str| -> String {
        if s.contains('.') {
            s.trim_end_matches('0').trim_end_matches('.').to_string()
        } else {
            s.to_string()
        }
    };
    if e < -4 || e >= p as i32 {
        let sign = if e < 0 { '-' } else { '+' };
        format!("{}e{sign}{:02}", strip(mantissa), e.abs())
    } else {
        let decimals = (p as i32 - 1 - e).max(0) as usize;
        strip(&format!("{x:.decimals$}"))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn fmt_g_matches_cpp_default_notation() {
        assert_eq!(fmt_g(0.96666, 3), "0.967");
        assert_eq!(fmt_g(1.0, 3), "1");
        assert_eq!(fmt_g(0.5, 3), "0.5");
        assert_eq!(fmt_g(0.00012345, 3), "0.000123");
        assert_eq!(fmt_g(0.000012345, 3), "1.23e-05");
        assert_eq!(fmt_g(f64::NAN, 3), "nan");
        assert_eq!(fmt_g(0.99999, 6), "0.99999");
        assert_eq!(fmt_g(1.00001, 6), "1.00001");
    }

    #[test]
    fn meter_counts_precision_and_recall() {
        let mut m = Meter::new(2);
        m.log(&[0], &[(-0.1, 0)]);
        m.log(&[1], &[(-0.2, 0)]);
        m.log(&[0, 1], &[(-0.3, 1)]);
        assert_eq!(m.examples, 3);
        assert!((m.all.precision() - 2.0 / 3.0).abs() < 1e-12);
        assert!((m.all.recall() - 0.5).abs() < 1e-12);
        assert_eq!(m.general_metrics(1), "N\t3\nP@1\t0.667\nR@1\t0.5\n");
        assert!((m.per_label[0].f1() - 2.0 / 4.0).abs() < 1e-12);
    }
}
