//! Properties: canonical text round-trips, and the parser never panics.

use std::collections::BTreeMap;

use proptest::prelude::*;
use tabby_selector::{Expr, Selector};

fn key() -> impl Strategy<Value = String> {
    // Includes keys spelled like the language's words.
    prop_oneof![
        "[A-Za-z0-9_./-]{1,8}",
        Just("all".to_owned()),
        Just("has".to_owned()),
        Just("global".to_owned()),
        Just("not".to_owned()),
        Just("in".to_owned()),
        Just("starts".to_owned()),
    ]
}

fn value() -> impl Strategy<Value = String> {
    "[a-z'\" (){},!&|=✓]{0,6}".prop_filter("one quote kind at most", |v| {
        !(v.contains('\'') && v.contains('"'))
    })
}

fn leaf() -> impl Strategy<Value = Expr> {
    let set = || proptest::collection::btree_set(value(), 0..4);
    prop_oneof![
        Just(Expr::All),
        Just(Expr::Global),
        key().prop_map(Expr::Has),
        (key(), value()).prop_map(|(key, value)| Expr::Eq { key, value }),
        (key(), value()).prop_map(|(key, value)| Expr::Ne { key, value }),
        (key(), value()).prop_map(|(key, value)| Expr::Contains { key, value }),
        (key(), value()).prop_map(|(key, value)| Expr::StartsWith { key, value }),
        (key(), value()).prop_map(|(key, value)| Expr::EndsWith { key, value }),
        (key(), set()).prop_map(|(key, values)| Expr::In { key, values }),
        (key(), set()).prop_map(|(key, values)| Expr::NotIn { key, values }),
    ]
}

fn expr() -> impl Strategy<Value = Expr> {
    leaf().prop_recursive(5, 48, 4, |inner| {
        prop_oneof![
            inner.clone().prop_map(|e| Expr::Not(Box::new(e))),
            proptest::collection::vec(inner.clone(), 2..5).prop_map(Expr::And),
            proptest::collection::vec(inner, 2..5).prop_map(Expr::Or),
        ]
    })
}

fn labels() -> impl Strategy<Value = BTreeMap<String, String>> {
    proptest::collection::btree_map(prop_oneof!["[a-c]", key()], "[a-z'\"]{0,3}", 0..4)
}

proptest! {
    #[test]
    fn canonical_text_parses_back_to_the_same_tree(e in expr()) {
        let sel = Selector::new(e).unwrap();
        let text = sel.to_string();
        let reparsed = Selector::parse(&text);
        prop_assert_eq!(reparsed.as_ref(), Ok(&sel), "text: {}", text);
    }

    #[test]
    fn canonical_text_matches_exactly_what_the_tree_matches(e in expr(), l in labels()) {
        let sel = Selector::new(e).unwrap();
        let reparsed = Selector::parse(&sel.to_string()).unwrap();
        prop_assert_eq!(reparsed.matches(&l), sel.matches(&l));
    }

    #[test]
    fn parsing_arbitrary_text_never_panics(text in any::<String>()) {
        let _ = Selector::parse(&text);
    }

    #[test]
    fn parsing_selector_like_text_never_panics_and_round_trips_when_it_parses(
        text in "[ab!&|=(){},' \"]{0,12}|[a-z ()!&|'\"{},=]{0,40}",
    ) {
        if let Ok(sel) = Selector::parse(&text) {
            prop_assert_eq!(Selector::parse(&sel.to_string()), Ok(sel));
        }
    }

    #[test]
    fn error_columns_lie_within_the_text(text in any::<String>()) {
        if let Err(e) = Selector::parse(&text) {
            prop_assert!((1..=text.chars().count() + 1).contains(&e.column()));
        }
    }

    #[test]
    fn serde_round_trips_through_the_canonical_text(e in expr()) {
        let sel = Selector::new(e).unwrap();
        let json = serde_json::to_string(&sel).unwrap();
        prop_assert_eq!(serde_json::from_str::<Selector>(&json).unwrap(), sel);
    }
}
