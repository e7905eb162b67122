//! The grammar, with `nom`.
//!
//! ```text
//! selector   = ws [ or ] ws EOF                       ; empty means all()
//! or         = and { "||" and }
//! and        = unary { "&&" unary }
//! unary      = { "!" } primary                        ; a run of ! collapses (even: none)
//! primary    = "(" or ")" | "all" "(" ")" | "global" "(" ")" | "has" "(" key ")"
//!            | key op
//! op         = ("==" | "!=" | "contains" | "starts" "with" | "ends" "with") string
//!            | ("in" | "not" "in") set
//! set        = "{" [ string { "," string } [ "," ] ] "}"
//! string     = "'" { any but ' } "'" | '"' { any but " } '"'
//! key        = 1*( A-Z a-z 0-9 - _ . / )
//! ```
//!
//! Whitespace (space, tab, CR, LF) may appear between any two tokens. Calico's tokenizer only
//! skips spaces and tabs and wants `has(`, `all(` and `global(` without a space before the
//! parenthesis; tabby also accepts those forms. Once an operator is read, its operand is
//! required (`cut`), so errors point at the operand rather than back at the operator.

use std::collections::BTreeSet;

use nom::branch::alt;
use nom::bytes::complete::{tag, take_while1};
use nom::character::complete::{char, multispace0};
use nom::combinator::cut;
use nom::{IResult, Parser};

use crate::ast::Expr;
use crate::error::{Expected, ParseError, ParseErrorKind};
use crate::MAX_NESTING;

/// Where and why parsing stopped, in terms of the remaining input.
#[derive(Debug)]
pub(crate) struct PErr<'a> {
    at: &'a str,
    kind: ParseErrorKind,
}

impl<'a> PErr<'a> {
    fn expected(at: &'a str, what: Expected) -> Self {
        PErr {
            at,
            kind: ParseErrorKind::Expected(what),
        }
    }
}

impl<'a> nom::error::ParseError<&'a str> for PErr<'a> {
    fn from_error_kind(input: &'a str, _kind: nom::error::ErrorKind) -> Self {
        // Every primitive sits inside `expect`, which names what was wanted here.
        PErr::expected(input, Expected::Expression)
    }

    fn append(_input: &'a str, _kind: nom::error::ErrorKind, other: Self) -> Self {
        other
    }

    /// Of two failed alternatives, report the one that got further.
    fn or(self, other: Self) -> Self {
        if other.at.len() <= self.at.len() {
            other
        } else {
            self
        }
    }
}

type Res<'a, T> = IResult<&'a str, T, PErr<'a>>;

/// Parses a whole selector.
pub(crate) fn parse(input: &str) -> Result<Expr, ParseError> {
    match selector(input) {
        Ok(expr) => Ok(expr),
        Err(e) => Err(to_parse_error(input, e)),
    }
}

fn selector(input: &str) -> Result<Expr, PErr<'_>> {
    let rest = ws(input);
    if rest.is_empty() {
        return Ok(Expr::All);
    }
    let (rest, expr) = match or_expr(rest, 0) {
        Ok(ok) => ok,
        Err(nom::Err::Error(e) | nom::Err::Failure(e)) => return Err(e),
        // Complete parsers never ask for more input.
        Err(nom::Err::Incomplete(_)) => return Err(PErr::expected("", Expected::Expression)),
    };
    let rest = ws(rest);
    if rest.is_empty() {
        Ok(expr)
    } else {
        Err(PErr::expected(rest, Expected::AndOrEnd))
    }
}

fn to_parse_error(input: &str, e: PErr<'_>) -> ParseError {
    let offset = input.len().saturating_sub(e.at.len());
    let column = input.get(..offset).map_or(0, |s| s.chars().count()) + 1;
    ParseError {
        input: input.to_owned(),
        column,
        found: token_at(e.at).to_owned(),
        kind: e.kind,
    }
}

/// The token that starts `rest`, for error messages.
fn token_at(rest: &str) -> &str {
    let Some(first) = rest.chars().next() else {
        return "";
    };
    if is_key_char(first) {
        let end = rest.find(|c| !is_key_char(c)).unwrap_or(rest.len());
        return &rest[..end];
    }
    if first == '\'' || first == '"' {
        let end = rest[1..].find(first).map_or(rest.len(), |i| i + 2);
        return &rest[..end];
    }
    for op in ["&&", "||", "==", "!="] {
        if rest.starts_with(op) {
            return op;
        }
    }
    &rest[..first.len_utf8()]
}

pub(crate) fn is_key_char(c: char) -> bool {
    c.is_ascii_alphanumeric() || matches!(c, '-' | '_' | '.' | '/')
}

fn ws(i: &str) -> &str {
    let parsed: Res<'_, &str> = multispace0(i);
    parsed.map_or(i, |(rest, _)| rest)
}

/// Skips whitespace, runs `p`, and when `p` fails without consuming anything says that `what`
/// was expected there.
fn expect<'a, O>(
    what: Expected,
    mut p: impl Parser<&'a str, Output = O, Error = PErr<'a>>,
) -> impl Parser<&'a str, Output = O, Error = PErr<'a>> {
    move |i: &'a str| {
        let start = ws(i);
        p.parse(start).map_err(|err| {
            err.map(|mut e| {
                let untouched = e.at.len() == start.len();
                if untouched && matches!(e.kind, ParseErrorKind::Expected(_)) {
                    e.kind = ParseErrorKind::Expected(what);
                }
                e
            })
        })
    }
}

fn or_expr(i: &str, depth: usize) -> Res<'_, Expr> {
    let (mut i, first) = and_expr(i, depth)?;
    let mut operands = vec![first];
    while let Ok((rest, _)) = tag::<_, _, PErr<'_>>("||").parse(ws(i)) {
        let (rest, next) = cut(|i| and_expr(i, depth)).parse(rest)?;
        operands.push(next);
        i = rest;
    }
    Ok((i, collapse(operands, Expr::Or)))
}

fn and_expr(i: &str, depth: usize) -> Res<'_, Expr> {
    let (mut i, first) = unary(i, depth)?;
    let mut operands = vec![first];
    while let Ok((rest, _)) = tag::<_, _, PErr<'_>>("&&").parse(ws(i)) {
        let (rest, next) = cut(|i| unary(i, depth)).parse(rest)?;
        operands.push(next);
        i = rest;
    }
    Ok((i, collapse(operands, Expr::And)))
}

fn collapse(mut operands: Vec<Expr>, make: fn(Vec<Expr>) -> Expr) -> Expr {
    match operands.pop() {
        Some(only) if operands.is_empty() => only,
        Some(last) => {
            operands.push(last);
            make(operands)
        }
        None => Expr::All,
    }
}

fn unary(i: &str, depth: usize) -> Res<'_, Expr> {
    let mut i = ws(i);
    let mut bangs = 0usize;
    while let Ok((rest, _)) = char::<_, PErr<'_>>('!').parse(i) {
        bangs += 1;
        i = ws(rest);
    }
    let (rest, expr) = if bangs == 0 {
        primary(i, depth)?
    } else {
        cut(|i| primary(i, depth)).parse(i)?
    };
    // Calico folds a run of `!` into one negation or none.
    let expr = if bangs % 2 == 1 {
        Expr::Not(Box::new(expr))
    } else {
        expr
    };
    Ok((rest, expr))
}

fn primary(i: &str, depth: usize) -> Res<'_, Expr> {
    expect(
        Expected::Expression,
        alt((
            |i| parenthesised(i, depth),
            |i| nullary(i, "all", Expr::All),
            |i| nullary(i, "global", Expr::Global),
            has,
            comparison,
        )),
    )
    .parse(i)
}

fn parenthesised(i: &str, depth: usize) -> Res<'_, Expr> {
    let (rest, _) = char('(').parse(i)?;
    if depth + 1 > MAX_NESTING {
        return Err(nom::Err::Failure(PErr {
            at: i,
            kind: ParseErrorKind::TooDeep { limit: MAX_NESTING },
        }));
    }
    let (rest, expr) = cut(|i| or_expr(i, depth + 1)).parse(rest)?;
    let (rest, _) = cut(expect(Expected::AndOrCloseParen, char(')'))).parse(rest)?;
    Ok((rest, expr))
}

/// `all()` and `global()`; committed once the `(` is seen.
fn nullary<'a>(i: &'a str, word: &'static str, expr: Expr) -> Res<'a, Expr> {
    let (rest, _) = (tag(word), expect(Expected::OpenParen, char('('))).parse(i)?;
    let (rest, _) = cut(expect(Expected::CloseParen, char(')'))).parse(rest)?;
    Ok((rest, expr))
}

fn has(i: &str) -> Res<'_, Expr> {
    let (rest, _) = (tag("has"), expect(Expected::OpenParen, char('('))).parse(i)?;
    let (rest, key) = cut(expect(Expected::LabelKey, key)).parse(rest)?;
    let (rest, _) = cut(expect(Expected::CloseParen, char(')'))).parse(rest)?;
    Ok((rest, Expr::Has(key.to_owned())))
}

fn key(i: &str) -> Res<'_, &str> {
    take_while1(is_key_char).parse(i)
}

fn comparison(i: &str) -> Res<'_, Expr> {
    let (rest, key) = key(i)?;
    let key = key.to_owned();
    let (rest, op) = cut(expect(
        Expected::Operator,
        alt((
            |i| value_op(i, "==", Op::Eq),
            |i| value_op(i, "!=", Op::Ne),
            |i| value_op(i, "contains", Op::Contains),
            |i| two_word_value_op(i, "starts", Op::StartsWith),
            |i| two_word_value_op(i, "ends", Op::EndsWith),
            |i| set_op(i, true),
            |i| set_op(i, false),
        )),
    ))
    .parse(rest)?;
    let expr = match op {
        Op::Eq(value) => Expr::Eq { key, value },
        Op::Ne(value) => Expr::Ne { key, value },
        Op::Contains(value) => Expr::Contains { key, value },
        Op::StartsWith(value) => Expr::StartsWith { key, value },
        Op::EndsWith(value) => Expr::EndsWith { key, value },
        Op::In(values) => Expr::In { key, values },
        Op::NotIn(values) => Expr::NotIn { key, values },
    };
    Ok((rest, expr))
}

enum Op {
    Eq(String),
    Ne(String),
    Contains(String),
    StartsWith(String),
    EndsWith(String),
    In(BTreeSet<String>),
    NotIn(BTreeSet<String>),
}

fn value_op<'a>(i: &'a str, word: &'static str, make: fn(String) -> Op) -> Res<'a, Op> {
    let (rest, _) = tag(word).parse(i)?;
    let (rest, value) = cut(expect(Expected::String, string)).parse(rest)?;
    Ok((rest, make(value.to_owned())))
}

/// `starts with` and `ends with`.
fn two_word_value_op<'a>(i: &'a str, first: &'static str, make: fn(String) -> Op) -> Res<'a, Op> {
    let (rest, _) = tag(first).parse(i)?;
    let (rest, _) = cut(expect(Expected::With, tag("with"))).parse(rest)?;
    let (rest, value) = cut(expect(Expected::String, string)).parse(rest)?;
    Ok((rest, make(value.to_owned())))
}

fn set_op(i: &str, negated: bool) -> Res<'_, Op> {
    let rest = if negated {
        let (rest, _) = tag("not").parse(i)?;
        cut(expect(Expected::In, tag("in"))).parse(rest)?.0
    } else {
        tag("in").parse(i)?.0
    };
    let (rest, values) = cut(expect(Expected::SetLiteral, set)).parse(rest)?;
    Ok((
        rest,
        if negated {
            Op::NotIn(values)
        } else {
            Op::In(values)
        },
    ))
}

fn set(i: &str) -> Res<'_, BTreeSet<String>> {
    let (mut i, _) = char('{').parse(i)?;
    let mut values = BTreeSet::new();
    loop {
        // Calico accepts `{}` and a trailing comma, but not `{,}`.
        if let Ok((rest, _)) = char::<_, PErr<'_>>('}').parse(ws(i)) {
            return Ok((rest, values));
        }
        let (rest, value) = cut(expect(Expected::StringOrCloseBrace, string)).parse(i)?;
        values.insert(value.to_owned());
        let (rest, sep) = cut(expect(
            Expected::CommaOrCloseBrace,
            alt((char(','), char('}'))),
        ))
        .parse(rest)?;
        if sep == '}' {
            return Ok((rest, values));
        }
        i = rest;
    }
}

/// A literal in single or double quotes; no escapes, as in Calico.
fn string(i: &str) -> Res<'_, &str> {
    let (rest, quote) = alt((char('\''), char('"'))).parse(i)?;
    match rest.find(quote) {
        Some(end) => Ok((&rest[end + 1..], &rest[..end])),
        None => Err(nom::Err::Failure(PErr {
            at: i,
            kind: ParseErrorKind::UnterminatedString,
        })),
    }
}
