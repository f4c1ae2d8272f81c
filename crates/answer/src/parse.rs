//! A recursive-descent parser from cleaned LaTeX or plain math to a [`Node`].
//!
//! It covers what final answers contain (see the module list in the crate docs) and nothing
//! more: it is not a TeX engine. TeX's single-token arguments are honoured (`\frac12`,
//! `\sqrt3`), `2\frac{1}{2}` is the mixed number 5/2 (the MATH dataset's convention), a letter
//! run of four or more letters is a word, shorter runs are products of symbols (`xy`).
//! Work is bounded: recursion depth, node count and input length are capped, so adversarial
//! input fails fast with an error instead of overflowing the stack.

use crate::node::{Const, Func, Node, RelOp};
use num_bigint::BigInt;
use num_rational::BigRational;
use num_traits::{One, Zero};

/// Deepest nesting accepted (brackets, braces, unary minus chains).
pub const MAX_DEPTH: usize = 128;
/// Largest tree accepted.
pub const MAX_NODES: usize = 20_000;
/// Longest cleaned answer accepted, in characters.
pub const MAX_CHARS: usize = 20_000;
/// Longest digit string accepted as a number.
const MAX_DIGITS: usize = 10_000;

/// Why an answer could not be parsed.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum ParseError {
    #[error("unexpected {found} at character {pos}")]
    Unexpected { pos: usize, found: String },
    #[error("nesting deeper than {MAX_DEPTH} at character {pos}")]
    TooDeep { pos: usize },
    #[error("answer longer than {MAX_CHARS} characters ({len})")]
    TooLong { len: usize },
    #[error("expression larger than {MAX_NODES} nodes")]
    TooLarge,
    #[error("empty answer")]
    Empty,
}

#[derive(Debug, Clone, PartialEq)]
enum Tok {
    /// Integer digits, fraction digits, scientific exponent.
    Num(String, Option<String>, Option<i64>),
    Letters(String),
    Cmd(String),
    Sym(char),
    Eof,
}

/// Parses a cleaned answer string.
pub fn parse(input: &str) -> Result<Node, ParseError> {
    let chars: Vec<char> = input.chars().collect();
    if chars.len() > MAX_CHARS {
        return Err(ParseError::TooLong { len: chars.len() });
    }
    let mut p = Parser {
        chars,
        pos: 0,
        depth: 0,
        nodes: 0,
    };
    if p.peek() == Tok::Eof {
        return Err(ParseError::Empty);
    }
    let items = p.list()?;
    if p.peek() != Tok::Eof {
        return Err(p.unexpected());
    }
    Ok(one_or_list(items))
}

fn one_or_list(mut items: Vec<Node>) -> Node {
    if items.len() == 1 {
        items.pop().unwrap_or(Node::List(Vec::new()))
    } else {
        Node::List(items)
    }
}

fn func_named(name: &str) -> Option<Func> {
    Some(match name {
        "sin" => Func::Sin,
        "cos" => Func::Cos,
        "tan" | "tg" => Func::Tan,
        "sec" => Func::Sec,
        "csc" | "cosec" => Func::Csc,
        "cot" | "ctg" => Func::Cot,
        "arcsin" | "asin" => Func::Asin,
        "arccos" | "acos" => Func::Acos,
        "arctan" | "atan" => Func::Atan,
        "sinh" => Func::Sinh,
        "cosh" => Func::Cosh,
        "tanh" => Func::Tanh,
        "ln" => Func::Ln,
        "log" | "lg" => Func::Log10,
        "exp" => Func::Exp,
        "sqrt" => Func::Sqrt,
        "abs" => Func::Abs,
        _ => return None,
    })
}

const GREEK: &[&str] = &[
    "alpha",
    "beta",
    "gamma",
    "delta",
    "epsilon",
    "varepsilon",
    "zeta",
    "eta",
    "theta",
    "vartheta",
    "iota",
    "kappa",
    "lambda",
    "mu",
    "nu",
    "xi",
    "rho",
    "sigma",
    "tau",
    "upsilon",
    "phi",
    "varphi",
    "chi",
    "psi",
    "omega",
    "Gamma",
    "Delta",
    "Theta",
    "Lambda",
    "Xi",
    "Sigma",
    "Phi",
    "Psi",
    "Omega",
];

struct Parser {
    chars: Vec<char>,
    pos: usize,
    depth: usize,
    nodes: usize,
}

impl Parser {
    fn skip_ws(&mut self) {
        while self.chars.get(self.pos).is_some_and(|c| c.is_whitespace()) {
            self.pos += 1;
        }
    }

    /// Lexes the next token without consuming it; returns it and the position after it.
    fn lex(&self) -> (Tok, usize) {
        let mut i = self.pos;
        while self.chars.get(i).is_some_and(|c| c.is_whitespace()) {
            i += 1;
        }
        let Some(&c) = self.chars.get(i) else {
            return (Tok::Eof, i);
        };
        if c == '\\' {
            let mut j = i + 1;
            while self.chars.get(j).is_some_and(|c| c.is_ascii_alphabetic()) {
                j += 1;
            }
            if j == i + 1 {
                return match self.chars.get(j) {
                    Some(&s) => (Tok::Cmd(s.to_string()), j + 1),
                    None => (Tok::Sym('\\'), j),
                };
            }
            return (Tok::Cmd(self.chars[i + 1..j].iter().collect()), j);
        }
        if c.is_ascii_digit()
            || (c == '.' && self.chars.get(i + 1).is_some_and(|d| d.is_ascii_digit()))
        {
            let mut j = i;
            while self.chars.get(j).is_some_and(|c| c.is_ascii_digit()) {
                j += 1;
            }
            let int: String = self.chars[i..j].iter().collect();
            let mut frac = None;
            if self.chars.get(j) == Some(&'.')
                && self.chars.get(j + 1).is_some_and(|d| d.is_ascii_digit())
            {
                let mut k = j + 1;
                while self.chars.get(k).is_some_and(|c| c.is_ascii_digit()) {
                    k += 1;
                }
                frac = Some(self.chars[j + 1..k].iter().collect());
                j = k;
            } else if self.chars.get(j) == Some(&'.')
                && !self
                    .chars
                    .get(j + 1)
                    .is_some_and(|c| c.is_ascii_alphabetic())
                && !int.is_empty()
            {
                // `5.` is 5.
                j += 1;
            }
            // Scientific notation: `1.5e-20`, `3E8`.
            let mut exp = None;
            if matches!(self.chars.get(j), Some('e') | Some('E')) {
                let mut k = j + 1;
                let neg = match self.chars.get(k) {
                    Some('-') => {
                        k += 1;
                        true
                    }
                    Some('+') => {
                        k += 1;
                        false
                    }
                    _ => false,
                };
                let start = k;
                while self.chars.get(k).is_some_and(|c| c.is_ascii_digit()) {
                    k += 1;
                }
                let after_is_letter = self.chars.get(k).is_some_and(|c| c.is_alphabetic());
                if k > start && k - start <= 6 && !after_is_letter {
                    let digits: String = self.chars[start..k].iter().collect();
                    if let Ok(v) = digits.parse::<i64>() {
                        exp = Some(if neg { -v } else { v });
                        j = k;
                    }
                }
            }
            return (Tok::Num(int, frac, exp), j);
        }
        if c.is_ascii_alphabetic() {
            let mut j = i;
            while self.chars.get(j).is_some_and(|c| c.is_ascii_alphabetic()) {
                j += 1;
            }
            return (Tok::Letters(self.chars[i..j].iter().collect()), j);
        }
        (Tok::Sym(c), i + 1)
    }

    fn peek(&self) -> Tok {
        self.lex().0
    }

    fn bump(&mut self) -> Tok {
        let (t, end) = self.lex();
        self.pos = end;
        t
    }

    fn unexpected(&self) -> ParseError {
        let (t, _) = self.lex();
        ParseError::Unexpected {
            pos: self.pos,
            found: match t {
                Tok::Eof => "end of input".to_string(),
                Tok::Num(i, _, _) => format!("number {}", truncate(&i)),
                Tok::Letters(s) => format!("`{}`", truncate(&s)),
                Tok::Cmd(s) => format!("`\\{}`", truncate(&s)),
                Tok::Sym(c) => format!("`{c}`"),
            },
        }
    }

    fn expect_sym(&mut self, c: char) -> Result<(), ParseError> {
        if self.peek() == Tok::Sym(c) {
            self.bump();
            Ok(())
        } else {
            Err(self.unexpected())
        }
    }

    fn node(&mut self, n: Node) -> Result<Node, ParseError> {
        self.nodes += 1;
        if self.nodes > MAX_NODES {
            return Err(ParseError::TooLarge);
        }
        Ok(n)
    }

    fn enter(&mut self) -> Result<(), ParseError> {
        self.depth += 1;
        if self.depth > MAX_DEPTH {
            return Err(ParseError::TooDeep { pos: self.pos });
        }
        Ok(())
    }

    fn leave(&mut self) {
        self.depth = self.depth.saturating_sub(1);
    }

    fn at_list_end(&self) -> bool {
        match self.peek() {
            Tok::Eof => true,
            Tok::Sym(c) => matches!(c, ')' | ']' | '}' | '&'),
            Tok::Cmd(c) => matches!(c.as_str(), "}" | "\\" | "end" | "rangle" | "rbrace"),
            _ => false,
        }
    }

    /// Items separated by `,` or `;` (and the words "and"/"or").
    fn list(&mut self) -> Result<Vec<Node>, ParseError> {
        let mut items = Vec::new();
        loop {
            // Empty items (`19, 46, , 82` after `\text{ and }` became a comma) are skipped.
            while !items.is_empty()
                && match self.peek() {
                    Tok::Sym(',') | Tok::Sym(';') => true,
                    Tok::Letters(w) => w == "and" || w == "or",
                    _ => false,
                }
            {
                self.bump();
            }
            if self.at_list_end() {
                break;
            }
            items.push(self.item()?);
            match self.peek() {
                Tok::Sym(',') | Tok::Sym(';') => {
                    self.bump();
                }
                Tok::Letters(w) if w == "and" || w == "or" => {
                    self.bump();
                }
                _ => break,
            }
        }
        Ok(items)
    }

    /// A relation chain: `side (op side)*`.
    fn item(&mut self) -> Result<Node, ParseError> {
        self.enter()?;
        let first = self.ratio()?;
        let mut rest = Vec::new();
        while let Some(op) = self.relop() {
            let side = self.ratio()?;
            rest.push((op, side));
        }
        self.leave();
        if rest.is_empty() {
            Ok(first)
        } else {
            self.node(Node::Relation(Box::new(first), rest))
        }
    }

    /// Consumes a relation operator if one is next.
    fn relop(&mut self) -> Option<RelOp> {
        let save = self.pos;
        let op = match self.bump() {
            Tok::Sym('=') => {
                if self.peek() == Tok::Sym('=') {
                    self.bump();
                }
                RelOp::Eq
            }
            Tok::Sym('<') => {
                if self.peek() == Tok::Sym('=') {
                    self.bump();
                    RelOp::Le
                } else {
                    RelOp::Lt
                }
            }
            Tok::Sym('>') => {
                if self.peek() == Tok::Sym('=') {
                    self.bump();
                    RelOp::Ge
                } else {
                    RelOp::Gt
                }
            }
            Tok::Sym('!') if self.peek() == Tok::Sym('=') => {
                self.bump();
                RelOp::Ne
            }
            Tok::Cmd(c) => match c.as_str() {
                "le" | "leq" | "leqslant" | "leqq" => RelOp::Le,
                "ge" | "geq" | "geqslant" | "geqq" => RelOp::Ge,
                "lt" => RelOp::Lt,
                "gt" => RelOp::Gt,
                "ne" | "neq" => RelOp::Ne,
                "approx" | "simeq" | "sim" | "cong" | "equiv" => RelOp::Approx,
                "in" => RelOp::In,
                _ => {
                    self.pos = save;
                    return None;
                }
            },
            _ => {
                self.pos = save;
                return None;
            }
        };
        Some(op)
    }

    /// `a : b : c` ratios.
    fn ratio(&mut self) -> Result<Node, ParseError> {
        let first = self.union()?;
        if self.peek() != Tok::Sym(':') {
            return Ok(first);
        }
        let mut parts = vec![first];
        while self.peek() == Tok::Sym(':') {
            self.bump();
            parts.push(self.union()?);
        }
        self.node(Node::Ratio(parts))
    }

    fn union(&mut self) -> Result<Node, ParseError> {
        let first = self.expr()?;
        if self.peek() != Tok::Cmd("cup".into()) {
            return Ok(first);
        }
        let mut parts = vec![first];
        while self.peek() == Tok::Cmd("cup".into()) {
            self.bump();
            parts.push(self.expr()?);
        }
        self.node(Node::Union(parts))
    }

    /// Sums and differences, with `\pm`.
    fn expr(&mut self) -> Result<Node, ParseError> {
        let mut acc = self.term()?;
        loop {
            match self.peek() {
                Tok::Sym('+') => {
                    self.bump();
                    let t = self.term()?;
                    acc = add(acc, t);
                }
                Tok::Sym('-') => {
                    self.bump();
                    let t = self.term()?;
                    acc = add(acc, Node::Neg(Box::new(t)));
                }
                Tok::Cmd(c) if c == "pm" || c == "mp" => {
                    self.bump();
                    let t = self.term()?;
                    acc = Node::PlusMinus(Box::new(acc), Box::new(t));
                }
                _ => break,
            }
            acc = self.node(acc)?;
        }
        Ok(acc)
    }

    /// True when the next token can start a factor (for implicit multiplication).
    fn starts_factor(&self) -> bool {
        match self.peek() {
            Tok::Num(..) => true,
            Tok::Letters(w) => w != "and" && w != "or",
            Tok::Sym(c) => matches!(c, '(' | '{'),
            Tok::Cmd(c) => !matches!(
                c.as_str(),
                "cdot"
                    | "times"
                    | "ast"
                    | "div"
                    | "pm"
                    | "mp"
                    | "le"
                    | "leq"
                    | "leqslant"
                    | "leqq"
                    | "ge"
                    | "geq"
                    | "geqslant"
                    | "geqq"
                    | "lt"
                    | "gt"
                    | "ne"
                    | "neq"
                    | "approx"
                    | "simeq"
                    | "sim"
                    | "cong"
                    | "equiv"
                    | "in"
                    | "cup"
                    | "cap"
                    | "setminus"
                    | "}"
                    | "\\"
                    | "end"
                    | "rangle"
                    | "rbrace"
                    | "rfloor"
                    | "rceil"
                    | "rvert"
                    | "|"
                    | "to"
                    | "rightarrow"
                    | "Rightarrow"
                    | "implies"
                    | "quad"
                    | "mid"
                    | ","
            ),
            _ => false,
        }
    }

    /// Products and quotients, explicit or implicit; mixed numbers.
    fn term(&mut self) -> Result<Node, ParseError> {
        let mut factors = vec![self.unary()?];
        let mut divisor: Option<Node> = None;
        loop {
            match self.peek() {
                Tok::Sym('*') | Tok::Cmd(_) if self.is_mul_op() => {
                    self.bump();
                    factors.push(self.unary()?);
                }
                Tok::Sym('/') | Tok::Cmd(_) if self.is_div_op() => {
                    self.bump();
                    let d = self.unary()?;
                    // `a/b/c` is `a/(b c)`; `a/b c` keeps `c` in the numerator as written.
                    divisor = Some(match divisor.take() {
                        Some(prev) => Node::Mul(vec![prev, d]),
                        None => d,
                    });
                }
                _ if self.starts_factor() => {
                    let next = self.power()?;
                    // `2\frac{1}{2}` is two and a half.
                    if factors.len() == 1
                        && divisor.is_none()
                        && is_int_literal(&factors[0])
                        && is_int_fraction(&next)
                    {
                        let whole = factors.pop().unwrap_or(Node::int(0));
                        factors.push(Node::Add(vec![whole, next]));
                    } else {
                        factors.push(next);
                    }
                }
                _ => break,
            }
            self.node(Node::Var(String::new()))?;
        }
        let num = if factors.len() == 1 {
            factors.pop().unwrap_or(Node::int(1))
        } else {
            Node::Mul(factors)
        };
        Ok(match divisor {
            Some(d) => Node::Div(Box::new(num), Box::new(d)),
            None => num,
        })
    }

    fn is_mul_op(&self) -> bool {
        match self.peek() {
            Tok::Sym('*') => true,
            Tok::Cmd(c) => matches!(c.as_str(), "cdot" | "times" | "ast"),
            _ => false,
        }
    }

    fn is_div_op(&self) -> bool {
        match self.peek() {
            Tok::Sym('/') => true,
            Tok::Cmd(c) => c == "div",
            _ => false,
        }
    }

    fn unary(&mut self) -> Result<Node, ParseError> {
        self.enter()?;
        let out = match self.peek() {
            Tok::Sym('-') => {
                self.bump();
                let inner = self.unary()?;
                Node::Neg(Box::new(inner))
            }
            Tok::Sym('+') => {
                self.bump();
                self.unary()?
            }
            Tok::Cmd(c) if c == "pm" || c == "mp" => {
                self.bump();
                let inner = self.unary()?;
                Node::PlusMinus(Box::new(Node::int(0)), Box::new(inner))
            }
            _ => self.power()?,
        };
        self.leave();
        self.node(out)
    }

    fn power(&mut self) -> Result<Node, ParseError> {
        let base = self.postfix()?;
        if self.peek() != Tok::Sym('^') {
            return Ok(base);
        }
        self.bump();
        self.enter()?;
        let exp = self.exponent()?;
        self.leave();
        // `x^2!` is rare; factorial binds to the base as parsed above.
        self.node(Node::Pow(Box::new(base), Box::new(exp)))
    }

    /// An exponent: a braced group, a signed number, a symbol or a command atom; right-assoc.
    fn exponent(&mut self) -> Result<Node, ParseError> {
        match self.peek() {
            Tok::Sym('-') => {
                self.bump();
                let inner = self.exponent()?;
                Ok(Node::Neg(Box::new(inner)))
            }
            Tok::Sym('{') => {
                let g = self.brace_group()?;
                if self.peek() == Tok::Sym('^') {
                    self.bump();
                    let e = self.exponent()?;
                    return Ok(Node::Pow(Box::new(g), Box::new(e)));
                }
                Ok(g)
            }
            Tok::Letters(w) if w.len() > 1 => {
                // `x^ab`: TeX takes one letter.
                self.skip_ws();
                let c = self.chars[self.pos];
                self.pos += 1;
                Ok(letter_node(c))
            }
            _ => self.power(),
        }
    }

    fn postfix(&mut self) -> Result<Node, ParseError> {
        let mut n = self.primary()?;
        loop {
            // Postfix operators must follow without a space to avoid `5 !=` confusion.
            match self.chars.get(self.pos) {
                Some('!') if self.chars.get(self.pos + 1) != Some(&'=') => {
                    self.pos += 1;
                    n = Node::Factorial(Box::new(n));
                }
                Some('\'') => {
                    self.pos += 1;
                    n = match n {
                        Node::Var(v) => Node::Var(format!("{v}'")),
                        other => Node::Mul(vec![other, Node::Var("'".into())]),
                    };
                }
                Some('_') => {
                    self.pos += 1;
                    let sub = self.raw_arg()?;
                    n = match n {
                        Node::Var(v) => Node::Var(format!("{v}_{sub}")),
                        Node::Num { .. } | Node::Word(_) | Node::Const(_) => {
                            Node::Var(format!("{}_{sub}", self.describe(&n)))
                        }
                        other => Node::Mul(vec![other, Node::Var(format!("_{sub}"))]),
                    };
                }
                _ => break,
            }
            n = self.node(n)?;
        }
        Ok(n)
    }

    fn describe(&self, n: &Node) -> String {
        match n {
            Node::Num { value, .. } => value.to_string(),
            Node::Word(w) => w.clone(),
            Node::Const(c) => format!("{c:?}"),
            _ => String::new(),
        }
    }

    /// The raw text of a TeX argument (a braced group or one character), whitespace removed.
    fn raw_arg(&mut self) -> Result<String, ParseError> {
        self.skip_ws();
        let chars: Vec<char> = self.chars.clone();
        if let Some((content, end)) = crate::normalize::group(&chars, self.pos) {
            self.pos = end;
            let s: String = content.iter().filter(|c| !c.is_whitespace()).collect();
            return Ok(s.replace(['{', '}'], ""));
        }
        match self.chars.get(self.pos) {
            Some('\\') => match self.bump() {
                Tok::Cmd(c) => Ok(c),
                _ => Err(self.unexpected()),
            },
            Some(&c) if c != '}' && c != ')' => {
                self.pos += 1;
                Ok(c.to_string())
            }
            _ => Err(self.unexpected()),
        }
    }

    /// `{ list }` as one node.
    fn brace_group(&mut self) -> Result<Node, ParseError> {
        self.expect_sym('{')?;
        self.enter()?;
        let items = self.list()?;
        self.leave();
        self.expect_sym('}')?;
        if items.is_empty() {
            return Err(ParseError::Empty);
        }
        Ok(one_or_list(items))
    }

    /// A TeX macro argument: a braced group or a single character/command token.
    fn tex_arg(&mut self) -> Result<Node, ParseError> {
        self.skip_ws();
        match self.chars.get(self.pos) {
            Some('{') => self.brace_group(),
            Some('\\') => self.primary(),
            Some(&c) if c.is_ascii_digit() => {
                self.pos += 1;
                Ok(Node::int(i64::from(c as u8 - b'0')))
            }
            Some(&c) if c.is_ascii_alphabetic() => {
                self.pos += 1;
                Ok(letter_node(c))
            }
            _ => Err(self.unexpected()),
        }
    }

    fn primary(&mut self) -> Result<Node, ParseError> {
        let tok = self.bump();
        let n = match tok {
            Tok::Num(int, frac, exp) => number(&int, frac.as_deref(), exp)?,
            Tok::Letters(w) => self.letters(&w)?,
            Tok::Sym('(') => self.bracketed('(')?,
            Tok::Sym('[') => self.bracketed('[')?,
            Tok::Sym('{') => {
                self.pos -= 1;
                self.brace_group()?
            }
            Tok::Sym('|') => {
                self.enter()?;
                let inner = self.expr()?;
                self.leave();
                self.expect_sym('|')?;
                Node::Func(Func::Abs, Box::new(inner))
            }
            Tok::Cmd(c) => self.command(&c)?,
            _ => {
                return Err(ParseError::Unexpected {
                    pos: self.pos,
                    found: format!("{tok:?}"),
                });
            }
        };
        self.node(n)
    }

    /// `(…)`, `[…]`, `(…]`, `[…)`: grouping, tuples and intervals.
    fn bracketed(&mut self, open: char) -> Result<Node, ParseError> {
        self.enter()?;
        let items = self.list()?;
        self.leave();
        let close = match self.bump() {
            Tok::Sym(c @ (')' | ']')) => c,
            _ => return Err(self.unexpected()),
        };
        let mixed = open != close_to_open(close);
        if items.len() == 2 {
            let has_inf = items
                .iter()
                .any(|n| n.any(&|m| m == &Node::Const(Const::Inf)));
            if mixed || open == '[' || has_inf {
                let mut it = items.into_iter();
                let (Some(lo), Some(hi)) = (it.next(), it.next()) else {
                    return Err(ParseError::Empty);
                };
                return Ok(Node::Interval {
                    lo: Box::new(lo),
                    hi: Box::new(hi),
                    lo_closed: open == '[',
                    hi_closed: close == ']',
                });
            }
        }
        if mixed {
            return Err(self.unexpected());
        }
        match items.len() {
            0 => Err(ParseError::Empty),
            1 => Ok(items.into_iter().next().unwrap_or(Node::int(0))),
            _ => Ok(Node::Tuple(items)),
        }
    }

    fn letters(&mut self, w: &str) -> Result<Node, ParseError> {
        if let Some(f) = func_named(w) {
            return self.apply(f);
        }
        match w {
            "pi" => return Ok(Node::Const(Const::Pi)),
            "infty" | "infinity" | "inf" => return Ok(Node::Const(Const::Inf)),
            _ => {}
        }
        if w.len() >= 4 {
            return Ok(Node::Word(w.to_ascii_lowercase()));
        }
        let mut parts: Vec<Node> = w.chars().map(letter_node).collect();
        Ok(if parts.len() == 1 {
            parts.pop().unwrap_or(Node::int(1))
        } else {
            Node::Mul(parts)
        })
    }

    /// Applies a function to its argument: `\sin x`, `\sin(x)`, `\sin^2 x`, `\log_2 8`.
    fn apply(&mut self, f: Func) -> Result<Node, ParseError> {
        let mut power = None;
        let mut base = None;
        for _ in 0..2 {
            match self.chars.get(self.pos) {
                Some('^') => {
                    self.pos += 1;
                    power = Some(self.tex_arg()?);
                }
                Some('_') if f == Func::Log10 => {
                    self.pos += 1;
                    base = Some(self.tex_arg()?);
                }
                _ => {}
            }
        }
        self.enter()?;
        let arg = if f == Func::Sqrt {
            self.tex_arg()?
        } else {
            self.power()?
        };
        self.leave();
        let applied = match base {
            Some(b) => Node::Log(Box::new(b), Box::new(arg)),
            None => Node::Func(f, Box::new(arg)),
        };
        Ok(match power {
            // `\sin^{-1} x` is arcsin.
            Some(Node::Neg(inner)) if *inner == Node::int(1) => match applied {
                Node::Func(Func::Sin, a) => Node::Func(Func::Asin, a),
                Node::Func(Func::Cos, a) => Node::Func(Func::Acos, a),
                Node::Func(Func::Tan, a) => Node::Func(Func::Atan, a),
                other => Node::Pow(Box::new(other), Box::new(Node::int(-1))),
            },
            Some(p) => Node::Pow(Box::new(applied), Box::new(p)),
            None => applied,
        })
    }

    fn command(&mut self, c: &str) -> Result<Node, ParseError> {
        if let Some(f) = func_named(c) {
            if f == Func::Sqrt {
                self.skip_ws();
                if self.chars.get(self.pos) == Some(&'[') {
                    self.pos += 1;
                    self.enter()?;
                    let index = self.expr()?;
                    self.leave();
                    self.expect_sym(']')?;
                    let rad = self.tex_arg()?;
                    return Ok(Node::Root(Box::new(index), Box::new(rad)));
                }
            }
            return self.apply(f);
        }
        if GREEK.contains(&c) {
            return Ok(Node::Var(c.to_string()));
        }
        Ok(match c {
            "frac" | "dfrac" | "tfrac" | "cfrac" | "over" => {
                let num = self.tex_arg()?;
                let den = self.tex_arg()?;
                Node::Div(Box::new(num), Box::new(den))
            }
            "binom" | "dbinom" | "tbinom" | "choose" => {
                let n = self.tex_arg()?;
                let k = self.tex_arg()?;
                binom(n, k)
            }
            "pi" | "uppi" => Node::Const(Const::Pi),
            "infty" | "infinity" => Node::Const(Const::Inf),
            "emptyset" | "varnothing" => Node::EmptySet,
            "e" => Node::Const(Const::E),
            "i" | "imath" => Node::Const(Const::I),
            "{" | "lbrace" => {
                self.enter()?;
                let items = self.list()?;
                self.leave();
                match self.bump() {
                    Tok::Cmd(c) if c == "}" || c == "rbrace" => {}
                    _ => return Err(self.unexpected()),
                }
                if items.is_empty() {
                    Node::EmptySet
                } else {
                    Node::Set(items)
                }
            }
            "lfloor" | "lceil" => {
                self.enter()?;
                let inner = self.expr()?;
                self.leave();
                let closer = if c == "lfloor" { "rfloor" } else { "rceil" };
                match self.bump() {
                    Tok::Cmd(x) if x == closer => {}
                    _ => return Err(self.unexpected()),
                }
                let f = if c == "lfloor" {
                    Func::Floor
                } else {
                    Func::Ceil
                };
                Node::Func(f, Box::new(inner))
            }
            "lvert" | "vert" | "|" | "lVert" | "Vert" => {
                self.enter()?;
                let inner = self.expr()?;
                self.leave();
                match self.bump() {
                    Tok::Cmd(x)
                        if matches!(x.as_str(), "rvert" | "vert" | "|" | "rVert" | "Vert") => {}
                    Tok::Sym('|') => {}
                    _ => return Err(self.unexpected()),
                }
                Node::Func(Func::Abs, Box::new(inner))
            }
            "langle" => {
                self.enter()?;
                let items = self.list()?;
                self.leave();
                match self.bump() {
                    Tok::Cmd(x) if x == "rangle" => {}
                    _ => return Err(self.unexpected()),
                }
                Node::Tuple(items)
            }
            "begin" => self.environment()?,
            "overline" | "vec" | "hat" | "bar" | "widehat" | "overrightarrow" | "tilde"
            | "mathbb" | "mathcal" | "mathfrak" | "underline" => {
                let raw = self.raw_arg()?;
                Node::Var(format!("{c}{{{raw}}}"))
            }
            "angle" | "triangle" | "measuredangle" => {
                let next = self.power()?;
                Node::Mul(vec![Node::Var(c.to_string()), next])
            }
            "sqrt" => unreachable_sqrt()?,
            other => Node::Var(format!("\\{other}")),
        })
    }

    /// `\begin{pmatrix} … \end{pmatrix}` and friends.
    fn environment(&mut self) -> Result<Node, ParseError> {
        let name = self.raw_arg()?;
        let matrix = matches!(
            name.as_str(),
            "pmatrix"
                | "bmatrix"
                | "Bmatrix"
                | "vmatrix"
                | "Vmatrix"
                | "matrix"
                | "smallmatrix"
                | "array"
        );
        if !matrix {
            return Err(ParseError::Unexpected {
                pos: self.pos,
                found: format!("environment {name}"),
            });
        }
        if name == "array" {
            // Column specification `{cc}`.
            let _ = self.raw_arg()?;
        }
        self.enter()?;
        let mut rows: Vec<Vec<Node>> = Vec::new();
        let mut row: Vec<Node> = Vec::new();
        loop {
            match self.peek() {
                Tok::Cmd(c) if c == "end" => {
                    self.bump();
                    let _ = self.raw_arg()?;
                    break;
                }
                Tok::Cmd(c) if c == "\\" => {
                    self.bump();
                    rows.push(std::mem::take(&mut row));
                }
                Tok::Sym('&') => {
                    self.bump();
                }
                Tok::Eof => return Err(self.unexpected()),
                _ => {
                    let cell = self.item()?;
                    row.push(cell);
                    if !matches!(self.peek(), Tok::Sym('&') | Tok::Cmd(_)) {
                        return Err(self.unexpected());
                    }
                }
            }
        }
        self.leave();
        if !row.is_empty() {
            rows.push(row);
        }
        rows.retain(|r| !r.is_empty());
        if rows.is_empty() {
            return Err(ParseError::Empty);
        }
        Ok(Node::Matrix(rows))
    }
}

fn unreachable_sqrt() -> Result<Node, ParseError> {
    // `\sqrt` is a function name and handled before this match.
    Err(ParseError::Empty)
}

fn close_to_open(c: char) -> char {
    if c == ')' { '(' } else { '[' }
}

fn truncate(s: &str) -> String {
    s.chars().take(20).collect()
}

fn letter_node(c: char) -> Node {
    match c {
        'e' => Node::Const(Const::E),
        'i' => Node::Const(Const::I),
        _ => Node::Var(c.to_string()),
    }
}

fn add(a: Node, b: Node) -> Node {
    match a {
        Node::Add(mut v) => {
            v.push(b);
            Node::Add(v)
        }
        other => Node::Add(vec![other, b]),
    }
}

fn is_int_literal(n: &Node) -> bool {
    matches!(n, Node::Num { value, decimals: None } if value.is_integer() && !value.numer().is_zero())
}

fn is_int_fraction(n: &Node) -> bool {
    match n {
        Node::Div(a, b) => is_int_literal(a) && is_int_literal(b),
        _ => false,
    }
}

fn binom(n: Node, k: Node) -> Node {
    // C(n, k) = n! / (k! (n-k)!), evaluated exactly when n and k are integers.
    let nk = Node::Add(vec![n.clone(), Node::Neg(Box::new(k.clone()))]);
    Node::Div(
        Box::new(Node::Factorial(Box::new(n))),
        Box::new(Node::Mul(vec![
            Node::Factorial(Box::new(k)),
            Node::Factorial(Box::new(nk)),
        ])),
    )
}

/// Builds an exact number from its digits.
fn number(int: &str, frac: Option<&str>, exp: Option<i64>) -> Result<Node, ParseError> {
    let total = int.len() + frac.map_or(0, str::len);
    if total > MAX_DIGITS {
        return Err(ParseError::TooLong { len: total });
    }
    let frac_digits = frac.unwrap_or("");
    let digits = format!("{int}{frac_digits}");
    let mantissa: BigInt = if digits.is_empty() {
        BigInt::zero()
    } else {
        digits.parse().map_err(|_| ParseError::Empty)?
    };
    let scale = i64::try_from(frac_digits.len()).unwrap_or(i64::MAX) - exp.unwrap_or(0);
    let ten = BigInt::from(10u8);
    let value = if scale >= 0 {
        BigRational::new(mantissa, num_traits::pow(ten, scale as usize))
    } else {
        let up = usize::try_from(-scale).unwrap_or(usize::MAX);
        if up > MAX_DIGITS {
            return Err(ParseError::TooLong { len: up });
        }
        BigRational::from_integer(mantissa * num_traits::pow(ten, up))
    };
    let decimals = match (frac, exp) {
        (Some(f), None) => Some(u32::try_from(f.len()).unwrap_or(u32::MAX)),
        _ => None,
    };
    let _ = BigRational::one();
    Ok(Node::Num { value, decimals })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn p(s: &str) -> Node {
        match parse(s) {
            Ok(n) => n,
            Err(e) => panic!("parse {s:?}: {e}"),
        }
    }

    #[test]
    fn numbers_keep_decimal_places() {
        assert_eq!(
            p("0.50"),
            Node::Num {
                value: BigRational::new(1.into(), 2.into()),
                decimals: Some(2)
            }
        );
        assert_eq!(
            p("1.5e-2"),
            Node::Num {
                value: BigRational::new(3.into(), 200.into()),
                decimals: None
            }
        );
    }

    #[test]
    fn tex_single_token_arguments() {
        assert_eq!(p("\\frac12"), p("\\frac{1}{2}"));
        assert_eq!(p("\\frac3{3}"), p("\\frac{3}{3}"));
        assert_eq!(p("\\sqrt3"), p("\\sqrt{3}"));
    }

    #[test]
    fn mixed_number_is_a_sum() {
        assert!(matches!(p("2\\frac{1}{2}"), Node::Add(_)));
        assert!(matches!(p("2\\frac{x}{2}"), Node::Mul(_)));
    }

    #[test]
    fn brackets_make_tuples_and_intervals() {
        assert!(matches!(p("(1,2,3)"), Node::Tuple(v) if v.len() == 3));
        assert!(matches!(
            p("[0,1)"),
            Node::Interval {
                lo_closed: true,
                hi_closed: false,
                ..
            }
        ));
        assert!(matches!(p("(-\\infty, 3]"), Node::Interval { .. }));
        assert!(matches!(p("(1, 2)"), Node::Tuple(_)));
        assert!(matches!(p("\\{1,2\\}"), Node::Set(v) if v.len() == 2));
    }

    #[test]
    fn relations_and_matrices() {
        assert!(matches!(p("x \\le 3"), Node::Relation(_, r) if r[0].0 == RelOp::Le));
        assert!(matches!(p("-2 \\le x < 7"), Node::Relation(_, r) if r.len() == 2));
        let m = p("\\begin{pmatrix} 1 & 2 \\\\ 3 & 4 \\end{pmatrix}");
        assert!(matches!(m, Node::Matrix(rows) if rows.len() == 2 && rows[1].len() == 2));
    }

    #[test]
    fn deep_nesting_is_an_error_not_a_crash() {
        let s = format!("{}1{}", "{".repeat(5_000), "}".repeat(5_000));
        let r = parse(&s);
        assert!(matches!(r, Err(ParseError::TooDeep { .. })), "{r:?}");
        let s = format!("{}1{}", "(".repeat(10_000), ")".repeat(10_000));
        assert!(parse(&s).is_err());
        let s = "-".repeat(10_000) + "1";
        assert!(parse(&s).is_err());
    }

    #[test]
    fn garbage_is_an_error() {
        assert!(parse("1 + ) (").is_err());
        assert!(parse("\\begin{align} x \\end{align}").is_err());
        assert!(parse("").is_err());
    }
}
