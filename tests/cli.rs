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

/// Starts `ivrd run` under the shell's `ulimit` settings `limits`, waits for "SIP listening",
/// and returns the daemon's soft and hard open-file limits from /proc and its log so far.
fn limits_of_a_started_daemon(limits: &str, max_calls: u32) -> (u64, u64, String) {
    use std::io::{BufRead, BufReader};
    let storage =
        std::env::temp_dir().join(format!("ivrd-cli-fd-{}-{max_calls}", std::process::id()));
    let config = temp_file(
        &format!("fd-{max_calls}.toml"),
        &format!(
            "[sip]\nlisten = [\"127.0.0.1:0\"]\nmax_calls = {max_calls}\n\
             [metrics]\nlisten = \"127.0.0.1:0\"\n[storage]\ndir = {storage:?}\n"
        ),
    );
    let mut child = Command::new("sh")
        .arg("-c")
        .arg(format!("{limits} && exec \"$0\" run --config \"$1\""))
        .arg(env!("CARGO_BIN_EXE_ivrd"))
        .arg(&config)
        .env("NO_COLOR", "1")
        .env("RUST_LOG", "info")
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .expect("spawn ivrd");
    // The log goes to stdout or stderr depending on the subscriber; read both into one.
    let (tx, rx) = std::sync::mpsc::channel();
    let out = child.stdout.take().expect("stdout");
    let err = child.stderr.take().expect("stderr");
    for stream in [
        Box::new(out) as Box<dyn std::io::Read + Send>,
        Box::new(err),
    ] {
        let tx = tx.clone();
        std::thread::spawn(move || {
            for line in BufReader::new(stream).lines().map_while(Result::ok) {
                let _ = tx.send(line);
            }
        });
    }
    let mut log = String::new();
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(20);
    while !log.contains("SIP listening") {
        let left = deadline.saturating_duration_since(std::time::Instant::now());
        let line = rx.recv_timeout(left).expect("ivrd reports SIP listening");
        log.push_str(&line);
        log.push('\n');
    }
    let limits = std::fs::read_to_string(format!("/proc/{}/limits", child.id())).expect("limits");
    let _ = child.kill();
    let _ = child.wait();
    let _ = std::fs::remove_dir_all(&storage);
    let row = limits
        .lines()
        .find(|l| l.starts_with("Max open files"))
        .expect("open files row");
    let nums: Vec<u64> = row
        .split_whitespace()
        .filter_map(|w| w.parse().ok())
        .collect();
    (nums[0], nums[1], log)
}

#[test]
fn run_raises_its_open_file_limit_and_says_when_max_calls_needs_more() {
    // A soft limit of 256 is raised to the hard one, which covers 100 calls: no warning.
    let (soft, hard, log) = limits_of_a_started_daemon("ulimit -Sn 256 && ulimit -Hn 4096", 100);
    assert_eq!((soft, hard), (4096, 4096));
    assert!(!log.contains("open-file limit is below"), "{log}");
    // 4,000 calls need about four descriptors each: a hard limit of 4,096 is short, and said.
    let (soft, _, log) = limits_of_a_started_daemon("ulimit -Sn 256 && ulimit -Hn 4096", 4000);
    assert_eq!(soft, 4096);
    assert!(log.contains("open-file limit is below"), "{log}");
}
