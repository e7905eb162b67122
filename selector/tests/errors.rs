//! Parse errors: the column and token they point at, their message and caret diagram.

use tabby_selector::{Expected, ParseError, ParseErrorKind, Selector};

fn error(text: &str) -> ParseError {
    match Selector::parse(text) {
        Ok(sel) => panic!("{text:?} should not parse, got {sel}"),
        Err(e) => e,
    }
}

#[test]
fn calicos_bad_selectors_are_rejected() {
    // libcalico-go selector/parser/parser_test.go `badSelectors`.
    let bad = [
        "b == b",
        "b contains b",
        "b starts with b",
        "b ends with b",
        "'b1' == b",
        "b",
        "a b",
        "!",
        r#"foo == "bar" &"#,
        r#"foo == "bar" |"#,
        "foo != ||",
        r#"foo in {"", ||"#,
        r#"foo in """#,
        r#""FOO"#,
        r#""FOO'"#,
        "'FOO",
        "(",
        r#"(a == "foo""#,
        ")",
        "()",
        "%",
        r#"a == "b" && %"#,
        r#"a == "b" || %"#,
        "a ",
        "has(foo) &&",
    ];
    for text in bad {
        assert!(
            Selector::parse(text).is_err(),
            "{text:?} should be rejected"
        );
    }
}

#[test]
fn a_stray_operator_where_a_key_belongs_is_reported_at_its_column() {
    let e = error("a == 'b' && && c");
    assert_eq!((e.column(), e.found()), (13, "&&"));
    assert_eq!(e.kind(), &ParseErrorKind::Expected(Expected::Expression));
}

#[test]
fn the_message_names_the_token_the_column_and_what_was_expected() {
    let e = error("a == 'b' && & c");
    assert_eq!(
        e.message(),
        r#"unexpected "&" at column 13: expected a label key, has(...), all(), global(), "!" or "(""#
    );
}

#[test]
fn display_puts_a_caret_under_the_column() {
    let e = error("has(a) || == 'b'");
    let shown = e.to_string();
    let lines: Vec<&str> = shown.lines().collect();
    assert_eq!(lines[1], "  has(a) || == 'b'");
    assert_eq!(lines[2], "            ^");
}

#[test]
fn columns_count_characters_not_bytes() {
    let e = error("a == 'ü' &&");
    assert_eq!(e.column(), 12);
}

#[test]
fn running_out_of_input_is_reported_at_the_end() {
    let e = error("has(foo) &&");
    assert_eq!((e.column(), e.found()), (12, ""));
    assert!(
        e.message()
            .starts_with("unexpected end of selector at column 12"),
        "{}",
        e.message()
    );
}

#[test]
fn a_bare_key_wants_an_operator() {
    let e = error("a ");
    assert_eq!(e.kind(), &ParseErrorKind::Expected(Expected::Operator));
}

#[test]
fn a_key_compared_with_a_key_wants_a_string_at_the_second_key() {
    let e = error("b == b");
    assert_eq!((e.column(), e.found()), (6, "b"));
    assert_eq!(e.kind(), &ParseErrorKind::Expected(Expected::String));
}

#[test]
fn in_without_braces_wants_a_set_literal() {
    let e = error(r#"foo in """#);
    assert_eq!(
        (e.column(), e.kind()),
        (8, &ParseErrorKind::Expected(Expected::SetLiteral))
    );
}

#[test]
fn an_unterminated_string_is_reported_at_its_opening_quote() {
    let e = error("a == \"b");
    assert_eq!(
        (e.column(), e.kind()),
        (6, &ParseErrorKind::UnterminatedString)
    );
}

#[test]
fn a_missing_close_paren_wants_and_or_or_close_paren() {
    let e = error("(has(a) has(b))");
    assert_eq!(
        (e.column(), e.kind()),
        (9, &ParseErrorKind::Expected(Expected::AndOrCloseParen))
    );
}

#[test]
fn leftover_text_wants_and_or_or_end() {
    let e = error("has(a) has(b)");
    assert_eq!(
        (e.column(), e.kind()),
        (8, &ParseErrorKind::Expected(Expected::AndOrEnd))
    );
}

#[test]
fn has_without_a_key_wants_a_label_key() {
    let e = error("has()");
    assert_eq!(
        (e.column(), e.kind()),
        (5, &ParseErrorKind::Expected(Expected::LabelKey))
    );
}

#[test]
fn all_with_an_argument_wants_a_close_paren() {
    let e = error("all(a)");
    assert_eq!(
        (e.column(), e.kind()),
        (5, &ParseErrorKind::Expected(Expected::CloseParen))
    );
}

#[test]
fn starts_without_with_wants_with() {
    let e = error("a starts 'x'");
    assert_eq!(
        (e.column(), e.kind()),
        (10, &ParseErrorKind::Expected(Expected::With))
    );
}

#[test]
fn a_set_without_a_separator_wants_a_comma_or_close_brace() {
    let e = error("a in {'x' 'y'}");
    assert_eq!(
        (e.column(), e.kind()),
        (11, &ParseErrorKind::Expected(Expected::CommaOrCloseBrace))
    );
}

#[test]
fn a_lone_comma_in_a_set_is_rejected_as_calico_does() {
    let e = error("a in {,}");
    assert_eq!(
        (e.column(), e.kind()),
        (7, &ParseErrorKind::Expected(Expected::StringOrCloseBrace))
    );
}

#[test]
fn a_single_equals_is_not_an_operator() {
    let e = error("a = 'b'");
    assert_eq!(
        (e.column(), e.kind()),
        (3, &ParseErrorKind::Expected(Expected::Operator))
    );
}

#[test]
fn nesting_beyond_the_limit_is_rejected_not_overflowed() {
    let depth = tabby_selector::MAX_NESTING + 1;
    let text = format!("{}has(a){}", "(".repeat(depth), ")".repeat(depth));
    let e = error(&text);
    assert_eq!(
        e.kind(),
        &ParseErrorKind::TooDeep {
            limit: tabby_selector::MAX_NESTING
        }
    );
    assert_eq!(e.column(), depth);
}

#[test]
fn deeply_nested_garbage_does_not_overflow_the_stack() {
    assert!(Selector::parse(&"(!".repeat(100_000)).is_err());
}

#[test]
fn a_long_chain_of_operands_parses_without_recursion() {
    let text = vec!["has(a)"; 50_000].join(" && ");
    assert!(Selector::parse(&text).is_ok());
}
