//! Deciding whether two parsed answers are mathematically the same.
//!
//! Order of checks, cheapest and most certain first:
//! 1. Structure: tuples and intervals are ordered, sets and answer lists unordered, matrices
//!    cell by cell, `x = 2` against `2` compares the value, `x \le 3` against `(-\infty, 3]`
//!    compares the sets of reals they describe.
//! 2. Scalars without symbols: exact big-rational arithmetic ([`crate::eval::exact`]).
//! 3. Otherwise numeric evaluation with error bounds; expressions with symbols are evaluated
//!    at seeded pseudo-random points (Schwartz–Zippel style identity testing: two different
//!    analytic expressions agree at a random real point with probability zero), so
//!    `\frac{x+2}{7}` equals `\frac{x}{7}+\frac{2}{7}` without a computer-algebra system.
//!
//! Every comparison runs under one [`Budget`], so the total work is bounded.

use reasonlab_core::rng::SplitMix64;

use crate::eval::{Approx, Budget, approx, close, exact, rational_to_f64};
use crate::node::{Const, Node, RelOp};

/// Relative tolerance for values that went through floating point.
/// `1 - 1/e` and `1 + 1/e` differ by 0.7; any two distinct closed forms a grader meets differ by
/// far more than 1e-10 relative, while rounding error stays near 1e-15.
const REL_TOL: f64 = 1e-10;
/// Relative tolerance when one side is a rounded decimal (`3.1416` for `\pi`); the value must
/// also be correctly rounded at the digits written. The Qwen2.5-Math grader uses `rel_tol=1e-4`.
const ROUNDING_REL_TOL: f64 = 1e-4;
/// Most `\pm` variants expanded (2^4).
const MAX_PM: usize = 4;
/// Sample points tried for expressions with symbols.
const SAMPLE_TRIES: usize = 12;
/// Agreeing points needed to accept.
const SAMPLES_NEEDED: usize = 5;
/// Fixed seed: verification must be deterministic.
const SEED: u64 = 0x5EED_2025_A11C_E5ED;

/// Compares two answers under `budget`.
pub fn equivalent(gold: &Node, pred: &Node, budget: &mut Budget) -> bool {
    let g = canon(gold);
    let p = canon(pred);
    eq(&g, &p, budget)
}

/// Normalises the top of an answer: single-item lists unwrap, `\pm` expands to a list, nested
/// lists flatten.
fn canon(n: &Node) -> Node {
    match n {
        Node::List(items) | Node::Set(items) => {
            let mut flat = Vec::new();
            for it in items {
                match canon(it) {
                    Node::List(inner) => flat.extend(inner),
                    other => flat.push(other),
                }
            }
            if matches!(n, Node::Set(_)) {
                return if flat.is_empty() {
                    Node::EmptySet
                } else {
                    Node::Set(flat)
                };
            }
            if flat.len() == 1 {
                flat.pop().unwrap_or(Node::EmptySet)
            } else {
                Node::List(flat)
            }
        }
        other if other.is_scalar() && other.any(&|m| matches!(m, Node::PlusMinus(..))) => {
            let mut v = expand_pm(other, MAX_PM);
            if v.len() == 1 {
                v.pop().unwrap_or(Node::EmptySet)
            } else {
                Node::List(v)
            }
        }
        other => other.clone(),
    }
}

/// All sign choices of the `\pm` in `n` (at most `2^limit`).
fn expand_pm(n: &Node, limit: usize) -> Vec<Node> {
    fn walk(n: &Node, plus: &mut dyn FnMut() -> bool) -> Node {
        match n {
            Node::PlusMinus(a, b) => {
                let a2 = walk(a, plus);
                let b2 = walk(b, plus);
                if plus() {
                    Node::Add(vec![a2, b2])
                } else {
                    Node::Add(vec![a2, Node::Neg(Box::new(b2))])
                }
            }
            Node::Add(v) => Node::Add(v.iter().map(|c| walk(c, plus)).collect()),
            Node::Mul(v) => Node::Mul(v.iter().map(|c| walk(c, plus)).collect()),
            Node::Div(a, b) => Node::Div(Box::new(walk(a, plus)), Box::new(walk(b, plus))),
            Node::Pow(a, b) => Node::Pow(Box::new(walk(a, plus)), Box::new(walk(b, plus))),
            Node::Root(a, b) => Node::Root(Box::new(walk(a, plus)), Box::new(walk(b, plus))),
            Node::Log(a, b) => Node::Log(Box::new(walk(a, plus)), Box::new(walk(b, plus))),
            Node::Neg(a) => Node::Neg(Box::new(walk(a, plus))),
            Node::Func(f, a) => Node::Func(*f, Box::new(walk(a, plus))),
            Node::Factorial(a) => Node::Factorial(Box::new(walk(a, plus))),
            other => other.clone(),
        }
    }
    let mut count = 0usize;
    fn count_pm(n: &Node, c: &mut usize) {
        if n.any(&|m| matches!(m, Node::PlusMinus(..))) {
            match n {
                Node::PlusMinus(a, b) => {
                    *c += 1;
                    count_pm(a, c);
                    count_pm(b, c);
                }
                Node::Add(v) | Node::Mul(v) => v.iter().for_each(|x| count_pm(x, c)),
                Node::Div(a, b) | Node::Pow(a, b) | Node::Root(a, b) | Node::Log(a, b) => {
                    count_pm(a, c);
                    count_pm(b, c);
                }
                Node::Neg(a) | Node::Func(_, a) | Node::Factorial(a) => count_pm(a, c),
                _ => {}
            }
        }
    }
    count_pm(n, &mut count);
    let k = count.min(limit);
    let mut out = Vec::with_capacity(1 << k);
    for mask in 0..(1usize << k) {
        let mut i = 0usize;
        let mut plus = || {
            let bit = i < k && (mask >> i) & 1 == 1;
            i += 1;
            !bit
        };
        out.push(walk(n, &mut plus));
    }
    out
}

/// True when `n` names something rather than computing it: symbols without numbers, such as
/// `x`, `a_3`, `f(x)`, `|AB|`, `(p, q)`, `\frac{NO}{BO}`, `A:B`.
fn is_name(n: &Node) -> bool {
    let has_symbol = n.any(&|m| matches!(m, Node::Var(_) | Node::Word(_)));
    let has_number = n.any(&|m| {
        matches!(
            m,
            Node::Num { .. } | Node::Relation(..) | Node::Interval { .. } | Node::Set(_)
        )
    });
    has_symbol && !has_number
}

/// The value an equation gives to a name: `x = 5` → `5`; `x = 1+1 = 2` → `2`;
/// `x = 1/3 \approx 0.33` → `1/3`; `x \in [0, 1]` → `[0, 1]`.
fn value_of(n: &Node) -> Option<&Node> {
    let Node::Relation(first, rest) = n else {
        return None;
    };
    if !is_name(first) {
        return None;
    }
    if rest.len() == 1 && rest[0].0 == RelOp::In {
        return Some(&rest[0].1);
    }
    if !rest
        .iter()
        .all(|(op, _)| matches!(op, RelOp::Eq | RelOp::Approx))
    {
        return None;
    }
    rest.iter()
        .rev()
        .find(|(op, _)| *op == RelOp::Eq)
        .or_else(|| rest.first())
        .map(|(_, v)| v)
}

fn eq(g: &Node, p: &Node, b: &mut Budget) -> bool {
    if b.spent() {
        return false;
    }
    if !b.charge(1) {
        return false;
    }
    match (g, p) {
        (Node::Relation(..), Node::Relation(..)) => return relations(g, p, b),
        (Node::Relation(..), _) => {
            if let Some(v) = value_of(g) {
                return eq(&canon(v), p, b);
            }
        }
        (_, Node::Relation(first, rest)) => {
            if let Some(v) = value_of(p) {
                return eq(g, &canon(v), b);
            }
            // A predicted computation `1/2 + 1/3 = 5/6`: its final number is the answer.
            let all_eq = rest.iter().all(|(op, _)| *op == RelOp::Eq);
            if let (true, Some((_, last))) = (all_eq, rest.last()) {
                let mut vars = Vec::new();
                last.vars(&mut vars);
                if vars.is_empty() && !is_name(first) {
                    return eq(g, &canon(last), b);
                }
            }
        }
        _ => {}
    }
    // Sets of real numbers: intervals, unions, inequalities.
    if (is_realset_like(g) || is_realset_like(p))
        && let (Some(rg), Some(rp)) = (realset(g), realset(p))
    {
        return realsets(&rg, &rp, b);
    }
    match (g, p) {
        (Node::Tuple(a), Node::Tuple(c)) | (Node::Ratio(a), Node::Ratio(c)) => ordered(a, c, b),
        // A bare list against a tuple: the tuple without its parentheses, so order matters.
        (Node::Tuple(a), Node::List(c)) | (Node::List(a), Node::Tuple(c)) => ordered(a, c, b),
        (Node::Set(a) | Node::List(a), Node::Set(c) | Node::List(c)) => unordered(a, c, b),
        (Node::Set(a) | Node::List(a), other) if a.len() == 1 => eq(&a[0], other, b),
        (other, Node::Set(c) | Node::List(c)) if c.len() == 1 => eq(other, &c[0], b),
        (Node::Matrix(a), Node::Matrix(c)) => {
            a.len() == c.len() && a.iter().zip(c).all(|(ra, rc)| ordered(ra, rc, b))
        }
        (Node::Matrix(m), Node::Tuple(t) | Node::List(t))
        | (Node::Tuple(t) | Node::List(t), Node::Matrix(m)) => {
            let is_vector = m.iter().all(|r| r.len() == 1) || m.len() == 1;
            let cells: Vec<Node> = m.iter().flatten().cloned().collect();
            is_vector && ordered(&cells, t, b)
        }
        (Node::EmptySet, Node::EmptySet) => true,
        (Node::Choice(a), Node::Choice(c)) => a == c,
        (Node::Choice(a), other) | (other, Node::Choice(a)) => letter_of(other) == Some(*a),
        (Node::Text(a), Node::Text(c)) => a == c,
        (Node::Text(_), _) | (_, Node::Text(_)) => false,
        _ if g.is_scalar() && p.is_scalar() => scalars(g, p, b),
        _ => g == p,
    }
}

fn letter_of(n: &Node) -> Option<char> {
    match n {
        Node::Var(v) if v.len() == 1 => v.chars().next().map(|c| c.to_ascii_uppercase()),
        Node::Const(Const::E) => Some('E'),
        Node::Const(Const::I) => Some('I'),
        _ => None,
    }
}

fn ordered(a: &[Node], c: &[Node], b: &mut Budget) -> bool {
    a.len() == c.len() && a.iter().zip(c).all(|(x, y)| eq(&canon(x), &canon(y), b))
}

/// Multiset matching; greedy is enough because equivalence is transitive for our values.
fn unordered(a: &[Node], c: &[Node], b: &mut Budget) -> bool {
    // Solution sets: a repeated element (`(3,17,3,7)` listed twice) counts once.
    let dedup = |v: &[Node]| {
        let mut out: Vec<Node> = Vec::with_capacity(v.len());
        for n in v {
            let n = canon(n);
            if !out.contains(&n) {
                out.push(n);
            }
        }
        out
    };
    let (a, c) = (dedup(a), dedup(c));
    if a.len() != c.len() {
        return false;
    }
    let mut used = vec![false; c.len()];
    for x in &a {
        let mut found = false;
        for (j, y) in c.iter().enumerate() {
            if !used[j] && eq(x, y, b) {
                used[j] = true;
                found = true;
                break;
            }
        }
        if !found {
            return false;
        }
    }
    true
}

fn relations(g: &Node, p: &Node, b: &mut Budget) -> bool {
    let (Node::Relation(gf, gr), Node::Relation(pf, pr)) = (g, p) else {
        return false;
    };
    // Named values on both sides: same name, same value (`x = 2` vs `x = 1 + 1`).
    if let (Some(gv), Some(pv)) = (value_of(g), value_of(p))
        && gf == pf
    {
        return eq(&canon(gv), &canon(pv), b);
    }
    let single_eq = |r: &[(RelOp, Node)]| r.len() == 1 && r[0].0 == RelOp::Eq;
    if single_eq(gr) && single_eq(pr) {
        return equations(gf, &gr[0].1, pf, &pr[0].1, b);
    }
    if let (Some(rg), Some(rp)) = (realset(g), realset(p)) {
        return realsets(&rg, &rp, b);
    }
    // General chains: same operators (after orienting both the same way), equal sides.
    let (gs, gops) = oriented(gf, gr);
    let (ps, pops) = oriented(pf, pr);
    gops == pops && ordered(&gs, &ps, b)
}

fn oriented(first: &Node, rest: &[(RelOp, Node)]) -> (Vec<Node>, Vec<RelOp>) {
    let mut sides: Vec<Node> = std::iter::once(first.clone())
        .chain(rest.iter().map(|(_, n)| n.clone()))
        .collect();
    let mut ops: Vec<RelOp> = rest.iter().map(|(op, _)| *op).collect();
    if matches!(ops.first(), Some(RelOp::Gt | RelOp::Ge)) {
        sides.reverse();
        ops.reverse();
        ops.iter_mut().for_each(|o| *o = o.flipped());
    }
    (sides, ops)
}

/// `L1 = R1` and `L2 = R2` are the same equation when `L2 - R2 = c (L1 - R1)` for a constant
/// `c ≠ 0`, checked at sample points.
fn equations(gl: &Node, gr: &Node, pl: &Node, pr: &Node, b: &mut Budget) -> bool {
    if !(gl.is_scalar() && gr.is_scalar() && pl.is_scalar() && pr.is_scalar()) {
        return gl == pl && gr == pr;
    }
    let fg = Node::Add(vec![gl.clone(), Node::Neg(Box::new(gr.clone()))]);
    let fp = Node::Add(vec![pl.clone(), Node::Neg(Box::new(pr.clone()))]);
    let mut vars = Vec::new();
    fg.vars(&mut vars);
    fp.vars(&mut vars);
    vars.sort();
    vars.dedup();
    if vars.is_empty() {
        // Two numeric equalities (`7 = 11`): compare as written.
        return scalars(gl, pl, b) && scalars(gr, pr, b);
    }
    let mut rng = SplitMix64::from_state(SEED);
    let mut ratio: Option<Approx> = None;
    let mut valid = 0;
    for _ in 0..SAMPLE_TRIES * 2 {
        let env = sample_env(&vars, &mut rng);
        let (Some(a), Some(c)) = (approx(&fg, &env, b), approx(&fp, &env, b)) else {
            if b.spent() {
                return false;
            }
            continue;
        };
        let zero = Approx {
            z: num_complex::Complex64::new(0.0, 0.0),
            err: 0.0,
        };
        let a_zero = close(&a, &zero, 0.0);
        let c_zero = close(&c, &zero, 0.0);
        if a_zero || c_zero {
            if a_zero != c_zero {
                return false;
            }
            continue;
        }
        let r = Approx {
            z: c.z / a.z,
            err: (c.err + (c.z / a.z).norm() * a.err) / a.z.norm(),
        };
        match &ratio {
            None => ratio = Some(r),
            Some(r0) => {
                if !close(r0, &r, 1e-9) {
                    return false;
                }
            }
        }
        valid += 1;
        if valid >= SAMPLES_NEEDED {
            return true;
        }
    }
    valid >= 2
}

fn is_realset_like(n: &Node) -> bool {
    match n {
        Node::Interval { .. } | Node::Union(_) => true,
        Node::Relation(_, rest) => rest.iter().all(|(op, _)| op.is_order() || *op == RelOp::Ne),
        _ => false,
    }
}

#[derive(Debug, Clone)]
enum Piece {
    Interval {
        lo: Node,
        hi: Node,
        lo_closed: bool,
        hi_closed: bool,
    },
    Point(Node),
}

fn neg_inf() -> Node {
    Node::Neg(Box::new(Node::Const(Const::Inf)))
}

fn pos_inf() -> Node {
    Node::Const(Const::Inf)
}

/// The set of reals an interval, union, inequality or two-element tuple describes.
fn realset(n: &Node) -> Option<Vec<Piece>> {
    match n {
        Node::Interval {
            lo,
            hi,
            lo_closed,
            hi_closed,
        } => Some(vec![Piece::Interval {
            lo: (**lo).clone(),
            hi: (**hi).clone(),
            lo_closed: *lo_closed,
            hi_closed: *hi_closed,
        }]),
        // `(a, b)` is an open interval when compared with one.
        Node::Tuple(v) if v.len() == 2 => Some(vec![Piece::Interval {
            lo: v[0].clone(),
            hi: v[1].clone(),
            lo_closed: false,
            hi_closed: false,
        }]),
        Node::Union(parts) => {
            let mut out = Vec::new();
            for p in parts {
                match p {
                    Node::Set(points) => out.extend(points.iter().cloned().map(Piece::Point)),
                    Node::Tuple(_) | Node::Interval { .. } => out.extend(realset(p)?),
                    _ => return None,
                }
            }
            Some(out)
        }
        Node::EmptySet => Some(Vec::new()),
        Node::Relation(first, rest) => {
            if rest.len() == 1 && rest[0].0 == RelOp::In && is_name(first) {
                return realset(&rest[0].1);
            }
            inequality(first, rest)
        }
        _ => None,
    }
}

/// `x < 3`, `3 \ge x`, `-2 \le x < 7`, `x \ne 1`, `-x > -1`, `0 < f(x) < 1` for a single
/// named quantity.
fn inequality(first: &Node, rest: &[(RelOp, Node)]) -> Option<Vec<Piece>> {
    let is_var = |n: &Node| matches!(n, Node::Var(_)) || (is_name(n) && n.is_scalar());
    // `-x > -1` is `x < 1`: negate every side and flip the operators.
    let negated = std::iter::once(first)
        .chain(rest.iter().map(|(_, n)| n))
        .any(|n| matches!(n, Node::Neg(inner) if is_var(inner)));
    let (first, rest): (Node, Vec<(RelOp, Node)>) = if negated {
        let neg = |n: &Node| match n {
            Node::Neg(inner) => (**inner).clone(),
            other => Node::Neg(Box::new(other.clone())),
        };
        (
            neg(first),
            rest.iter().map(|(op, n)| (op.flipped(), neg(n))).collect(),
        )
    } else {
        (first.clone(), rest.to_vec())
    };
    let (sides, ops) = oriented(&first, &rest);
    match (sides.as_slice(), ops.as_slice()) {
        ([x, c], [RelOp::Ne]) | ([c, x], [RelOp::Ne]) if is_var(x) && !c.any(&|m| is_var(m)) => {
            Some(vec![
                Piece::Interval {
                    lo: neg_inf(),
                    hi: c.clone(),
                    lo_closed: false,
                    hi_closed: false,
                },
                Piece::Interval {
                    lo: c.clone(),
                    hi: pos_inf(),
                    lo_closed: false,
                    hi_closed: false,
                },
            ])
        }
        // After orientation the operators are `<` or `\le`.
        ([x, c], [op]) if is_var(x) && !c.any(&|m| is_var(m)) && op.is_order() => {
            Some(vec![Piece::Interval {
                lo: neg_inf(),
                hi: c.clone(),
                lo_closed: false,
                hi_closed: *op == RelOp::Le,
            }])
        }
        ([c, x], [op]) if is_var(x) && !c.any(&|m| is_var(m)) && op.is_order() => {
            Some(vec![Piece::Interval {
                lo: c.clone(),
                hi: pos_inf(),
                lo_closed: *op == RelOp::Le,
                hi_closed: false,
            }])
        }
        ([a, x, c], [op1, op2])
            if is_var(x)
                && !a.any(&|m| is_var(m))
                && !c.any(&|m| is_var(m))
                && matches!(op1, RelOp::Lt | RelOp::Le)
                && matches!(op2, RelOp::Lt | RelOp::Le) =>
        {
            Some(vec![Piece::Interval {
                lo: a.clone(),
                hi: c.clone(),
                lo_closed: *op1 == RelOp::Le,
                hi_closed: *op2 == RelOp::Le,
            }])
        }
        _ => None,
    }
}

fn is_inf(n: &Node) -> bool {
    inf_sign(n).is_some()
}

fn inf_sign(n: &Node) -> Option<i8> {
    match n {
        Node::Const(Const::Inf) => Some(1),
        Node::Neg(a) => inf_sign(a).map(|s| -s),
        _ => None,
    }
}

fn realsets(a: &[Piece], c: &[Piece], b: &mut Budget) -> bool {
    if a.len() != c.len() {
        return false;
    }
    let mut used = vec![false; c.len()];
    for x in a {
        let mut found = false;
        for (j, y) in c.iter().enumerate() {
            if used[j] {
                continue;
            }
            let same = match (x, y) {
                (Piece::Point(p), Piece::Point(q)) => eq(&canon(p), &canon(q), b),
                (
                    Piece::Interval {
                        lo,
                        hi,
                        lo_closed,
                        hi_closed,
                    },
                    Piece::Interval {
                        lo: lo2,
                        hi: hi2,
                        lo_closed: lc2,
                        hi_closed: hc2,
                    },
                ) => {
                    // A closed bracket at an infinite end is a common slip; ignore it there.
                    (lo_closed == lc2 || is_inf(lo))
                        && (hi_closed == hc2 || is_inf(hi))
                        && eq(lo, lo2, b)
                        && eq(hi, hi2, b)
                }
                _ => false,
            };
            if same {
                used[j] = true;
                found = true;
                break;
            }
        }
        if !found {
            return false;
        }
    }
    true
}

/// A decimal literal (possibly negated) and its number of decimal places.
fn decimal_literal(n: &Node) -> Option<(f64, u32)> {
    match n {
        Node::Num {
            value,
            decimals: Some(d),
        } => Some((rational_to_f64(value), *d)),
        Node::Neg(a) => decimal_literal(a).map(|(v, d)| (-v, d)),
        _ => None,
    }
}

/// `dec` (written with `places` decimals) is `other` correctly rounded, to within 1e-4.
fn rounds_to(dec: f64, places: u32, other: &Approx) -> bool {
    if other.z.im.abs() > other.err * 8.0 {
        return false;
    }
    let diff = (dec - other.z.re).abs();
    let half_ulp = 0.5 * 10f64.powi(-(places.min(300) as i32));
    diff <= half_ulp * (1.0 + 1e-9) + other.err && diff <= ROUNDING_REL_TOL * other.z.re.abs()
}

fn rounding_match(g: &Node, p: &Node, ga: Option<&Approx>, pa: Option<&Approx>) -> bool {
    match (decimal_literal(g), decimal_literal(p)) {
        (Some(_), Some(_)) => false,
        (Some((v, d)), None) => pa.is_some_and(|a| rounds_to(v, d, a)),
        (None, Some((v, d))) => ga.is_some_and(|a| rounds_to(v, d, a)),
        (None, None) => false,
    }
}

fn scalars(g: &Node, p: &Node, b: &mut Budget) -> bool {
    let g_inf = g.any(&|m| m == &Node::Const(Const::Inf));
    let p_inf = p.any(&|m| m == &Node::Const(Const::Inf));
    if g_inf || p_inf {
        return match (inf_sign(g), inf_sign(p)) {
            (Some(x), Some(y)) => x == y,
            _ => g == p,
        };
    }
    let mut vars = Vec::new();
    g.vars(&mut vars);
    p.vars(&mut vars);
    vars.sort();
    vars.dedup();
    if vars.is_empty() {
        let ge = exact(g, b);
        let pe = exact(p, b);
        if let (Some(x), Some(y)) = (&ge, &pe) {
            if x == y {
                return true;
            }
            // Two exact values that differ are different, unless one is a rounded decimal.
            let ga = approx(g, &[], b);
            let pa = approx(p, &[], b);
            return rounding_match(g, p, ga.as_ref(), pa.as_ref());
        }
        let ga = approx(g, &[], b);
        let pa = approx(p, &[], b);
        return match (&ga, &pa) {
            (Some(x), Some(y)) => close(x, y, REL_TOL) || rounding_match(g, p, Some(x), Some(y)),
            // Not evaluable (overflow, division by zero, too costly): only identical trees match.
            _ => g == p,
        };
    }
    if g.any(&|m| matches!(m, Node::Word(_))) || p.any(&|m| matches!(m, Node::Word(_))) {
        return g == p;
    }
    let mut rng = SplitMix64::from_state(SEED);
    let mut valid = 0;
    for _ in 0..SAMPLE_TRIES {
        let env = sample_env(&vars, &mut rng);
        match (approx(g, &env, b), approx(p, &env, b)) {
            (Some(x), Some(y)) => {
                if !close(&x, &y, REL_TOL) {
                    return false;
                }
                valid += 1;
                if valid >= SAMPLES_NEEDED {
                    return true;
                }
            }
            _ => {
                if b.spent() {
                    return false;
                }
            }
        }
    }
    if valid >= 2 { true } else { g == p }
}

/// Sample values for symbols: positive reals in [0.3, 2.8], away from the integers where
/// polynomials with small integer roots vanish together.
fn sample_env(vars: &[String], rng: &mut SplitMix64) -> Vec<(String, f64)> {
    vars.iter()
        .map(|v| (v.clone(), 0.3 + 2.5 * rng.unit()))
        .collect()
}
