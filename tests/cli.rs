//! The command-line contract (DESIGN.md "Contracts"): exit codes 0 ok, 1 runtime, 2 bad input;
//! errors name the file and line.

use std::process::Command;

fn ivrd() -> Command {
    Command::new(env!("CARGO_BIN_EXE_ivrd"))
}

fn temp_file(name: &str, text: &str) -> std::path::PathBuf {
    let dir = std::env::temp_dir().join(format!("ivrd-cli-{}", std::process::id()));
    std::fs::create_dir_all(&dir).expect("temp dir");
    let path = dir.join(name);
    std::fs::write(&path, text).expect("write");
    path
}

#[test]
fn print_config_shows_the_embedded_defaults_as_loadable_toml() {
    let out = ivrd()
        .args(["run", "--print-config"])
        .output()
        .expect("run");
    assert!(out.status.success());
    let text = String::from_utf8(out.stdout).expect("utf-8");
    assert!(text.contains("listen = [\"0.0.0.0:5060\"]"), "{text}");
    assert!(text.contains("rtp_ports = \"20000-29999\""), "{text}");
    // What it prints is a valid config file.
    let path = temp_file("printed.toml", &text);
    let again = ivrd()
        .args(["run", "--print-config", "--config"])
        .arg(&path)
        .output()
        .expect("run");
    assert!(again.status.success());
    assert_eq!(String::from_utf8_lossy(&again.stdout), text);
}

#[test]
fn a_bad_config_exits_2_with_file_line_and_key() {
    let path = temp_file("bad.toml", "[sip]\nmax_calls = 10\nmax_cals = 5\n");
    let out = ivrd()
        .args(["run", "--config"])
        .arg(&path)
        .output()
        .expect("run");
    assert_eq!(out.status.code(), Some(2));
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(
        err.contains("bad.toml:3:") && err.contains("max_cals"),
        "{err}"
    );
}

#[test]
fn check_accepts_the_shipped_plan_and_refuses_a_broken_one_with_exit_2() {
    let ok = ivrd()
        .args(["check", "dialplans/12345.toml"])
        .output()
        .expect("run");
    assert!(
        ok.status.success(),
        "{}",
        String::from_utf8_lossy(&ok.stderr)
    );
    assert!(String::from_utf8_lossy(&ok.stdout).contains("reaches a person within"));
    let broken = std::fs::read_dir("tests/dialplans/broken")
        .expect("corpus")
        .filter_map(Result::ok)
        .map(|e| e.path())
        .find(|p| p.extension().is_some_and(|x| x == "toml"))
        .expect("a broken plan");
    let out = ivrd().arg("check").arg(&broken).output().expect("run");
    assert_eq!(out.status.code(), Some(2));
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(
        err.contains(broken.file_name().and_then(|n| n.to_str()).unwrap_or("?")),
        "{err}"
    );
}

#[test]
fn run_refuses_a_broken_dialplan_with_exit_2() {
    let config = temp_file(
        "broken-plan.toml",
        "[sip]\nlisten = [\"127.0.0.1:0\"]\n[metrics]\nlisten = \"127.0.0.1:0\"\n[dialplan]\npath = \"tests/dialplans/broken/no-such-plan.toml\"\n",
    );
    let out = ivrd()
        .args(["run", "--config"])
        .arg(&config)
        .output()
        .expect("run");
    assert_eq!(
        out.status.code(),
        Some(2),
        "{}",
        String::from_utf8_lossy(&out.stdout)
    );
}

#[test]
fn simulate_prints_the_path_and_the_case_it_would_leave() {
    let out = ivrd()
        .args(["simulate", "dialplans/12345.toml", "--keys", "9,1"])
        .output()
        .expect("run");
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(text.contains("path:"), "{text}");
    let json_start = text.find("{\n").expect("case JSON");
    let case: serde_json::Value = serde_json::from_str(&text[json_start..]).expect("case parses");
    assert_eq!(case["outcome"], "emergency_handoff");
    assert_eq!(case["transfer"]["emergency"], "110");
}

#[test]
fn plan_tests_and_graph_run_on_the_shipped_plan() {
    let out = ivrd()
        .args(["test", "dialplans/12345.toml"])
        .output()
        .expect("run");
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stdout)
    );
    let dot = ivrd()
        .args(["graph", "dialplans/12345.toml"])
        .output()
        .expect("run");
    assert!(dot.status.success());
    assert!(String::from_utf8_lossy(&dot.stdout).starts_with("digraph"));
    let mermaid = ivrd()
        .args(["graph", "dialplans/12345.toml", "--format", "mermaid"])
        .output()
        .expect("run");
    assert!(String::from_utf8_lossy(&mermaid.stdout).contains("flowchart"));
}
