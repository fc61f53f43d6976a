//! Loader tests: file:line in errors, warnings, the silent-caller time and the content hash.

use std::time::Duration;

use crate::dialplan::testutil::load;
use crate::dialplan::{DialplanError, Problem};

const HEAD: &str = r#"[plan]
name = "t"
version = "1"
entry = "m1"
languages = ["zh-CN", "en"]
default_language = "zh-CN"
person = "agent"
silence_seconds = 5
"#;

const AGENT: &str = r#"
[nodes.agent]
kind = "transfer"
target = "sip:q@x"
on_failure = "bye"

[nodes.bye]
kind = "hangup"
"#;

fn menu(id: &str, next: &str) -> String {
    format!(
        "\n[nodes.{id}]\nkind = \"menu\"\nprompts = [\"{id}\"]\nmax_attempts = 2\nkeys = {{ \"1\" = {{ goto = \"{next}\" }} }}\n"
    )
}

fn problems(src: &str) -> Vec<(Option<usize>, Problem)> {
    match load(src) {
        Err(DialplanError::Invalid { problems }) => {
            problems.into_iter().map(|d| (d.line, d.problem)).collect()
        }
        other => panic!("expected problems, got {other:?}"),
    }
}

#[test]
fn silent_worst_case_and_depth_are_computed() {
    let src = format!("{HEAD}{}{AGENT}", menu("m1", "agent"));
    let p = load(&src).unwrap();
    // Two attempts of (2 s prompt + 5 s silence), no timeout prompt, then the transfer.
    assert_eq!(p.silent_worst_case, Some(Duration::from_secs(14)));
    assert_eq!(p.max_menu_depth, 1);
    assert!(p.warnings.is_empty(), "{:?}", p.warnings);
    assert_eq!(p.sha256.len(), 64);
    let other = load(&src.replace("version = \"1\"", "version = \"2\"")).unwrap();
    assert_ne!(p.sha256, other.sha256);
}

#[test]
fn four_menus_deep_is_a_warning_not_an_error() {
    let menus: String = [("m1", "m2"), ("m2", "m3"), ("m3", "m4"), ("m4", "agent")]
        .iter()
        .map(|(a, b)| menu(a, b))
        .collect();
    let p = load(&format!("{HEAD}{menus}{AGENT}")).unwrap();
    assert_eq!(p.max_menu_depth, 4);
    let w: Vec<String> = p.warnings.iter().map(|w| w.to_string()).collect();
    assert!(
        w.iter()
            .any(|w| w.contains("4 menus") && w.contains("m1 → m2 → m3 → m4")),
        "{w:?}"
    );
}

#[test]
fn unknown_target_names_its_line() {
    let src = format!("{HEAD}{}{AGENT}", menu("m1", "nowhere"));
    let p = problems(&src);
    let line = src.lines().position(|l| l.starts_with("keys =")).unwrap() + 1;
    let want = Problem::UnknownTarget {
        node: "m1".into(),
        target: "nowhere".into(),
    };
    assert!(p.contains(&(Some(line), want)), "{p:?}");
}

#[test]
fn one_line_form_keeps_every_file_line_reason_on_one_line() {
    let src = format!(
        "{HEAD}{}{}{AGENT}",
        menu("m1", "nowhere"),
        menu("m2", "gone")
    );
    let err = load(&src).expect_err("two unknown targets");
    let line = err.one_line();
    assert!(!line.contains('\n'), "{line}");
    for target in ["nowhere", "gone"] {
        let n = src
            .lines()
            .position(|l| l.contains(&format!("goto = \"{target}\"")))
            .unwrap()
            + 1;
        assert!(line.contains(&format!(":{n}: ")), "line {n} in {line}");
        assert!(line.contains(target), "{line}");
    }
}

#[test]
fn missing_prompt_in_one_language_is_refused() {
    let src =
        format!("{HEAD}{}{AGENT}", menu("m1", "agent")).replace("[\"m1\"]", "[\"missing_x\"]");
    let p = problems(&src);
    assert!(
        p.iter()
            .any(|(_, p)| matches!(p, Problem::MissingPrompt { language, .. } if language == "en"))
    );
}

#[test]
fn syntax_errors_carry_the_line() {
    let src = format!("{HEAD}\n[nodes.m1]\nkind = \"menu\"\nprompts = [\"a\"\n");
    match load(&src) {
        Err(DialplanError::Syntax { line: Some(l), .. }) => assert!(l >= 11, "line {l}"),
        other => panic!("{other:?}"),
    }
}
