//! Parsing: one test per construct and per precedence rule, and Calico's canonical text.

use std::collections::BTreeSet;

use tabby_selector::{Expr, Selector};

fn parse(text: &str) -> Expr {
    Selector::parse(text)
        .unwrap_or_else(|e| panic!("{text:?} should parse:\n{e}"))
        .into_expr()
}

fn has(key: &str) -> Expr {
    Expr::Has(key.to_owned())
}

fn eq(key: &str, value: &str) -> Expr {
    Expr::Eq {
        key: key.to_owned(),
        value: value.to_owned(),
    }
}

fn not(e: Expr) -> Expr {
    Expr::Not(Box::new(e))
}

fn set(values: &[&str]) -> BTreeSet<String> {
    values.iter().map(|v| (*v).to_owned()).collect()
}

#[test]
fn empty_selector_is_all() {
    assert_eq!(Selector::parse("").unwrap(), Selector::all());
}

#[test]
fn blank_selector_is_all() {
    assert_eq!(parse(" \t\n "), Expr::All);
}

#[test]
fn all_parses() {
    assert_eq!(parse("all()"), Expr::All);
}

#[test]
fn global_parses() {
    assert_eq!(parse("global()"), Expr::Global);
}

#[test]
fn has_parses_with_its_key() {
    assert_eq!(
        parse("has(projectcalico.org/namespace)"),
        has("projectcalico.org/namespace")
    );
}

#[test]
fn negated_has_parses_as_not_has() {
    assert_eq!(parse("!has(a)"), not(has("a")));
}

#[test]
fn equality_parses() {
    assert_eq!(parse("a == 'b'"), eq("a", "b"));
}

#[test]
fn inequality_parses() {
    assert_eq!(
        parse("a != 'b'"),
        Expr::Ne {
            key: "a".into(),
            value: "b".into()
        }
    );
}

#[test]
fn in_parses_to_a_sorted_deduplicated_set() {
    assert_eq!(
        parse("a in {'z', 'x', 'z'}"),
        Expr::In {
            key: "a".into(),
            values: set(&["x", "z"])
        }
    );
}

#[test]
fn not_in_parses() {
    assert_eq!(
        parse("a not in {'x'}"),
        Expr::NotIn {
            key: "a".into(),
            values: set(&["x"])
        }
    );
}

#[test]
fn empty_set_parses() {
    assert_eq!(
        parse("a in {}"),
        Expr::In {
            key: "a".into(),
            values: set(&[])
        }
    );
}

#[test]
fn trailing_comma_in_a_set_is_accepted_as_calico_does() {
    assert_eq!(parse("a in {'x',}"), parse("a in {'x'}"));
}

#[test]
fn contains_parses() {
    assert_eq!(
        parse("a contains 'x'"),
        Expr::Contains {
            key: "a".into(),
            value: "x".into()
        }
    );
}

#[test]
fn starts_with_parses() {
    assert_eq!(
        parse("a starts with 'x'"),
        Expr::StartsWith {
            key: "a".into(),
            value: "x".into()
        }
    );
}

#[test]
fn ends_with_parses() {
    assert_eq!(
        parse("a ends with 'x'"),
        Expr::EndsWith {
            key: "a".into(),
            value: "x".into()
        }
    );
}

#[test]
fn double_quoted_strings_equal_single_quoted_ones() {
    assert_eq!(parse(r#"a == "b""#), parse("a == 'b'"));
}

#[test]
fn a_string_may_hold_the_other_quote() {
    assert_eq!(parse(r#"a == "it's""#), eq("a", "it's"));
}

#[test]
fn strings_may_hold_any_unicode() {
    assert_eq!(parse("a == 'ünï cødé ✓'"), eq("a", "ünï cødé ✓"));
}

#[test]
fn keys_may_use_letters_digits_dash_underscore_dot_and_slash() {
    assert_eq!(parse("has(A-z_0.9/x)"), has("A-z_0.9/x"));
}

#[test]
fn keys_named_like_keywords_are_labels() {
    assert_eq!(
        parse("all == 'x' && has == 'y'"),
        Expr::And(vec![eq("all", "x"), eq("has", "y")])
    );
}

#[test]
fn whitespace_is_optional_between_tokens() {
    assert_eq!(
        parse("a=='b'&&has(c)"),
        Expr::And(vec![eq("a", "b"), has("c")])
    );
}

#[test]
fn whitespace_is_allowed_inside_calls_and_between_words() {
    assert_eq!(
        parse("has ( a ) && all ( ) && b starts  with 'x'"),
        parse("has(a) && all() && b starts with 'x'")
    );
}

#[test]
fn calicos_unspaced_operator_words_are_accepted() {
    assert_eq!(
        parse("a startswith 'x' && b notin {}"),
        parse("a starts with 'x' && b not in {}")
    );
}

#[test]
fn newlines_count_as_whitespace() {
    assert_eq!(
        parse("has(a)\n&&\r\nhas(b)"),
        Expr::And(vec![has("a"), has("b")])
    );
}

#[test]
fn and_chains_are_one_nary_node() {
    assert_eq!(
        parse("has(a) && has(b) && has(c)"),
        Expr::And(vec![has("a"), has("b"), has("c")])
    );
}

#[test]
fn or_chains_are_one_nary_node() {
    assert_eq!(
        parse("has(a) || has(b) || has(c)"),
        Expr::Or(vec![has("a"), has("b"), has("c")])
    );
}

#[test]
fn and_binds_tighter_than_or() {
    assert_eq!(
        parse("has(a) || has(b) && has(c)"),
        Expr::Or(vec![has("a"), Expr::And(vec![has("b"), has("c")])])
    );
}

#[test]
fn not_binds_tighter_than_and() {
    assert_eq!(
        parse("!has(a) && has(b)"),
        Expr::And(vec![not(has("a")), has("b")])
    );
}

#[test]
fn not_applies_to_a_whole_comparison() {
    assert_eq!(parse("!a == 'b'"), not(eq("a", "b")));
}

#[test]
fn parentheses_override_precedence() {
    assert_eq!(
        parse("(has(a) || has(b)) && has(c)"),
        Expr::And(vec![Expr::Or(vec![has("a"), has("b")]), has("c")])
    );
}

#[test]
fn parenthesised_and_stays_a_separate_operand() {
    assert_eq!(
        parse("(has(a) && has(b)) && has(c)"),
        Expr::And(vec![Expr::And(vec![has("a"), has("b")]), has("c")])
    );
}

#[test]
fn redundant_parentheses_vanish() {
    assert_eq!(parse("((has(a)))"), has("a"));
}

#[test]
fn an_even_run_of_bangs_cancels_as_in_calico() {
    assert_eq!(parse("!! has(a)"), has("a"));
}

#[test]
fn an_odd_run_of_bangs_is_one_negation() {
    assert_eq!(parse("! !! has(a)"), not(has("a")));
}

#[test]
fn a_negation_inside_parentheses_is_kept() {
    assert_eq!(parse("!(!has(a))"), not(not(has("a"))));
}

#[test]
fn calicos_documented_precedence_example_brackets_as_documented() {
    let documented =
        "! has(my-label) || my-label starts with 'prod' && role in {'frontend','business'}";
    let bracketed =
        "((!(has(my-label))) || ((my-label starts with 'prod') && (role in {'frontend','business'})))";
    assert_eq!(parse(documented), parse(bracketed));
}

#[test]
fn nesting_up_to_the_limit_parses() {
    let depth = tabby_selector::MAX_NESTING;
    let text = format!("{}has(a){}", "(".repeat(depth), ")".repeat(depth));
    assert_eq!(parse(&text), has("a"));
}

#[test]
fn canonical_text_matches_calicos() {
    // Calico's own canonicalisation table (libcalico-go selector/parser/parser_test.go).
    let cases = [
        ("", "all()"),
        (" all() ", "all()"),
        (" (all() )", "all()"),
        ("! (has( b)||! has(a ))", "!(has(b) || !has(a))"),
        (r#"! (a == "b"&&! c != "d")"#, r#"!(a == "b" && !c != "d")"#),
        (r#"a == "'""#, r#"a == "'""#),
        (r#"a == '"'"#, r#"a == '"'"#),
        (r#"a contains '"'"#, r#"a contains '"'"#),
        (r#"a contains "'""#, r#"a contains "'""#),
        (r#"a startswith '"'"#, r#"a starts with '"'"#),
        (r#"a endswith "'""#, r#"a ends with "'""#),
        (r#"a!='"'"#, r#"a != '"'"#),
        (r#"a in {"d"}"#, r#"a in {"d"}"#),
        (r#"a in {"a", "b"}"#, r#"a in {"a", "b"}"#),
        (r#"a in {"d", "a", "b"}"#, r#"a in {"a", "b", "d"}"#),
        (
            r#"a in {"z", "z", "x", "y", "x", "a"}"#,
            r#"a in {"a", "x", "y", "z"}"#,
        ),
        ("k == 'v' && x == 'y'", r#"(k == "v" && x == "y")"#),
        ("k == 'v' || has(x)", r#"(k == "v" || has(x))"#),
        ("!(k == 'v')", r#"!k == "v""#),
        (
            "!(!(k == 'v' && has(t) || all()) && (a in {'b', 'c'}))",
            r#"!(!((k == "v" && has(t)) || all()) && a in {"b", "c"})"#,
        ),
    ];
    for (input, canonical) in cases {
        let sel = Selector::parse(input).unwrap();
        assert_eq!(sel.to_string(), canonical, "canonical text of {input:?}");
    }
}

#[test]
fn canonical_text_parses_back_to_the_same_selector() {
    let sel =
        Selector::parse("!(!has(a)) && (b in {'x'} || c not in {}) && d != \"it's\"").unwrap();
    assert_eq!(Selector::parse(&sel.to_string()).unwrap(), sel);
}

#[test]
fn a_selector_parses_through_from_str() {
    let sel: Selector = "has(a)".parse().unwrap();
    assert_eq!(sel.expr(), &has("a"));
}

#[test]
fn label_keys_lists_every_key_once_sorted() {
    let sel = Selector::parse("b == 'x' || (has(a) && !b in {'y'}) || all()").unwrap();
    assert_eq!(sel.label_keys().into_iter().collect::<Vec<_>>(), ["a", "b"]);
}

#[test]
fn selectors_serialize_as_their_canonical_text() {
    let sel = Selector::parse("a=='b'").unwrap();
    assert_eq!(serde_json::to_string(&sel).unwrap(), r#""a == \"b\"""#);
}

#[test]
fn selectors_deserialize_by_parsing() {
    let sel: Selector = serde_json::from_str(r#""has(a) && b in {'c'}""#).unwrap();
    assert_eq!(sel, Selector::parse("has(a) && b in {'c'}").unwrap());
}

#[test]
fn deserializing_a_bad_selector_fails_with_the_parse_error() {
    let err = serde_json::from_str::<Selector>(r#""a == ""#).unwrap_err();
    assert!(err.to_string().contains("column 6"), "{err}");
}

#[test]
fn new_accepts_an_expression_some_text_expresses() {
    let expr = Expr::And(vec![has("a"), not(not(has("b")))]);
    assert_eq!(Selector::new(expr.clone()).unwrap().into_expr(), expr);
}

#[test]
fn new_rejects_a_value_with_both_quotes() {
    assert!(Selector::new(eq("a", r#"it's "x""#)).is_err());
}

#[test]
fn new_rejects_an_invalid_key() {
    assert!(Selector::new(has("a b")).is_err());
}

#[test]
fn new_rejects_an_and_with_one_operand() {
    assert!(Selector::new(Expr::And(vec![has("a")])).is_err());
}

#[test]
fn with_key_prefix_prefixes_every_key() {
    let sel = Selector::parse("has(a) && b == 'c'").unwrap();
    assert_eq!(
        sel.with_key_prefix("pcns.").unwrap(),
        Selector::parse("has(pcns.a) && pcns.b == 'c'").unwrap()
    );
}

#[test]
fn with_key_prefix_rejects_a_prefix_keys_cannot_have() {
    assert!(Selector::parse("has(a)")
        .unwrap()
        .with_key_prefix("x y")
        .is_err());
}
