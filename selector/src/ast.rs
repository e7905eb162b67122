//! The expression tree, its evaluation and its canonical text.

use std::collections::BTreeSet;
use std::fmt::{self, Write};

use crate::error::InvalidExpr;
use crate::labels::Labels;
use crate::MAX_NESTING;

/// A parsed selector expression.
///
/// `And` and `Or` are n-ary, as in Calico: `a && b && c` is one `And` of three operands, while
/// `(a && b) && c` keeps the inner `And` as an operand. A run of `!` collapses as Calico's parser
/// collapses it (`!!has(a)` is `has(a)`), but `!(!has(a))` keeps both negations.
#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum Expr {
    /// `all()`: matches everything in scope.
    All,
    /// `global()`: matches non-namespaced entities; see [`Scope`].
    Global,
    /// `has(key)`: the label is present, whatever its value.
    Has(String),
    /// `key == 'value'`: present with exactly this value.
    Eq {
        /// The label key.
        key: String,
        /// The value compared with.
        value: String,
    },
    /// `key != 'value'`: absent, or present with another value.
    Ne {
        /// The label key.
        key: String,
        /// The value compared with.
        value: String,
    },
    /// `key in {'a', 'b'}`: present with one of the values.
    In {
        /// The label key.
        key: String,
        /// The set; Calico keeps it sorted and without duplicates, and so does a `BTreeSet`.
        values: BTreeSet<String>,
    },
    /// `key not in {'a', 'b'}`: absent, or present with a value outside the set.
    NotIn {
        /// The label key.
        key: String,
        /// The set.
        values: BTreeSet<String>,
    },
    /// `key contains 's'`: present with a value containing the substring.
    Contains {
        /// The label key.
        key: String,
        /// The substring.
        value: String,
    },
    /// `key starts with 's'`: present with a value that has this prefix.
    StartsWith {
        /// The label key.
        key: String,
        /// The prefix.
        value: String,
    },
    /// `key ends with 's'`: present with a value that has this suffix.
    EndsWith {
        /// The label key.
        key: String,
        /// The suffix.
        value: String,
    },
    /// `!expr`.
    Not(Box<Expr>),
    /// `a && b && ...`: at least two operands.
    And(Vec<Expr>),
    /// `a || b || ...`: at least two operands.
    Or(Vec<Expr>),
}

/// Whether the labels being matched belong to a namespaced entity; decides `global()`.
///
/// Calico: "The `global()` operator can be used (only) in a `namespaceSelector` to change the
/// scope of the main `selector` to include non-namespaced resources such as GlobalNetworkSet".
/// Workload endpoints (pods) are [`Namespaced`](Scope::Namespaced); host endpoints, global
/// network sets and nodes are [`Global`](Scope::Global).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Scope {
    /// The entity lives in a namespace: `global()` does not match.
    Namespaced,
    /// The entity is cluster-wide: `global()` matches.
    Global,
}

impl Expr {
    /// Evaluates the expression; `global()` matches when `global_matches`.
    pub(crate) fn eval<L: Labels + ?Sized>(&self, labels: &L, global_matches: bool) -> bool {
        match self {
            Expr::All => true,
            Expr::Global => global_matches,
            Expr::Has(key) => labels.get(key).is_some(),
            Expr::Eq { key, value } => labels.get(key) == Some(value.as_str()),
            Expr::Ne { key, value } => labels.get(key) != Some(value.as_str()),
            Expr::In { key, values } => labels.get(key).is_some_and(|v| values.contains(v)),
            Expr::NotIn { key, values } => !labels.get(key).is_some_and(|v| values.contains(v)),
            Expr::Contains { key, value } => labels.get(key).is_some_and(|v| v.contains(&**value)),
            Expr::StartsWith { key, value } => {
                labels.get(key).is_some_and(|v| v.starts_with(&**value))
            }
            Expr::EndsWith { key, value } => labels.get(key).is_some_and(|v| v.ends_with(&**value)),
            Expr::Not(inner) => !inner.eval(labels, global_matches),
            Expr::And(operands) => operands.iter().all(|e| e.eval(labels, global_matches)),
            Expr::Or(operands) => operands.iter().any(|e| e.eval(labels, global_matches)),
        }
    }

    /// The label key this node tests, if it is a label test.
    pub fn key(&self) -> Option<&str> {
        match self {
            Expr::Has(key)
            | Expr::Eq { key, .. }
            | Expr::Ne { key, .. }
            | Expr::In { key, .. }
            | Expr::NotIn { key, .. }
            | Expr::Contains { key, .. }
            | Expr::StartsWith { key, .. }
            | Expr::EndsWith { key, .. } => Some(key),
            Expr::All | Expr::Global | Expr::Not(_) | Expr::And(_) | Expr::Or(_) => None,
        }
    }

    fn key_mut(&mut self) -> Option<&mut String> {
        match self {
            Expr::Has(key)
            | Expr::Eq { key, .. }
            | Expr::Ne { key, .. }
            | Expr::In { key, .. }
            | Expr::NotIn { key, .. }
            | Expr::Contains { key, .. }
            | Expr::StartsWith { key, .. }
            | Expr::EndsWith { key, .. } => Some(key),
            Expr::All | Expr::Global | Expr::Not(_) | Expr::And(_) | Expr::Or(_) => None,
        }
    }

    /// The direct operands of `!`, `&&` and `||`; empty for leaves.
    pub fn children(&self) -> &[Expr] {
        match self {
            Expr::Not(inner) => std::slice::from_ref(&**inner),
            Expr::And(operands) | Expr::Or(operands) => operands,
            _ => &[],
        }
    }

    /// Calls `f` on this node and every node below it, parents first.
    pub fn walk<'a>(&'a self, f: &mut impl FnMut(&'a Expr)) {
        f(self);
        for child in self.children() {
            child.walk(f);
        }
    }

    /// Rewrites every node bottom-up with `f`.
    pub(crate) fn map(self, f: &mut impl FnMut(Expr) -> Expr) -> Expr {
        let mapped = match self {
            Expr::Not(inner) => Expr::Not(Box::new(inner.map(f))),
            Expr::And(operands) => Expr::And(operands.into_iter().map(|e| e.map(f)).collect()),
            Expr::Or(operands) => Expr::Or(operands.into_iter().map(|e| e.map(f)).collect()),
            leaf => leaf,
        };
        f(mapped)
    }

    /// Prefixes every label key with `prefix`.
    pub(crate) fn prefix_keys(self, prefix: &str) -> Expr {
        self.map(&mut |mut e| {
            if let Some(key) = e.key_mut() {
                key.insert_str(0, prefix);
            }
            e
        })
    }

    /// Checks that the canonical text of this expression parses back to it.
    pub(crate) fn validate(&self) -> Result<(), InvalidExpr> {
        let mut result = Ok(());
        self.walk(&mut |e| {
            if result.is_err() {
                return;
            }
            result = validate_node(e);
        });
        result?;
        if self.paren_depth() > MAX_NESTING {
            return Err(InvalidExpr::TooDeep { limit: MAX_NESTING });
        }
        Ok(())
    }

    /// How deeply the canonical text nests parentheses.
    fn paren_depth(&self) -> usize {
        match self {
            Expr::And(operands) | Expr::Or(operands) => {
                1 + operands.iter().map(Expr::paren_depth).max().unwrap_or(0)
            }
            Expr::Not(inner) if matches!(**inner, Expr::Not(_)) => 1 + inner.paren_depth(),
            Expr::Not(inner) => inner.paren_depth(),
            _ => 0,
        }
    }

    /// Writes Calico's canonical text: `(a && b)` and `(a || b)` always parenthesised, values in
    /// double quotes unless they contain one, sets sorted, single spaces around operators.
    pub(crate) fn write_canonical(&self, out: &mut impl Write) -> fmt::Result {
        match self {
            Expr::All => out.write_str("all()"),
            Expr::Global => out.write_str("global()"),
            Expr::Has(key) => write!(out, "has({key})"),
            Expr::Eq { key, value } => write_op(out, key, "==", value),
            Expr::Ne { key, value } => write_op(out, key, "!=", value),
            Expr::Contains { key, value } => write_op(out, key, "contains", value),
            Expr::StartsWith { key, value } => write_op(out, key, "starts with", value),
            Expr::EndsWith { key, value } => write_op(out, key, "ends with", value),
            Expr::In { key, values } => write_set(out, key, "in", values),
            Expr::NotIn { key, values } => write_set(out, key, "not in", values),
            Expr::Not(inner) => {
                out.write_char('!')?;
                // `!!x` would parse back as `x` (a run of `!` collapses), so the inner
                // negation keeps parentheses.
                if matches!(**inner, Expr::Not(_)) {
                    out.write_char('(')?;
                    inner.write_canonical(out)?;
                    out.write_char(')')
                } else {
                    inner.write_canonical(out)
                }
            }
            Expr::And(operands) => write_list(out, operands, " && "),
            Expr::Or(operands) => write_list(out, operands, " || "),
        }
    }
}

fn validate_node(e: &Expr) -> Result<(), InvalidExpr> {
    if let Some(key) = e.key() {
        if !crate::is_valid_key(key) {
            return Err(InvalidExpr::Key(key.to_owned()));
        }
    }
    let check_value = |v: &str| {
        if v.contains('\'') && v.contains('"') {
            Err(InvalidExpr::Unquotable(v.to_owned()))
        } else {
            Ok(())
        }
    };
    match e {
        Expr::Eq { value, .. }
        | Expr::Ne { value, .. }
        | Expr::Contains { value, .. }
        | Expr::StartsWith { value, .. }
        | Expr::EndsWith { value, .. } => check_value(value),
        Expr::In { values, .. } | Expr::NotIn { values, .. } => {
            values.iter().try_for_each(|v| check_value(v))
        }
        Expr::And(operands) if operands.len() < 2 => Err(InvalidExpr::TooFewOperands {
            op: "&&",
            found: operands.len(),
        }),
        Expr::Or(operands) if operands.len() < 2 => Err(InvalidExpr::TooFewOperands {
            op: "||",
            found: operands.len(),
        }),
        _ => Ok(()),
    }
}

fn write_quoted(out: &mut impl Write, value: &str) -> fmt::Result {
    let quote = if value.contains('"') { '\'' } else { '"' };
    out.write_char(quote)?;
    out.write_str(value)?;
    out.write_char(quote)
}

fn write_op(out: &mut impl Write, key: &str, op: &str, value: &str) -> fmt::Result {
    write!(out, "{key} {op} ")?;
    write_quoted(out, value)
}

fn write_set(out: &mut impl Write, key: &str, op: &str, values: &BTreeSet<String>) -> fmt::Result {
    write!(out, "{key} {op} {{")?;
    for (i, value) in values.iter().enumerate() {
        if i > 0 {
            out.write_str(", ")?;
        }
        write_quoted(out, value)?;
    }
    out.write_char('}')
}

fn write_list(out: &mut impl Write, operands: &[Expr], sep: &str) -> fmt::Result {
    out.write_char('(')?;
    for (i, e) in operands.iter().enumerate() {
        if i > 0 {
            out.write_str(sep)?;
        }
        e.write_canonical(out)?;
    }
    out.write_char(')')
}
