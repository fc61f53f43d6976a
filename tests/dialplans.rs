//! The shipped Hainan plan loads and passes its own test cases; every plan in
//! `tests/dialplans/broken/` is refused with the message its first line promises.

use std::path::PathBuf;

use ivrd::dialplan::{self, DialplanError};

fn root() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
}

#[test]
fn shipped_plan_checks_clean() {
    let report = dialplan::check_file(
        &root().join("dialplans/12345.toml"),
        &root().join("prompts"),
    )
    .unwrap_or_else(|e| panic!("{e}"));
    assert!(report.warnings.is_empty(), "{report}");
    assert!(report.max_menu_depth <= 3, "{report}");
    let silent = report
        .silent_worst_case
        .expect("a silent caller reaches a person");
    assert!(silent.as_secs() < 50, "{report}");
}

#[test]
fn shipped_plan_passes_its_tests() {
    let report = dialplan::testcases::run_file(
        &root().join("dialplans/12345.toml"),
        &root().join("prompts"),
    )
    .unwrap_or_else(|e| panic!("{e}"));
    assert!(report.passed(), "{report}");
    assert!(report.results.len() >= 20);
}

/// The expected message substring from a `# expect: ...` first line.
fn expectation(src: &str) -> Option<&str> {
    src.lines()
        .next()?
        .strip_prefix("# expect: ")
        .map(str::trim)
}

#[test]
fn broken_plans_are_refused_with_the_expected_message() {
    let dir = root().join("tests/dialplans/broken");
    let mut files: Vec<PathBuf> = std::fs::read_dir(&dir)
        .unwrap()
        .map(|e| e.unwrap().path())
        .filter(|p| p.extension().is_some_and(|e| e == "toml"))
        .collect();
    files.sort();
    assert!(files.len() >= 15, "corpus too small: {}", files.len());
    let mut failures = Vec::new();
    for f in &files {
        let src = std::fs::read_to_string(f).unwrap();
        let want =
            expectation(&src).unwrap_or_else(|| panic!("{}: no `# expect:` line", f.display()));
        match dialplan::load_file(f, &root().join("prompts")) {
            Ok(_) => failures.push(format!("{}: accepted", f.display())),
            Err(e) => {
                let msg = e.to_string();
                if !msg.contains(want) {
                    failures.push(format!("{}: wanted `{want}`, got:\n{msg}", f.display()));
                }
                // Every refusal names the file, and plan problems name a line.
                let name = f.file_name().unwrap().to_str().unwrap();
                if !msg.contains(name) {
                    failures.push(format!(
                        "{}: message does not name the file: {msg}",
                        f.display()
                    ));
                }
                if let DialplanError::Invalid { problems } = &e
                    && problems.iter().all(|p| p.line.is_none())
                {
                    failures.push(format!("{}: no line number in {msg}", f.display()));
                }
            }
        }
    }
    assert!(failures.is_empty(), "{}", failures.join("\n\n"));
}

#[test]
fn simulate_report_shows_path_prompt_texts_fields_and_outcome() {
    use dialplan::calendar::{Date, WallClock};
    use dialplan::simulate::{SimOptions, parse_script, simulate};
    use std::sync::Arc;
    let plan = Arc::new(
        dialplan::load_file(
            &root().join("dialplans/12345.toml"),
            &root().join("prompts"),
        )
        .unwrap(),
    );
    let wall = WallClock {
        date: Date::parse("2026-11-25").unwrap(),
        weekday: 3,
        minute_of_day: 600,
    };
    let mut opts = SimOptions::new(parse_script("3,1,2,13912345678#,1").unwrap(), wall);
    opts.called = "1234502".into();
    let catalog = dialplan::DirPromptCatalog {
        dir: root().join("prompts"),
    };
    let text = |p: &dialplan::PromptId| {
        std::fs::read_to_string(
            root()
                .join("prompts")
                .join(&p.language)
                .join(format!("{}.txt", p.name)),
        )
        .ok()
        .map(|s| s.trim().to_owned())
    };
    let report = simulate(plan, &opts, &catalog, &text);
    let out = report.to_string();
    println!("{out}");
    assert!(
        out.contains(
            "path: region → welcome → main → complaint → callback_choice → callback_number → agent"
        ),
        "{out}"
    );
    assert!(
        out.contains("您好，欢迎致电海南省12345政务服务便民热线。"),
        "{out}"
    );
    assert!(out.contains("field callback_number = 13912345678"), "{out}");
    assert!(out.contains("region: 460200 三亚市"), "{out}");
    assert!(
        out.contains("outcome: transferred to sip:complaint@acd.hainan12345.local"),
        "{out}"
    );
}

#[test]
fn check_report_prints_the_silent_worst_case() {
    let report = dialplan::check_file(
        &root().join("dialplans/12345.toml"),
        &root().join("prompts"),
    )
    .unwrap();
    let text = report.to_string();
    println!("{text}");
    assert!(
        text.contains("plan hainan-12345 version 2026.11.1 ok"),
        "{text}"
    );
    assert!(
        text.contains("silent caller reaches a person within"),
        "{text}"
    );
}
