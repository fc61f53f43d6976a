//! `ivrd-loadgen`: places emulated calls against an ivrd on loopback and reports what happened
//! and its own CPU time. The logic lives in `ivrd::loadgen`; this file only parses the CLI.

use std::net::SocketAddr;
use std::process::ExitCode;

use clap::Parser;
use ivrd::loadgen::media::RtpDrain;
use ivrd::loadgen::{Options, parse_duration, parse_keys, run};

/// Emulates callers (SIP, RTP audio, RFC 4733 keys, BYE) against ivrd over UDP.
#[derive(Debug, Parser)]
#[command(name = "ivrd-loadgen", version)]
struct Cli {
    /// ivrd's SIP address (loopback only: this is a test tool).
    #[arg(long, default_value = "127.0.0.1:5060")]
    target: SocketAddr,
    /// Calls to place in total.
    #[arg(long, default_value_t = 10)]
    calls: u32,
    /// New calls per second.
    #[arg(long, default_value_t = 5.0)]
    rate: f64,
    /// Time from answer to our BYE, e.g. 20s.
    #[arg(long, default_value = "20s")]
    duration: String,
    /// Key presses as OFFSET:KEY from the answer, e.g. "2s:2,18s:#".
    #[arg(long, default_value = "2s:2,18s:#")]
    keys: String,
    /// Called number (DNIS); 1234501 is Haikou in the shipped dialplan.
    #[arg(long, default_value = "1234501")]
    called: String,
    /// sipfrag status reported for a REFER; "200 OK" completes transfers.
    #[arg(long, default_value = "486 Busy Here")]
    transfer_status: String,
    /// When ivrd's RTP to us is read and counted per call: "full" (every packet), "sampled"
    /// (100 ms of every second; proves media for calls with over ~1.1 s of it) or "off" (never;
    /// the kernel drops it; no_media is printed as "-").
    #[arg(long, default_value = "sampled")]
    rtp_drain: RtpDrain,
    /// Write the Call-IDs of answered calls (a 2xx seen), one per line, to this file at the end.
    #[arg(long)]
    answered_file: Option<std::path::PathBuf>,
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    if !cli.target.ip().is_loopback() {
        eprintln!("ivrd-loadgen: refusing non-loopback target {}", cli.target);
        return ExitCode::from(2);
    }
    let opts = match (parse_duration(&cli.duration), parse_keys(&cli.keys)) {
        (Ok(duration), Ok(keys)) => Options {
            target: cli.target,
            calls: cli.calls,
            rate: cli.rate,
            duration,
            keys,
            called: cli.called,
            transfer_status: cli.transfer_status,
            rtp_drain: cli.rtp_drain,
        },
        (Err(e), _) | (_, Err(e)) => {
            eprintln!("ivrd-loadgen: {e}");
            return ExitCode::from(2);
        }
    };
    let rt = match tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
    {
        Ok(rt) => rt,
        Err(e) => {
            eprintln!("ivrd-loadgen: cannot start the runtime: {e}");
            return ExitCode::from(1);
        }
    };
    match rt.block_on(run(&opts)) {
        Ok(r) => {
            let first_answer = r
                .first_answer
                .and_then(|t| t.duration_since(std::time::UNIX_EPOCH).ok())
                .map_or_else(|| "-".to_string(), |d| format!("{:.6}", d.as_secs_f64()));
            let no_media = if r.media_checked {
                r.no_media.to_string()
            } else {
                "-".to_string()
            };
            if let Some(path) = &cli.answered_file {
                let mut text = r.answered_call_ids.join("\n");
                text.push('\n');
                if let Err(e) = std::fs::write(path, text) {
                    eprintln!("ivrd-loadgen: cannot write {}: {e}", path.display());
                    return ExitCode::from(1);
                }
            }
            println!(
                "attempted={} answered={} completed={} failed={} rejected={} timeouts={} \
                 remote_hangups={} refers={} no_media={} keys_sent={} setup_mean_ms={:.1} \
                 setup_max_ms={:.1} setup_rate={:.1} rtp_sent={} rtp_dropped={} sendmmsg_calls={} \
                 rtp_received={} recvmmsg_calls={} first_answer_unix_s={} loadgen_cpu_ms={} \
                 wall_s={:.1}",
                r.attempted,
                r.answered,
                r.completed,
                r.failed,
                r.rejected,
                r.timeouts,
                r.remote_hangups,
                r.refers,
                no_media,
                r.keys_sent,
                r.setup_mean.as_secs_f64() * 1e3,
                r.setup_max.as_secs_f64() * 1e3,
                r.setup_rate,
                r.rtp.sent,
                r.rtp.dropped,
                r.rtp.send_calls,
                r.rtp.received,
                r.rtp.recv_calls,
                first_answer,
                r.cpu.as_millis(),
                r.wall.as_secs_f64()
            );
            if r.failed == 0 {
                ExitCode::SUCCESS
            } else {
                ExitCode::from(1)
            }
        }
        Err(e) => {
            eprintln!("ivrd-loadgen: {e}");
            ExitCode::from(1)
        }
    }
}
