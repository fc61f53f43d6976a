//! The `ivrd` command line. Everything it does lives in the library; this only parses arguments,
//! sets up logging and signals, and maps failures to exit codes (0 ok, 1 runtime, 2 bad input).

use clap::{Parser, Subcommand};
use ivrd::config::Config;
use ivrd::runtime::Server;
use std::path::PathBuf;
use std::process::ExitCode;
use tokio_util::sync::CancellationToken;

/// Threads for blocking (disk) work; see the runtime builder in `main`.
const MAX_BLOCKING_THREADS: usize = 32;

#[derive(Parser)]
#[command(
    name = "ivrd",
    version,
    about = "SIP/RTP IVR daemon for 12345 government service hotlines"
)]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand)]
enum Command {
    /// Run the daemon (embedded defaults when no --config is given).
    Run {
        /// TOML configuration file.
        #[arg(long)]
        config: Option<PathBuf>,
        /// Print the effective configuration and exit.
        #[arg(long)]
        print_config: bool,
    },
    /// Validate a dialplan: exit 0 when it may serve, 2 with file:line reasons when not.
    Check {
        file: PathBuf,
        #[command(flatten)]
        prompts: PromptsArg,
    },
    /// Walk a dialplan offline with a key sequence and print the path, prompts and outcome.
    Simulate {
        file: PathBuf,
        /// Keys and pauses, e.g. "1,#,2" (see dialplans/README.md).
        #[arg(long, default_value = "")]
        keys: String,
        /// Caller language, e.g. "en".
        #[arg(long)]
        language: Option<String>,
        /// A caller who never presses anything.
        #[arg(long)]
        silence: bool,
        #[command(flatten)]
        prompts: PromptsArg,
    },
    /// Print the dialplan as a graph (Graphviz DOT, or Mermaid).
    Graph {
        file: PathBuf,
        #[arg(long, value_enum, default_value = "dot")]
        format: GraphFormat,
        #[command(flatten)]
        prompts: PromptsArg,
    },
    /// Run the test calls kept beside a plan (NAME.tests.toml).
    Test {
        file: PathBuf,
        #[command(flatten)]
        prompts: PromptsArg,
    },
    /// Show the case outbox (pending and dead letters), or requeue dead letters.
    Outbox {
        /// `[storage] dir` to look in.
        #[arg(long, default_value = "var")]
        storage_dir: PathBuf,
        /// Move every dead letter back to pending (attempts and age reset).
        #[arg(long)]
        requeue: bool,
    },
    /// Ask a running ivrd to reload its dialplan (sends SIGHUP to the pid).
    Reload { pid: i32 },
}

#[derive(clap::Args)]
struct PromptsArg {
    /// Prompt directory the plan's prompts are checked against.
    #[arg(long, default_value = "prompts")]
    prompts_dir: PathBuf,
}

#[derive(Clone, Copy, clap::ValueEnum)]
enum GraphFormat {
    Dot,
    Mermaid,
    /// Rendered by Graphviz's `dot`, which must be installed.
    Svg,
}

/// Renders DOT to SVG with Graphviz (exit 1 with a hint when it is not installed).
fn svg(dot: &str) -> ExitCode {
    use std::io::Write;
    let child = std::process::Command::new("dot")
        .arg("-Tsvg")
        .stdin(std::process::Stdio::piped())
        .spawn();
    let Ok(mut child) = child else {
        eprintln!(
            "ivrd: Graphviz `dot` is not installed (apt-get install graphviz); use --format dot"
        );
        return ExitCode::from(1);
    };
    if let Some(mut stdin) = child.stdin.take() {
        let _ = stdin.write_all(dot.as_bytes());
    }
    match child.wait() {
        Ok(status) if status.success() => ExitCode::SUCCESS,
        _ => ExitCode::from(1),
    }
}

/// The case a simulated call would leave, with placeholder call facts.
fn simulated_case(journal: &ivrd::dialplan::journal::CallJournal) -> String {
    use ivrd::case::skeleton::Hangup;
    let now = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| i64::try_from(d.as_millis()).unwrap_or(0));
    let ivr_ms = journal
        .ended_after
        .map_or(0, |d| i64::try_from(d.as_millis()).unwrap_or(0));
    let facts = ivrd::case::CallFacts {
        case_id: "SIMULATED".into(),
        call_id: "simulated".into(),
        caller: journal.caller.clone(),
        called: journal.called.clone(),
        trunk: journal.trunk.clone().unwrap_or_default(),
        received_unix_ms: now,
        answered_unix_ms: Some(now),
        ended_unix_ms: now + ivr_ms,
        hangup: Hangup {
            side: "ivrd".into(),
            reason: "simulated".into(),
        },
        host: "simulate".into(),
    };
    let case = ivrd::case::CaseSkeleton::from_journal(&facts, journal, Vec::new(), false);
    case.to_json()
        .map(|j| String::from_utf8_lossy(&j).into_owned())
        .unwrap_or_else(|e| format!("(case not serialisable: {e})"))
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    match cli.command {
        Command::Run {
            config,
            print_config,
        } => run(config, print_config),
        Command::Check { file, prompts } => report(
            ivrd::dialplan::check_file(&file, &prompts.prompts_dir),
            |_| true,
        ),
        Command::Simulate {
            file,
            keys,
            language,
            silence,
            prompts,
        } => {
            let now = std::time::SystemTime::now()
                .duration_since(std::time::UNIX_EPOCH)
                .map_or(0, |d| d.as_secs());
            let wall = ivrd::dialplan::calendar::WallClock::from_unix(
                i64::try_from(now).unwrap_or(0),
                8 * 60,
            );
            let result = ivrd::dialplan::simulate::simulate_file(
                &file,
                &prompts.prompts_dir,
                &keys,
                language.as_deref(),
                silence,
                wall,
            );
            match result {
                Ok(report) => {
                    print!("{report}");
                    println!("\ncase skeleton (with placeholder call facts):");
                    println!("{}", simulated_case(&report.journal));
                    ExitCode::SUCCESS
                }
                Err(e) => {
                    eprintln!("{e}");
                    ExitCode::from(2)
                }
            }
        }
        Command::Graph {
            file,
            format,
            prompts,
        } => match ivrd::dialplan::load_file(&file, &prompts.prompts_dir) {
            Ok(plan) => {
                match format {
                    GraphFormat::Dot => print!("{}", ivrd::dialplan::graph::to_dot(&plan)),
                    GraphFormat::Mermaid => print!("{}", ivrd::dialplan::graph::to_mermaid(&plan)),
                    GraphFormat::Svg => return svg(&ivrd::dialplan::graph::to_dot(&plan)),
                }
                ExitCode::SUCCESS
            }
            Err(e) => {
                eprintln!("{e}");
                ExitCode::from(2)
            }
        },
        Command::Test { file, prompts } => report(
            ivrd::dialplan::testcases::run_file(&file, &prompts.prompts_dir),
            |r| r.passed(),
        ),
        Command::Reload { pid } => reload(pid),
        Command::Outbox {
            storage_dir,
            requeue,
        } => outbox(&storage_dir, requeue),
    }
}

/// Prints a report (exit 0 when `ok`, 1 when not) or an error (exit 2: bad input).
fn report<R: std::fmt::Display, E: std::fmt::Display>(
    result: Result<R, E>,
    ok: impl Fn(&R) -> bool,
) -> ExitCode {
    match result {
        Ok(r) => {
            print!("{r}");
            if ok(&r) {
                ExitCode::SUCCESS
            } else {
                ExitCode::from(1)
            }
        }
        Err(e) => {
            eprintln!("{e}");
            ExitCode::from(2)
        }
    }
}

/// `ivrd outbox`: counts, or requeue then counts.
fn outbox(dir: &std::path::Path, requeue: bool) -> ExitCode {
    if requeue {
        match ivrd::runtime::outbox::requeue(dir) {
            Ok(n) => println!("requeued {n} dead letter(s)"),
            Err(e) => {
                eprintln!("ivrd: {e}");
                return ExitCode::from(1);
            }
        }
    }
    match ivrd::runtime::outbox::outbox_status(dir) {
        Ok(counts) => {
            println!("{counts}");
            ExitCode::SUCCESS
        }
        Err(e) => {
            eprintln!("ivrd: {e}");
            ExitCode::from(1)
        }
    }
}

/// Sends SIGHUP to a running daemon, which reloads its dialplan.
fn reload(pid: i32) -> ExitCode {
    match std::process::Command::new("kill")
        .args(["-HUP", &pid.to_string()])
        .status()
    {
        Ok(status) if status.success() => ExitCode::SUCCESS,
        _ => {
            eprintln!("ivrd: could not signal process {pid}");
            ExitCode::from(1)
        }
    }
}

fn run(path: Option<PathBuf>, print_config: bool) -> ExitCode {
    let config = match path {
        Some(path) => match Config::load(&path) {
            Ok(c) => c,
            Err(e) => {
                eprintln!("ivrd: {e}");
                return ExitCode::from(2);
            }
        },
        None => Config::default(),
    };
    if print_config {
        print!("{}", config.to_toml());
        return ExitCode::SUCCESS;
    }
    tracing_subscriber::fmt()
        .with_env_filter(
            tracing_subscriber::EnvFilter::try_from_default_env()
                .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("info")),
        )
        .init();
    let runtime = match tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        // The blocking pool does the disk work that has no thread of its own (delivery
        // bookkeeping, start-up repair, plan reloads; call markers and the case spool have their
        // group commit threads, recordings their writer and finisher). When the disk stalls,
        // tokio's default (up to 512 threads) starts a thread per waiting job; they then stay,
        // each with its stack and malloc arena: a one-hour soak gained 130 threads and 44 MB in
        // one build's I/O burst. More threads do not make a stalled disk faster, so the jobs
        // wait in the queue instead.
        .max_blocking_threads(MAX_BLOCKING_THREADS)
        .build()
    {
        Ok(rt) => rt,
        Err(e) => {
            eprintln!("ivrd: cannot start the runtime: {e}");
            return ExitCode::from(1);
        }
    };
    runtime.block_on(async move {
        let server = match Server::bind(config).await {
            Ok(s) => s,
            Err(e @ ivrd::runtime::ServerError::Dialplan(_)) => {
                tracing::error!(error = %e, "cannot start");
                return ExitCode::from(2);
            }
            Err(e) => {
                tracing::error!(error = %e, "cannot start");
                return ExitCode::from(1);
            }
        };
        let shutdown = CancellationToken::new();
        tokio::spawn(stop_on_signal(shutdown.clone()));
        server.run(shutdown).await;
        tracing::info!("stopped");
        ExitCode::SUCCESS
    })
}

/// SIGTERM or SIGINT begins the drain.
async fn stop_on_signal(shutdown: CancellationToken) {
    use tokio::signal::unix::{SignalKind, signal};
    let (Ok(mut term), Ok(mut int)) = (
        signal(SignalKind::terminate()),
        signal(SignalKind::interrupt()),
    ) else {
        tracing::error!("cannot install signal handlers");
        return;
    };
    tokio::select! {
        _ = term.recv() => tracing::info!("SIGTERM received"),
        _ = int.recv() => tracing::info!("SIGINT received"),
    }
    shutdown.cancel();
}
