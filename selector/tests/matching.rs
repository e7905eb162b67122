//! Matching: Calico's semantics per operator, its documented examples, scope and layering.

use std::collections::{BTreeMap, HashMap};

use tabby_selector::{Labels, Layered, Prefixed, Scope, Selector, NAMESPACE_LABEL};

fn labels(pairs: &[(&str, &str)]) -> BTreeMap<String, String> {
    pairs
        .iter()
        .map(|(k, v)| ((*k).to_owned(), (*v).to_owned()))
        .collect()
}

/// A documented case: selector, labels, whether it matches.
type Case<'a> = (&'a str, &'a [(&'a str, &'a str)], bool);

fn matches(selector: &str, pairs: &[(&str, &str)]) -> bool {
    Selector::parse(selector)
        .unwrap_or_else(|e| panic!("{selector:?} should parse:\n{e}"))
        .matches(&labels(pairs))
}

#[test]
fn not_equal_matches_when_the_key_is_absent() {
    assert!(matches("a != 'b'", &[]));
}

#[test]
fn not_equal_rejects_the_equal_value() {
    assert!(!matches("a != 'b'", &[("a", "b")]));
}

#[test]
fn not_in_matches_when_the_key_is_absent() {
    assert!(matches("a not in {'b'}", &[]));
}

#[test]
fn equality_needs_the_key() {
    assert!(!matches("a == ''", &[]));
}

#[test]
fn equality_matches_an_empty_value() {
    assert!(matches("a == ''", &[("a", "")]));
}

#[test]
fn in_needs_the_key() {
    assert!(!matches("a in {''}", &[]));
}

#[test]
fn an_empty_in_set_matches_nothing() {
    assert!(!matches("a in {}", &[("a", "")]));
}

#[test]
fn contains_needs_the_key_even_for_an_empty_substring() {
    assert!(!matches("a contains ''", &[]));
}

#[test]
fn starts_with_needs_the_key_even_for_an_empty_prefix() {
    assert!(!matches("a starts with ''", &[]));
}

#[test]
fn ends_with_needs_the_key_even_for_an_empty_suffix() {
    assert!(!matches("a ends with ''", &[]));
}

#[test]
fn negated_all_matches_nothing() {
    assert!(!matches("!all()", &[("a", "b")]));
}

#[test]
fn hash_maps_are_labels_too() {
    let map: HashMap<String, String> = HashMap::from([("a".to_owned(), "b".to_owned())]);
    assert!(Selector::parse("a == 'b'").unwrap().matches(&map));
}

#[test]
fn calicos_documented_examples_match_as_documented() {
    // The operator table of Calico's selector docs, the precedence example that follows it,
    // and cases from libcalico-go's parser tests.
    let cases: &[Case<'_>] = &[
        ("all()", &[], true),
        ("all()", &[("a", "b")], true),
        ("", &[("a", "b")], true),
        ("k == 'v'", &[("k", "v")], true),
        ("k == 'v'", &[("k", "w")], false),
        ("k == 'v'", &[], false),
        ("k != 'v'", &[], true),
        ("k != 'v'", &[("k", "w")], true),
        ("k != 'v'", &[("k", "v")], false),
        ("has(k)", &[("k", "")], true),
        ("has(k)", &[("j", "k")], false),
        ("!has(k)", &[("j", "k")], true),
        ("!has(k)", &[("k", "v")], false),
        ("k in { 'v1', 'v2' }", &[("k", "v2")], true),
        ("k in { 'v1', 'v2' }", &[("k", "v3")], false),
        ("k in { 'v1', 'v2' }", &[], false),
        ("k not in { 'v1', 'v2' }", &[], true),
        ("k not in { 'v1', 'v2' }", &[("k", "v3")], true),
        ("k not in { 'v1', 'v2' }", &[("k", "v1")], false),
        ("k contains 's'", &[("k", "bsb")], true),
        ("k contains 's'", &[("k", "b")], false),
        ("k contains 's'", &[("j", "s")], false),
        ("k starts with 's'", &[("k", "sb")], true),
        ("k starts with 's'", &[("k", "bs")], false),
        ("k ends with 's'", &[("k", "bs")], true),
        ("k ends with 's'", &[("k", "sb")], false),
        (r#"a in {"'", '"', "c"}"#, &[("a", "\"")], true),
        (r#"a in {"'", '"', "c"}"#, &[("a", "'")], true),
        (r#"a not in {"'", '"', "c"}"#, &[("a", "'")], false),
        ("!a in {'a'}", &[("a", "b")], true),
        ("a != 'a1' || b != 'b1'", &[("a", "a1"), ("b", "b1")], false),
        (
            "! a == 'a1' || ! b == 'b1'",
            &[("a", "a1"), ("b", "b1")],
            false,
        ),
        ("!(!has(a) || has(b))", &[("a", "a")], true),
        ("!!!has(a)", &[("a", "b")], false),
    ];
    for (selector, pairs, expected) in cases {
        assert_eq!(
            matches(selector, pairs),
            *expected,
            "{selector:?} on {pairs:?}"
        );
    }
}

#[test]
fn calicos_precedence_example_matches_as_documented() {
    // "It would match any resource that did not have label my-label, and any resource that
    // both has a value for my-label that starts with prod and a role label with value either
    // frontend or business."
    let sel = "! has(my-label) || my-label starts with 'prod' && role in {'frontend','business'}";
    assert!(matches(sel, &[("role", "db")]));
    assert!(matches(
        sel,
        &[("my-label", "prod-1"), ("role", "business")]
    ));
    assert!(!matches(sel, &[("my-label", "prod-1"), ("role", "db")]));
    assert!(!matches(sel, &[("my-label", "dev"), ("role", "frontend")]));
}

#[test]
fn global_matches_anything_in_plain_matching_as_calicos_evaluator_does() {
    assert!(matches("global()", &[]));
}

#[test]
fn global_matches_a_global_entity() {
    let sel = Selector::parse("global()").unwrap();
    assert!(sel.matches_in(&labels(&[]), Scope::Global));
}

#[test]
fn global_does_not_match_a_namespaced_entity() {
    let sel = Selector::parse("global()").unwrap();
    assert!(!sel.matches_in(&labels(&[]), Scope::Namespaced));
}

#[test]
fn all_matches_in_either_scope() {
    let sel = Selector::parse("all()").unwrap();
    assert!(sel.matches_in(&labels(&[]), Scope::Namespaced));
}

#[test]
fn layered_labels_prefer_their_own_value() {
    let own = labels(&[("a", "pod")]);
    let parent = labels(&[("a", "profile"), ("b", "profile")]);
    let both = Layered::new(&own, &parent);
    assert_eq!(
        (both.get("a"), both.get("b"), both.get("c")),
        (Some("pod"), Some("profile"), None)
    );
}

#[test]
fn prefixed_labels_are_found_only_under_the_prefix() {
    let ns = labels(&[("team", "red")]);
    let view = Prefixed::new("pcns.", &ns);
    assert_eq!(
        (view.get("pcns.team"), view.get("team")),
        (Some("red"), None)
    );
}

#[test]
fn a_namespace_selector_rewritten_for_endpoints_selects_pods_by_namespace_labels() {
    let pod = labels(&[("app", "web"), (NAMESPACE_LABEL, "prod")]);
    let ns = labels(&[("team", "red"), ("projectcalico.org/name", "prod")]);
    let endpoint = Layered::new(&pod, Prefixed::new("pcns.", &ns));
    let rewritten = Selector::parse("team == 'red'")
        .unwrap()
        .namespace_selector_for_endpoints();
    assert_eq!(rewritten.to_string(), r#"pcns.team == "red""#);
    assert!(rewritten.matches(&endpoint));
}

#[test]
fn a_rewritten_all_namespace_selector_selects_only_namespaced_endpoints() {
    let rewritten = Selector::parse("all()")
        .unwrap()
        .namespace_selector_for_endpoints();
    assert_eq!(rewritten.to_string(), "has(projectcalico.org/namespace)");
    assert!(!rewritten.matches(&labels(&[("host", "x")])));
}

#[test]
fn a_rewritten_global_namespace_selector_selects_only_global_endpoints() {
    let rewritten = Selector::parse("global()")
        .unwrap()
        .namespace_selector_for_endpoints();
    assert_eq!(rewritten.to_string(), "!has(projectcalico.org/namespace)");
    assert!(!rewritten.matches(&labels(&[(NAMESPACE_LABEL, "prod")])));
}

#[test]
fn a_rewritten_negated_global_folds_its_double_negation_as_calico_does() {
    let rewritten = Selector::parse("!global()")
        .unwrap()
        .namespace_selector_for_endpoints();
    assert_eq!(rewritten.to_string(), "has(projectcalico.org/namespace)");
}
