//! Errors: [`ParseError`] for selector text, [`InvalidExpr`] for hand-built expressions.

use std::fmt;

/// What the parser was looking for where it stopped.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, thiserror::Error)]
#[non_exhaustive]
pub enum Expected {
    /// The start of an operand: a label key, `has(`, `all()`, `global()`, `!` or `(`.
    #[error("a label key, has(...), all(), global(), \"!\" or \"(\"")]
    Expression,
    /// A label key (letters, digits, `-`, `_`, `.`, `/`), as inside `has(...)`.
    #[error("a label key")]
    LabelKey,
    /// A comparison operator after a label key.
    #[error("an operator (==, !=, in, not in, contains, starts with, ends with)")]
    Operator,
    /// The word `with` after `starts` or `ends`.
    #[error("\"with\"")]
    With,
    /// The word `in` after `not`.
    #[error("\"in\"")]
    In,
    /// A string literal in single or double quotes.
    #[error("a quoted string")]
    String,
    /// The `{` that opens a set literal after `in` or `not in`.
    #[error("a set literal such as {{'a', 'b'}}")]
    SetLiteral,
    /// A set element or the `}` that closes the set.
    #[error("a quoted string or \"}}\"")]
    StringOrCloseBrace,
    /// The separator between set elements or the `}` that closes the set.
    #[error("\",\" or \"}}\"")]
    CommaOrCloseBrace,
    /// The `(` of `has(`, `all(` or `global(`.
    #[error("\"(\"")]
    OpenParen,
    /// The `)` that closes `has(...)`, `all()` or `global()`.
    #[error("\")\"")]
    CloseParen,
    /// More of a parenthesised expression, or its closing `)`.
    #[error("\"&&\", \"||\" or \")\"")]
    AndOrCloseParen,
    /// More of the expression, or the end of the selector.
    #[error("\"&&\", \"||\" or the end of the selector")]
    AndOrEnd,
}

/// Why a selector string was rejected.
#[derive(Debug, Clone, PartialEq, Eq, Hash, thiserror::Error)]
#[non_exhaustive]
pub enum ParseErrorKind {
    /// The grammar does not allow the token found at this point.
    #[error("expected {0}")]
    Expected(Expected),
    /// A string literal has no closing quote.
    #[error("unterminated string literal")]
    UnterminatedString,
    /// Parentheses nest deeper than [`MAX_NESTING`](crate::MAX_NESTING) levels.
    #[error("parentheses nest deeper than {limit} levels")]
    TooDeep {
        /// The nesting limit.
        limit: usize,
    },
}

/// A selector string that does not parse.
///
/// [`message`](Self::message) is one line, such as
/// `unexpected "&" at column 12: expected a label key, ...`; `Display` adds the selector and a
/// caret under the offending column:
///
/// ```text
/// unexpected "&" at column 12: expected a label key, has(...), all(), global(), "!" or "("
///   a == 'b' && & c
///              ^
/// ```
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct ParseError {
    pub(crate) input: String,
    pub(crate) column: usize,
    pub(crate) found: String,
    pub(crate) kind: ParseErrorKind,
}

impl ParseError {
    /// The 1-based position, in characters, of the offending token.
    pub fn column(&self) -> usize {
        self.column
    }

    /// The offending token's text; empty when the selector ended too early.
    pub fn found(&self) -> &str {
        &self.found
    }

    /// What went wrong.
    pub fn kind(&self) -> &ParseErrorKind {
        &self.kind
    }

    /// The selector text that failed to parse.
    pub fn input(&self) -> &str {
        &self.input
    }

    /// The error on one line, without the caret diagram.
    pub fn message(&self) -> String {
        let column = self.column;
        match &self.kind {
            ParseErrorKind::Expected(_) if self.found.is_empty() => {
                format!(
                    "unexpected end of selector at column {column}: {}",
                    self.kind
                )
            }
            ParseErrorKind::Expected(_) => {
                format!(
                    "unexpected {:?} at column {column}: {}",
                    self.found, self.kind
                )
            }
            ParseErrorKind::UnterminatedString | ParseErrorKind::TooDeep { .. } => {
                format!("{} at column {column}", self.kind)
            }
        }
    }
}

impl fmt::Display for ParseError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        // Control characters would break the alignment of the caret; show them as spaces.
        let line: String = self
            .input
            .chars()
            .map(|c| if c.is_control() { ' ' } else { c })
            .collect();
        let pad = " ".repeat(self.column.saturating_sub(1));
        write!(f, "{}\n  {line}\n  {pad}^", self.message())
    }
}

impl std::error::Error for ParseError {}

/// A hand-built [`Expr`](crate::Expr) that no selector string could express, so it cannot be
/// a [`Selector`](crate::Selector) (whose text must parse back to the same expression).
#[derive(Debug, Clone, PartialEq, Eq, Hash, thiserror::Error)]
#[non_exhaustive]
pub enum InvalidExpr {
    /// A label key is empty or has a character outside `A-Z a-z 0-9 - _ . /`.
    #[error("invalid label key {0:?}: keys are one or more of A-Z a-z 0-9 - _ . /")]
    Key(String),
    /// A value contains both quote characters; selector strings have no escapes.
    #[error("value {0:?} contains both ' and \", which no selector string can quote")]
    Unquotable(String),
    /// An `And` or `Or` with fewer than two operands.
    #[error("{op} needs at least two operands, found {found}")]
    TooFewOperands {
        /// `&&` or `||`.
        op: &'static str,
        /// How many operands there were.
        found: usize,
    },
    /// The expression would print with parentheses nested deeper than the parser accepts.
    #[error("parentheses would nest deeper than {limit} levels")]
    TooDeep {
        /// The nesting limit.
        limit: usize,
    },
}
