//! The expression tree that both gold and predicted answers are parsed into.
//!
//! One enum covers scalars (numbers, symbols, operators, functions) and answer structure
//! (tuples, sets, intervals, matrices, relations), because answers nest both ways: a tuple
//! of fractions, an interval whose ends are `-\infty` and `\sqrt 2`, an equation whose right
//! side is a set. Numbers are exact big rationals; a literal written with a decimal point keeps
//! its number of decimal places so that `3.1416` can be judged as a rounding of `\pi`.

use num_rational::BigRational;

/// A named constant.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Const {
    Pi,
    E,
    /// The imaginary unit.
    I,
    /// Unsigned infinity; `-\infty` is `Neg(Const(Inf))`.
    Inf,
}

/// A one-argument function.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Func {
    Sin,
    Cos,
    Tan,
    Sec,
    Csc,
    Cot,
    Asin,
    Acos,
    Atan,
    Sinh,
    Cosh,
    Tanh,
    Ln,
    /// Base-10 logarithm (`\log x` in school math; `\log_b x` is `Log { base }`).
    Log10,
    Exp,
    Sqrt,
    Abs,
    Floor,
    Ceil,
}

/// A relation operator between two sides.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum RelOp {
    Eq,
    Approx,
    Ne,
    Lt,
    Le,
    Gt,
    Ge,
    /// Set membership, `x \in S`.
    In,
}

impl RelOp {
    /// The operator seen from the other side (`a < b` is `b > a`).
    pub fn flipped(self) -> RelOp {
        match self {
            RelOp::Lt => RelOp::Gt,
            RelOp::Le => RelOp::Ge,
            RelOp::Gt => RelOp::Lt,
            RelOp::Ge => RelOp::Le,
            other => other,
        }
    }

    /// True for `<`, `\le`, `>`, `\ge`.
    pub fn is_order(self) -> bool {
        matches!(self, RelOp::Lt | RelOp::Le | RelOp::Gt | RelOp::Ge)
    }
}

/// A parsed answer or sub-expression.
#[derive(Debug, Clone, PartialEq)]
pub enum Node {
    /// An exact number; `decimals` is `Some(d)` when it was written with `d` decimal places.
    Num {
        value: BigRational,
        decimals: Option<u32>,
    },
    Const(Const),
    /// A symbol, including its subscript and primes (`x`, `a_37`, `f'`).
    Var(String),
    /// A word of four or more letters (`even`, `evelyn`), lower-cased.
    Word(String),
    Add(Vec<Node>),
    Mul(Vec<Node>),
    Div(Box<Node>, Box<Node>),
    Neg(Box<Node>),
    Pow(Box<Node>, Box<Node>),
    /// `index`-th root; `\sqrt{x}` is `Func(Sqrt)`.
    Root(Box<Node>, Box<Node>),
    Func(Func, Box<Node>),
    /// `\log_{base} arg`.
    Log(Box<Node>, Box<Node>),
    Factorial(Box<Node>),
    /// `a \pm b`; a leading `\pm b` is `PlusMinus(0, b)`.
    PlusMinus(Box<Node>, Box<Node>),
    /// `(a, b, …)`: ordered.
    Tuple(Vec<Node>),
    /// `\{a, b\}`: unordered.
    Set(Vec<Node>),
    /// A bare list `a, b` (or several boxed answers): unordered.
    List(Vec<Node>),
    Interval {
        lo: Box<Node>,
        hi: Box<Node>,
        lo_closed: bool,
        hi_closed: bool,
    },
    /// `A \cup B \cup …`.
    Union(Vec<Node>),
    /// Rows of cells.
    Matrix(Vec<Vec<Node>>),
    EmptySet,
    /// `first op1 e1 op2 e2 …` (chains such as `a < x \le b` or `x = 1 + 1 = 2`).
    Relation(Box<Node>, Vec<(RelOp, Node)>),
    /// `a : b` ratios.
    Ratio(Vec<Node>),
    /// A multiple-choice letter, `(C)`.
    Choice(char),
    /// Text that is not math, kept for a normalised string comparison.
    Text(String),
}

impl Node {
    /// An exact integer.
    pub fn int(v: i64) -> Node {
        Node::Num {
            value: BigRational::from_integer(v.into()),
            decimals: None,
        }
    }

    /// Number of nodes in the tree (bounded work checks use it).
    pub fn size(&self) -> usize {
        1 + match self {
            Node::Add(v)
            | Node::Mul(v)
            | Node::Tuple(v)
            | Node::Set(v)
            | Node::List(v)
            | Node::Union(v)
            | Node::Ratio(v) => v.iter().map(Node::size).sum(),
            Node::Div(a, b)
            | Node::Pow(a, b)
            | Node::Root(a, b)
            | Node::Log(a, b)
            | Node::PlusMinus(a, b) => a.size() + b.size(),
            Node::Interval { lo, hi, .. } => lo.size() + hi.size(),
            Node::Neg(a) | Node::Func(_, a) | Node::Factorial(a) => a.size(),
            Node::Matrix(rows) => rows.iter().flatten().map(Node::size).sum(),
            Node::Relation(first, rest) => {
                first.size() + rest.iter().map(|(_, n)| n.size()).sum::<usize>()
            }
            _ => 0,
        }
    }

    /// True when any sub-node satisfies `pred`.
    pub fn any(&self, pred: &dyn Fn(&Node) -> bool) -> bool {
        if pred(self) {
            return true;
        }
        match self {
            Node::Add(v)
            | Node::Mul(v)
            | Node::Tuple(v)
            | Node::Set(v)
            | Node::List(v)
            | Node::Union(v)
            | Node::Ratio(v) => v.iter().any(|n| n.any(pred)),
            Node::Div(a, b)
            | Node::Pow(a, b)
            | Node::Root(a, b)
            | Node::Log(a, b)
            | Node::PlusMinus(a, b) => a.any(pred) || b.any(pred),
            Node::Interval { lo, hi, .. } => lo.any(pred) || hi.any(pred),
            Node::Neg(a) | Node::Func(_, a) | Node::Factorial(a) => a.any(pred),
            Node::Matrix(rows) => rows.iter().flatten().any(|n| n.any(pred)),
            Node::Relation(first, rest) => first.any(pred) || rest.iter().any(|(_, n)| n.any(pred)),
            _ => false,
        }
    }

    /// Collects the names of free symbols (sorted, deduplicated).
    pub fn vars(&self, out: &mut Vec<String>) {
        fn walk(n: &Node, out: &mut Vec<String>) {
            match n {
                Node::Var(v) | Node::Word(v) if !out.contains(v) => {
                    out.push(v.clone());
                }
                Node::Add(v)
                | Node::Mul(v)
                | Node::Tuple(v)
                | Node::Set(v)
                | Node::List(v)
                | Node::Union(v)
                | Node::Ratio(v) => v.iter().for_each(|c| walk(c, out)),
                Node::Div(a, b)
                | Node::Pow(a, b)
                | Node::Root(a, b)
                | Node::Log(a, b)
                | Node::PlusMinus(a, b) => {
                    walk(a, out);
                    walk(b, out);
                }
                Node::Interval { lo, hi, .. } => {
                    walk(lo, out);
                    walk(hi, out);
                }
                Node::Neg(a) | Node::Func(_, a) | Node::Factorial(a) => walk(a, out),
                Node::Matrix(rows) => rows.iter().flatten().for_each(|c| walk(c, out)),
                Node::Relation(first, rest) => {
                    walk(first, out);
                    rest.iter().for_each(|(_, c)| walk(c, out));
                }
                _ => {}
            }
        }
        walk(self, out);
        out.sort();
    }

    /// True for a scalar expression (no tuples, sets, relations, …).
    pub fn is_scalar(&self) -> bool {
        !self.any(&|n| {
            matches!(
                n,
                Node::Tuple(_)
                    | Node::Set(_)
                    | Node::List(_)
                    | Node::Interval { .. }
                    | Node::Union(_)
                    | Node::Matrix(_)
                    | Node::EmptySet
                    | Node::Relation(..)
                    | Node::Ratio(_)
                    | Node::Choice(_)
                    | Node::Text(_)
            )
        })
    }
}
