//! tabby-selector: Calico's label selector language.
//!
//! One parser and evaluator for every selector tabby reads: the datastore validates
//! `NetworkPolicy`, `GlobalNetworkPolicy` and `BGPPeer` (`nodeSelector`, `peerSelector`)
//! selectors with it, the node agent's calc evaluates them, and the ACL compiler walks the
//! [`Expr`] tree to build its IP sets.
//!
//! ```
//! use std::collections::BTreeMap;
//! use tabby_selector::Selector;
//!
//! let sel = Selector::parse("role in {'frontend', 'api'} && !has(canary)")?;
//! let pod = BTreeMap::from([("role".to_owned(), "api".to_owned())]);
//! assert!(sel.matches(&pod));
//! // The canonical text is Calico's, and parses back to the same selector.
//! assert_eq!(sel.to_string(), r#"(role in {"api", "frontend"} && !has(canary))"#);
//! # Ok::<(), tabby_selector::ParseError>(())
//! ```
//!
//! Semantics are Calico's (libcalico-go `selector/parser`): `k != 'v'` and `k not in {..}`
//! match when `k` is absent; `==`, `in`, `contains`, `starts with` and `ends with` need `k`
//! present; an empty selector is `all()`. See `docs/selectors.md` for the user-facing syntax.

#![warn(missing_docs)]

mod ast;
mod error;
mod labels;
mod parser;

use std::collections::BTreeSet;
use std::fmt;
use std::str::FromStr;

pub use ast::{Expr, Scope};
pub use error::{Expected, InvalidExpr, ParseError, ParseErrorKind};
pub use labels::{Labels, Layered, Prefixed, NAMESPACE_LABEL, NAMESPACE_LABEL_PREFIX, NAME_LABEL};

/// The deepest nesting of parentheses the parser accepts. Calico has no limit; real selectors
/// nest a few levels, and the bound keeps parsing, matching and dropping off deep recursion.
pub const MAX_NESTING: usize = 100;

/// Whether `key` is a valid label key in a selector: one or more of `A-Z a-z 0-9 - _ . /`
/// (Calico's `[a-zA-Z0-9_./-]`).
pub fn is_valid_key(key: &str) -> bool {
    !key.is_empty() && key.chars().all(parser::is_key_char)
}

/// A parsed label selector.
///
/// Its text ([`Display`](fmt::Display)) is canonical and parses back to an equal selector; it
/// serializes as that text and deserializes by parsing. Equality and hashing are structural,
/// so `a == 'b'` and `a=="b"` are equal, and `{'y','x'}` equals `{'x','y'}`.
#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct Selector {
    expr: Expr,
}

impl Default for Selector {
    /// `all()`.
    fn default() -> Self {
        Selector { expr: Expr::All }
    }
}

impl Selector {
    /// Parses selector text. Empty or blank text is `all()`, as in most Calico fields.
    pub fn parse(text: &str) -> Result<Selector, ParseError> {
        parser::parse(text).map(|expr| Selector { expr })
    }

    /// A selector from a hand-built expression, if some selector text expresses it.
    pub fn new(expr: Expr) -> Result<Selector, InvalidExpr> {
        expr.validate()?;
        Ok(Selector { expr })
    }

    /// `all()`.
    pub fn all() -> Selector {
        Selector::default()
    }

    /// The expression tree.
    pub fn expr(&self) -> &Expr {
        &self.expr
    }

    /// The expression tree, by value.
    pub fn into_expr(self) -> Expr {
        self.expr
    }

    /// Whether this is exactly `all()` (as the empty selector is).
    pub fn is_all(&self) -> bool {
        self.expr == Expr::All
    }

    /// Every label key the selector tests, sorted.
    pub fn label_keys(&self) -> BTreeSet<&str> {
        let mut keys = BTreeSet::new();
        self.expr.walk(&mut |e| {
            if let Some(key) = e.key() {
                keys.insert(key);
            }
        });
        keys
    }

    /// Whether the labels match, evaluated as Calico's evaluator does: `global()` matches
    /// anything, like `all()`. Use [`matches_in`](Self::matches_in) where it matters whether
    /// the labelled entity is namespaced.
    pub fn matches<L: Labels + ?Sized>(&self, labels: &L) -> bool {
        self.expr.eval(labels, true)
    }

    /// Whether the labels of an entity in `scope` match: `global()` matches only
    /// [`Scope::Global`] entities (host endpoints, global network sets, nodes).
    pub fn matches_in<L: Labels + ?Sized>(&self, labels: &L, scope: Scope) -> bool {
        self.expr.eval(labels, scope == Scope::Global)
    }

    /// This selector with `prefix` before every label key (Calico's `PrefixVisitor`), or an
    /// error when `prefix` has characters a key cannot have.
    pub fn with_key_prefix(&self, prefix: &str) -> Result<Selector, InvalidExpr> {
        Selector::new(self.expr.clone().prefix_keys(prefix))
    }

    /// Rewrites a policy rule's `namespaceSelector` into a selector over endpoint labels, as
    /// Calico's rule conversion does (libcalico-go `updateprocessors/rules.go`): every key gets
    /// the `pcns.` prefix, `all()` becomes `has(projectcalico.org/namespace)` (any namespaced
    /// endpoint) and `global()` becomes `!has(projectcalico.org/namespace)` (only
    /// non-namespaced ones). Evaluate the result against endpoint labels layered over their
    /// namespace's labels under `pcns.` (see [`Layered`] and [`Prefixed`]).
    pub fn namespace_selector_for_endpoints(&self) -> Selector {
        fn rewrite(e: Expr) -> Expr {
            let namespaced = || Expr::Has(NAMESPACE_LABEL.to_owned());
            match e {
                Expr::All => namespaced(),
                Expr::Global => Expr::Not(Box::new(namespaced())),
                // Calico's text substitution turns `!global()` into `!!has(..)`, which its
                // parser folds to `has(..)`.
                Expr::Not(inner) if *inner == Expr::Global => namespaced(),
                Expr::Not(inner) => Expr::Not(Box::new(rewrite(*inner))),
                Expr::And(operands) => Expr::And(operands.into_iter().map(rewrite).collect()),
                Expr::Or(operands) => Expr::Or(operands.into_iter().map(rewrite).collect()),
                leaf => leaf,
            }
        }
        // Still valid: the prefix is made of key characters, values are untouched, and no
        // rewrite adds a `!` under a `!`, so the text nests no deeper than before.
        Selector {
            expr: rewrite(self.expr.clone().prefix_keys(NAMESPACE_LABEL_PREFIX)),
        }
    }
}

impl fmt::Display for Selector {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        self.expr.write_canonical(f)
    }
}

impl FromStr for Selector {
    type Err = ParseError;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        Selector::parse(s)
    }
}

impl TryFrom<Expr> for Selector {
    type Error = InvalidExpr;

    fn try_from(expr: Expr) -> Result<Self, Self::Error> {
        Selector::new(expr)
    }
}

impl serde::Serialize for Selector {
    fn serialize<S: serde::Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        serializer.collect_str(self)
    }
}

impl<'de> serde::Deserialize<'de> for Selector {
    fn deserialize<D: serde::Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        let text = std::borrow::Cow::<'de, str>::deserialize(deserializer)?;
        Selector::parse(&text).map_err(serde::de::Error::custom)
    }
}
