//! Evaluation of scalar expressions: exact (big rationals) and approximate (complex floats
//! with a running error bound).
//!
//! Exact evaluation is tried first: integers, fractions, decimals, integer powers, factorials
//! and perfect roots stay exact, so `1/2004!` and `1/2006!` or `10^{-20}` and `10^{-21}` are told
//! apart with no tolerance at all. Everything else (π, e, trig, logs, irrational roots, symbols
//! assigned sample values) is evaluated in complex floating point, and each value carries an
//! estimate of its absolute rounding error, propagated with the usual first-order bounds
//! (Higham, *Accuracy and Stability of Numerical Algorithms*, ch. 2-3). Two values then count
//! as equal when they differ by less than a few times their combined error bounds, which is
//! far tighter than a fixed tolerance yet forgives `\sin\pi = 1.2e-16`.
//!
//! Both evaluators charge every operation to a [`Budget`]; a big-integer operation costs in
//! proportion to its size. When the budget is spent, evaluation gives up (returns `None`)
//! instead of running on: `10^{10^{10^{10}}}` costs a few steps, not forever.

use crate::node::{Const, Func, Node};
use num_bigint::BigInt;
use num_complex::Complex64;
use num_rational::BigRational;
use num_traits::{One, Signed, ToPrimitive, Zero};

/// Largest exact number kept, in bits of numerator plus denominator.
pub const MAX_BITS: u64 = 1 << 18;
/// Largest factorial computed exactly.
pub const MAX_FACTORIAL: u64 = 20_000;

/// An operation budget shared by all evaluations of one comparison.
#[derive(Debug, Clone)]
pub struct Budget {
    left: u64,
}

impl Budget {
    pub fn new(ops: u64) -> Budget {
        Budget { left: ops }
    }

    /// Charges `cost`; false when the budget is spent.
    pub fn charge(&mut self, cost: u64) -> bool {
        if self.left < cost {
            self.left = 0;
            false
        } else {
            self.left -= cost;
            true
        }
    }

    pub fn spent(&self) -> bool {
        self.left == 0
    }
}

fn bits(r: &BigRational) -> u64 {
    r.numer().bits() + r.denom().bits()
}

/// Evaluates `node` exactly, or `None` when it is not a rational number we can compute.
pub fn exact(node: &Node, budget: &mut Budget) -> Option<BigRational> {
    if !budget.charge(1) {
        return None;
    }
    let out = match node {
        Node::Num { value, .. } => value.clone(),
        Node::Add(v) => {
            let mut acc = BigRational::zero();
            for n in v {
                let x = exact(n, budget)?;
                if !budget.charge(1 + (bits(&acc) + bits(&x)) / 64) {
                    return None;
                }
                acc += x;
            }
            acc
        }
        Node::Mul(v) => {
            let mut acc = BigRational::one();
            for n in v {
                let x = exact(n, budget)?;
                if bits(&acc) + bits(&x) > MAX_BITS
                    || !budget.charge(1 + (bits(&acc) * bits(&x)) / 4096)
                {
                    return None;
                }
                acc *= x;
            }
            acc
        }
        Node::Div(a, b) => {
            let a = exact(a, budget)?;
            let b = exact(b, budget)?;
            if b.is_zero() || bits(&a) + bits(&b) > MAX_BITS {
                return None;
            }
            if !budget.charge(1 + (bits(&a) * bits(&b)) / 4096) {
                return None;
            }
            a / b
        }
        Node::Neg(a) => -exact(a, budget)?,
        Node::Pow(base, exp) => {
            let b = exact(base, budget)?;
            let e = exact(exp, budget)?;
            pow_exact(&b, &e, budget)?
        }
        Node::Root(index, rad) => {
            let n = exact(index, budget)?;
            let r = exact(rad, budget)?;
            if n.is_zero() {
                return None;
            }
            pow_exact(&r, &n.recip(), budget)?
        }
        Node::Func(Func::Sqrt, a) => {
            let r = exact(a, budget)?;
            pow_exact(&r, &BigRational::new(1.into(), 2.into()), budget)?
        }
        Node::Func(Func::Abs, a) => exact(a, budget)?.abs(),
        Node::Func(Func::Floor, a) => exact(a, budget)?.floor(),
        Node::Func(Func::Ceil, a) => exact(a, budget)?.ceil(),
        Node::Factorial(a) => {
            let n = exact(a, budget)?;
            if !n.is_integer() || n.is_negative() {
                return None;
            }
            let n = n.to_integer().to_u64()?;
            if n > MAX_FACTORIAL {
                return None;
            }
            let mut acc = BigInt::one();
            for k in 2..=n {
                if !budget.charge(1 + acc.bits() / 64) {
                    return None;
                }
                acc *= k;
            }
            BigRational::from_integer(acc)
        }
        _ => return None,
    };
    Some(out)
}

/// `b^e` exactly, for integer `e` or `e = p/q` when `b` is a perfect `q`-th power.
fn pow_exact(b: &BigRational, e: &BigRational, budget: &mut Budget) -> Option<BigRational> {
    let q = e.denom().to_u32()?;
    if q > 64 {
        return None;
    }
    let base = if q == 1 {
        b.clone()
    } else {
        if b.is_negative() && q % 2 == 0 {
            return None;
        }
        let neg = b.is_negative();
        let root = |x: &BigInt| -> Option<BigInt> {
            let r = x.nth_root(q);
            (num_traits::pow(r.clone(), q as usize) == *x).then_some(r)
        };
        if !budget.charge(1 + bits(b) * u64::from(q) / 64) {
            return None;
        }
        let n = root(&b.numer().abs())?;
        let d = root(b.denom())?;
        let r = BigRational::new(n, d);
        if neg { -r } else { r }
    };
    let p = e.numer().to_i64()?;
    if p == 0 {
        return Some(BigRational::one());
    }
    if base.is_zero() {
        return (p > 0).then(BigRational::zero);
    }
    let mag = p.unsigned_abs();
    let base_bits = bits(&base).max(1);
    // |base| = 1 (± 1) has 2 bits but never grows.
    let grows = !(base.numer().abs().is_one() && base.denom().is_one());
    if grows && base_bits.saturating_mul(mag) > MAX_BITS {
        return None;
    }
    if !budget.charge(1 + base_bits.saturating_mul(mag) / 64) {
        return None;
    }
    let mag = usize::try_from(mag).ok()?;
    let r = num_traits::pow(base, mag);
    Some(if p < 0 { r.recip() } else { r })
}

/// A complex value and a bound on its absolute error.
#[derive(Debug, Clone, Copy)]
pub struct Approx {
    pub z: Complex64,
    pub err: f64,
}

const EPS: f64 = f64::EPSILON;

impl Approx {
    fn new(z: Complex64, err: f64) -> Approx {
        Approx {
            z,
            err: err + EPS * z.norm(),
        }
    }

    fn real(x: f64) -> Approx {
        Approx::new(Complex64::new(x, 0.0), 0.0)
    }

    pub fn is_finite(&self) -> bool {
        self.z.re.is_finite() && self.z.im.is_finite() && self.err.is_finite()
    }
}

/// Converts an exact rational to f64 without overflowing on huge numerators and denominators.
pub fn rational_to_f64(r: &BigRational) -> f64 {
    r.to_f64().unwrap_or(f64::NAN)
}

/// Evaluates `node` approximately with symbols taken from `env`.
pub fn approx(node: &Node, env: &[(String, f64)], budget: &mut Budget) -> Option<Approx> {
    if !budget.charge(1) {
        return None;
    }
    let v = match node {
        Node::Num { value, .. } => Approx::real(rational_to_f64(value)),
        Node::Const(Const::Pi) => Approx::real(std::f64::consts::PI),
        Node::Const(Const::E) => Approx::real(std::f64::consts::E),
        Node::Const(Const::I) => Approx::new(Complex64::new(0.0, 1.0), 0.0),
        Node::Const(Const::Inf) => return None,
        Node::Var(name) | Node::Word(name) => {
            let x = env.iter().find(|(n, _)| n == name)?.1;
            Approx::real(x)
        }
        Node::Add(v) => {
            let mut z = Complex64::new(0.0, 0.0);
            let mut err = 0.0;
            for n in v {
                let a = approx(n, env, budget)?;
                z += a.z;
                err += a.err + EPS * z.norm();
            }
            Approx::new(z, err)
        }
        Node::Mul(v) => {
            let mut acc = Approx::real(1.0);
            for n in v {
                let b = approx(n, env, budget)?;
                let z = acc.z * b.z;
                acc = Approx::new(z, acc.z.norm() * b.err + b.z.norm() * acc.err);
            }
            acc
        }
        Node::Div(a, b) => {
            let a = approx(a, env, budget)?;
            let b = approx(b, env, budget)?;
            let bn = b.z.norm();
            if bn == 0.0 || bn <= b.err {
                return None;
            }
            let z = a.z / b.z;
            Approx::new(z, (a.err + z.norm() * b.err) / (bn - b.err))
        }
        Node::Neg(a) => {
            let a = approx(a, env, budget)?;
            Approx {
                z: -a.z,
                err: a.err,
            }
        }
        Node::Pow(base, exp) => {
            let b = approx(base, env, budget)?;
            let mut sub = Budget::new(64);
            let int_exp = exact(exp, &mut sub)
                .filter(|e| e.is_integer())
                .and_then(|e| e.to_integer().to_i32())
                .filter(|e| e.unsigned_abs() <= 4096);
            match int_exp {
                Some(k) => {
                    let z = b.z.powi(k);
                    let bn = b.z.norm();
                    if bn == 0.0 && k < 0 {
                        return None;
                    }
                    // d(b^k) = k b^(k-1) db
                    let deriv = if bn == 0.0 {
                        0.0
                    } else {
                        f64::from(k).abs() * z.norm() / bn
                    };
                    Approx::new(
                        z,
                        deriv * b.err + EPS * f64::from(k.unsigned_abs()) * z.norm(),
                    )
                }
                None => {
                    // A negative real to a rational power with odd denominator is real
                    // (`(-8)^{2/3} = 4`), matching `\sqrt[3]{-8}^2` and school conventions.
                    let mut sub = Budget::new(64);
                    let odd_rational = exact(exp, &mut sub)
                        .filter(|e| e.denom().to_u64().is_some_and(|q| q % 2 == 1 && q <= 1001));
                    match odd_rational {
                        Some(e) if b.z.im == 0.0 && b.z.re < 0.0 => {
                            let p = e.numer().to_i64().unwrap_or(0);
                            let ef = rational_to_f64(&e);
                            let mag = (-b.z.re).powf(ef);
                            let x = if p % 2 == 0 { mag } else { -mag };
                            let d = ef.abs() * mag / (-b.z.re);
                            Approx::new(Complex64::new(x, 0.0), d * b.err + EPS * mag * 4.0)
                        }
                        _ => {
                            let e = approx(exp, env, budget)?;
                            pow_general(b, e)?
                        }
                    }
                }
            }
        }
        Node::Root(index, rad) => {
            let n = approx(index, env, budget)?;
            let r = approx(rad, env, budget)?;
            if n.z.norm() == 0.0 {
                return None;
            }
            // Odd roots of negative reals are real (`\sqrt[3]{-8} = -2`), as in school math.
            let is_odd_int = n.z.im == 0.0 && n.z.re.fract() == 0.0 && (n.z.re as i64) % 2 != 0;
            if is_odd_int && r.z.im == 0.0 && r.z.re < 0.0 {
                let x = -(-r.z.re).powf(1.0 / n.z.re);
                let d = if x == 0.0 {
                    0.0
                } else {
                    x.abs() / (n.z.re.abs() * r.z.re.abs())
                };
                Approx::new(Complex64::new(x, 0.0), d * r.err)
            } else {
                let inv = Approx::new(Complex64::new(1.0, 0.0) / n.z, n.err / n.z.norm_sqr());
                pow_general(r, inv)?
            }
        }
        Node::Func(f, a) => {
            let a = approx(a, env, budget)?;
            func(*f, a)?
        }
        Node::Log(base, arg) => {
            let b = approx(base, env, budget)?;
            let x = approx(arg, env, budget)?;
            let lb = func(Func::Ln, b)?;
            let lx = func(Func::Ln, x)?;
            let ln = lb.z.norm();
            if ln == 0.0 || ln <= lb.err {
                return None;
            }
            let z = lx.z / lb.z;
            Approx::new(z, (lx.err + z.norm() * lb.err) / (ln - lb.err))
        }
        Node::Factorial(a) => {
            let a = approx(a, env, budget)?;
            let n = a.z.re;
            if a.z.im != 0.0 || n < 0.0 || n.fract() != 0.0 || n > 170.0 {
                return None;
            }
            let mut acc = 1.0f64;
            for k in 2..=(n as u32) {
                acc *= f64::from(k);
            }
            Approx::new(Complex64::new(acc, 0.0), EPS * n * acc)
        }
        _ => return None,
    };
    v.is_finite().then_some(v)
}

fn pow_general(b: Approx, e: Approx) -> Option<Approx> {
    let bn = b.z.norm();
    if bn == 0.0 {
        return (e.z.re > 0.0).then(|| Approx::new(Complex64::new(0.0, 0.0), b.err));
    }
    let ln_b = b.z.ln();
    let z = (e.z * ln_b).exp();
    // d(b^e) = b^e (e/b db + ln b de)
    let err = z.norm() * (e.z.norm() * b.err / bn + ln_b.norm() * e.err)
        + EPS * z.norm() * (1.0 + (e.z * ln_b).norm());
    Some(Approx::new(z, err))
}

fn func(f: Func, a: Approx) -> Option<Approx> {
    let x = a.z;
    let one = Complex64::new(1.0, 0.0);
    // (value, |derivative|) — the error bound is |f'(x)| err(x) plus rounding.
    let (z, d) = match f {
        Func::Sin => (x.sin(), x.cos().norm()),
        Func::Cos => (x.cos(), x.sin().norm()),
        Func::Tan => {
            let c = x.cos();
            if c.norm() < 1e-300 {
                return None;
            }
            (x.tan(), (one / (c * c)).norm())
        }
        Func::Sec => {
            let c = x.cos();
            if c.norm() < 1e-300 {
                return None;
            }
            (one / c, (x.tan() / c).norm())
        }
        Func::Csc => {
            let s = x.sin();
            if s.norm() < 1e-300 {
                return None;
            }
            (one / s, (x.cos() / (s * s)).norm())
        }
        Func::Cot => {
            let s = x.sin();
            if s.norm() < 1e-300 {
                return None;
            }
            (x.cos() / s, (one / (s * s)).norm())
        }
        Func::Asin => (x.asin(), (one / (one - x * x).sqrt()).norm()),
        Func::Acos => (x.acos(), (one / (one - x * x).sqrt()).norm()),
        Func::Atan => (x.atan(), (one / (one + x * x)).norm()),
        Func::Sinh => (x.sinh(), x.cosh().norm()),
        Func::Cosh => (x.cosh(), x.sinh().norm()),
        Func::Tanh => (x.tanh(), (one / (x.cosh() * x.cosh())).norm()),
        Func::Ln | Func::Log10 => {
            if x.norm() == 0.0 {
                return None;
            }
            let ln = x.ln();
            if f == Func::Ln {
                (ln, 1.0 / x.norm())
            } else {
                let l10 = std::f64::consts::LN_10;
                (ln / l10, 1.0 / (x.norm() * l10))
            }
        }
        Func::Exp => {
            let z = x.exp();
            (z, z.norm())
        }
        Func::Sqrt => {
            let z = x.sqrt();
            if z.norm() == 0.0 {
                return Some(Approx::new(z, a.err.sqrt()));
            }
            (z, 0.5 / z.norm())
        }
        Func::Abs => (Complex64::new(x.norm(), 0.0), 1.0),
        Func::Floor | Func::Ceil => {
            if x.im != 0.0 {
                return None;
            }
            let r = if f == Func::Floor {
                x.re.floor()
            } else {
                x.re.ceil()
            };
            // Rounding near an integer boundary is unreliable.
            if (x.re - x.re.round()).abs() <= a.err * 4.0 && x.re.fract() != 0.0 {
                return None;
            }
            return Some(Approx::new(Complex64::new(r, 0.0), 0.0));
        }
    };
    if !d.is_finite() {
        return None;
    }
    Some(Approx::new(z, d * a.err + 4.0 * EPS * z.norm()))
}

/// True when two approximate values agree within their error bounds (or `rel`, if larger).
pub fn close(a: &Approx, b: &Approx, rel: f64) -> bool {
    let diff = (a.z - b.z).norm();
    let scale = a.z.norm().max(b.z.norm());
    diff <= (8.0 * (a.err + b.err)).max(rel * scale)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::parse::parse;

    fn ex(s: &str) -> Option<BigRational> {
        let n = parse(s).ok()?;
        exact(&n, &mut Budget::new(1_000_000))
    }

    fn ap(s: &str) -> Option<Approx> {
        let n = parse(s).ok()?;
        approx(&n, &[], &mut Budget::new(100_000))
    }

    #[test]
    fn exact_arithmetic() {
        assert_eq!(
            ex("\\frac{1}{2}+\\frac{1}{3}"),
            Some(BigRational::new(5.into(), 6.into()))
        );
        assert_eq!(ex("2^{10}"), Some(BigRational::from_integer(1024.into())));
        assert_eq!(ex("\\sqrt{16}"), Some(BigRational::from_integer(4.into())));
        assert_eq!(
            ex("\\sqrt[3]{-8}"),
            Some(BigRational::from_integer((-2).into()))
        );
        assert_eq!(ex("\\sqrt{2}"), None);
        assert_eq!(ex("5!"), Some(BigRational::from_integer(120.into())));
        assert_ne!(ex("\\frac{1}{2004!}"), ex("\\frac{1}{2006!}"));
        assert_ne!(ex("10^{-20}"), ex("10^{-21}"));
    }

    #[test]
    fn towers_give_up_quickly() {
        let start = std::time::Instant::now();
        assert_eq!(ex("10^{10^{10^{10}}}"), None);
        assert!(ap("10^{10^{10^{10}}}").is_none());
        assert!(start.elapsed().as_millis() < 100);
    }

    #[test]
    fn sin_pi_is_close_to_zero_but_tiny_values_are_not() {
        let (Some(a), Some(z)) = (ap("\\sin(\\pi)"), ap("0")) else {
            panic!("evaluation failed");
        };
        assert!(close(&a, &z, 1e-12));
        let (Some(t), Some(z)) = (ap("e^{-50}"), ap("0")) else {
            panic!("evaluation failed");
        };
        assert!(!close(&t, &z, 1e-12));
        let (Some(a), Some(b)) = (ap("1-1/e"), ap("1+1/e")) else {
            panic!("evaluation failed");
        };
        assert!(!close(&a, &b, 1e-12));
    }

    #[test]
    fn budget_stops_evaluation() {
        let n = parse("1000!").unwrap_or(Node::int(0));
        assert!(exact(&n, &mut Budget::new(10)).is_none());
    }
}
