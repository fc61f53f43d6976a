//! `ivrd-loadgen`: a lean SIP/RTP caller emulator for load tests of ivrd on loopback (issue 7).
//!
//! Data flow: one SIP socket and one RTP socket shared by all calls, and one 5 ms ticker, drive
//! every [`call::Call`] from a single task. Incoming SIP is parsed with the crate's own parser and
//! dispatched by the index embedded in the Call-ID. Each tick first drains ivrd's RTP (counted
//! per call by ivrd's source port, see [`media`]), then collects the RTP frames and RFC 4733
//! packets due from every call into one batch and sends it with `sendmmsg` (no allocation and no
//! system call per packet). It is a test tool: it never runs inside the daemon.

pub mod call;
pub mod media;
pub mod text;

use std::net::SocketAddr;
use std::time::{Duration, Instant, SystemTime};

use tokio::net::UdpSocket;
use tokio::time::MissedTickBehavior;

use crate::media::digit::Digit;
use crate::media::g711::encode_ulaw;
use crate::sip::message::{Message, parse};
use call::{Call, Outcome, RTP_BUF, Script, Transmit};
use media::{RtpDrain, RtpStats, SharedRtp};

/// How often the ticker runs; calls start at arbitrary times, so their 20 ms frames spread over
/// four phases instead of one burst.
const TICK: Duration = Duration::from_millis(5);
/// Grace after the last call should have ended before the rest count as failed.
const GRACE: Duration = Duration::from_secs(40);

/// What a run does.
#[derive(Debug, Clone)]
pub struct Options {
    /// ivrd's SIP address.
    pub target: SocketAddr,
    /// Calls to place in total.
    pub calls: u32,
    /// New calls per second.
    pub rate: f64,
    /// Time from answer to our BYE.
    pub duration: Duration,
    /// Key presses as offsets from the answer.
    pub keys: Vec<(Duration, Digit)>,
    /// Called number (DNIS).
    pub called: String,
    /// The sipfrag status we report for a REFER ("200 OK" completes the transfer).
    pub transfer_status: String,
    /// When ivrd's RTP to us is read and counted per call (`no_media`).
    pub rtp_drain: RtpDrain,
}

/// Why an option string was rejected or the run could not start.
#[derive(Debug, thiserror::Error)]
pub enum LoadgenError {
    /// A `--keys` item is not `OFFSET:KEY` with OFFSET like `3s` or `2500ms`.
    #[error("bad key press {item:?}: expected OFFSET:KEY like 3s:2")]
    BadKey { item: String },
    /// A duration is not like `20s` or `500ms`.
    #[error("bad duration {value:?}: expected e.g. 20s or 500ms")]
    BadDuration { value: String },
    /// Binding a local socket failed.
    #[error("cannot bind a UDP socket on {addr}: {source}")]
    Bind {
        addr: SocketAddr,
        source: std::io::Error,
    },
    /// Receiving on the SIP socket failed.
    #[error("SIP socket failed: {source}")]
    Recv { source: std::io::Error },
}

/// Parses `20s`, `1500ms` or a bare number of seconds.
pub fn parse_duration(value: &str) -> Result<Duration, LoadgenError> {
    let bad = || LoadgenError::BadDuration {
        value: value.to_string(),
    };
    let v = value.trim();
    if let Some(ms) = v.strip_suffix("ms") {
        return ms
            .trim()
            .parse::<u64>()
            .map(Duration::from_millis)
            .map_err(|_| bad());
    }
    let secs = v.strip_suffix('s').unwrap_or(v).trim();
    let secs: f64 = secs.parse().map_err(|_| bad())?;
    Duration::try_from_secs_f64(secs).map_err(|_| bad())
}

/// Parses `3s:2,8s:#` into key presses.
pub fn parse_keys(spec: &str) -> Result<Vec<(Duration, Digit)>, LoadgenError> {
    let mut keys = Vec::new();
    for item in spec.split(',').map(str::trim).filter(|s| !s.is_empty()) {
        let bad = || LoadgenError::BadKey {
            item: item.to_string(),
        };
        let (at, key) = item.split_once(':').ok_or_else(bad)?;
        let mut chars = key.trim().chars();
        let digit = match (chars.next(), chars.next()) {
            (Some(c), None) => Digit::from_char(c).ok_or_else(bad)?,
            _ => return Err(bad()),
        };
        keys.push((parse_duration(at).map_err(|_| bad())?, digit));
    }
    keys.sort_by_key(|k| k.0);
    Ok(keys)
}

/// One second of a 440 Hz tone at about −16 dBm0 in µ-law: caller "speech" that no DTMF
/// detector takes for a key and no silence detector for silence.
pub fn tone_second() -> Vec<u8> {
    let pcm: Vec<i16> = (0..8000)
        .map(|i| {
            let t = f64::from(i) / 8000.0;
            (5000.0 * (2.0 * std::f64::consts::PI * 440.0 * t).sin()) as i16
        })
        .collect();
    let mut out = vec![0u8; pcm.len()];
    encode_ulaw(&pcm, &mut out);
    out
}

/// What a run did.
#[derive(Debug, Clone, Default)]
pub struct Report {
    pub attempted: u32,
    pub answered: u32,
    pub completed: u32,
    pub failed: u32,
    /// Calls ivrd hung up (after a transfer or a hang-up node).
    pub remote_hangups: u32,
    pub rejected: u32,
    pub timeouts: u32,
    /// Answered calls for which no RTP from ivrd was counted (not with [`RtpDrain::Off`]; with
    /// `Sampled`, calls with under ~1.1 s of media may be missed).
    pub no_media: u32,
    /// Whether `no_media` was measured.
    pub media_checked: bool,
    pub refers: u32,
    pub keys_sent: u64,
    /// Call-IDs of the calls that saw a 2xx to their INVITE (crash tests match cases by them).
    pub answered_call_ids: Vec<String>,
    pub setup_mean: Duration,
    pub setup_max: Duration,
    /// Answered calls per second between the first INVITE and the last 2xx (the set-up rate
    /// achieved).
    pub setup_rate: f64,
    /// Wall-clock time of the first 2xx to an INVITE (for start-up measurements: exec of ivrd →
    /// first call answered).
    pub first_answer: Option<SystemTime>,
    /// The shared RTP socket's counters.
    pub rtp: RtpStats,
    /// The load generator's own user + system CPU time.
    pub cpu: Duration,
    pub wall: Duration,
}

struct Tx<'a> {
    sip: &'a UdpSocket,
    target: SocketAddr,
    rtp: &'a mut SharedRtp,
}

impl Transmit for Tx<'_> {
    fn sip(&mut self, bytes: &[u8]) {
        // Loopback UDP: a full send buffer drops, as the network would; retransmission covers it.
        let _ = self.sip.try_send_to(bytes, self.target);
    }

    fn rtp(&mut self, to: SocketAddr, bytes: &[u8]) {
        self.rtp.queue(to, bytes);
    }
}

/// Places `opts.calls` calls and waits for all of them to end. Run it on a current-thread tokio
/// runtime: everything happens in this one task.
pub async fn run(opts: &Options) -> Result<Report, LoadgenError> {
    let local_ip = opts.target.ip();
    let bind = SocketAddr::new(local_ip, 0);
    // Bound as ivrd binds its own (a 4 MiB receive buffer): this one task also sends every
    // call's RTP, and at 3,000 calls the default buffer (~200 KiB) overflowed meanwhile; every
    // response lost then cost a call seconds of retransmissions that ivrd never saw.
    let sip = crate::runtime::transport::bind_udp(bind)
        .map_err(|source| LoadgenError::Bind { addr: bind, source })?;
    let local = sip
        .local_addr()
        .map_err(|source| LoadgenError::Bind { addr: bind, source })?;
    let mut rtp = SharedRtp::bind(local_ip, opts.rtp_drain)?;
    let run_tag = format!("lg{}", local.port());
    let script = Script {
        keys: opts.keys.clone(),
        duration: opts.duration,
        transfer_status: opts.transfer_status.clone(),
        audio: tone_second(),
    };
    let cpu0 = process_cpu();
    let t0 = Instant::now();
    let spacing = Duration::from_secs_f64(1.0 / opts.rate.max(0.001));
    let last_end = spacing * opts.calls + opts.duration + GRACE;
    let mut calls: Vec<Call> = Vec::with_capacity(opts.calls as usize);
    let mut report = Report::default();
    let mut ticker = tokio::time::interval(TICK);
    ticker.set_missed_tick_behavior(MissedTickBehavior::Skip);
    let mut buf = vec![0u8; 65_536];
    let mut rtp_buf = [0u8; RTP_BUF];
    loop {
        tokio::select! {
            r = sip.recv_from(&mut buf) => {
                let (n, _) = r.map_err(|source| LoadgenError::Recv { source })?;
                let mut tx = Tx { sip: &sip, target: opts.target, rtp: &mut rtp };
                on_sip(&buf[..n], &run_tag, &mut calls, &script, &mut tx);
            }
            _ = ticker.tick() => {
                let now = Instant::now();
                rtp.drain(now);
                let mut tx = Tx { sip: &sip, target: opts.target, rtp: &mut rtp };
                while (calls.len() as u32) < opts.calls && now >= t0 + spacing * calls.len() as u32 {
                    let index = calls.len() as u32;
                    calls.push(Call::start(
                        now, index, &run_tag, local, opts.target, &opts.called, tx.rtp.port(), &mut tx,
                    ));
                }
                let mut all_ended = true;
                for (index, call) in calls.iter_mut().enumerate() {
                    call.on_tick(now, &script, &mut rtp_buf, &mut tx);
                    if call.outcome().is_none() {
                        all_ended = false;
                        // Idempotent; an ended call stops claiming its ivrd port.
                        if let Some(ivrd) = call.media_to() {
                            tx.rtp.expect_from(index, ivrd);
                        }
                    }
                }
                rtp.flush();
                if calls.len() as u32 == opts.calls && all_ended {
                    break;
                }
                if now >= t0 + last_end {
                    break;
                }
            }
        }
    }
    report.wall = t0.elapsed();
    rtp.drain_now();
    summarise(&calls, &rtp, &mut report);
    report.rtp = rtp.stats();
    report.cpu = process_cpu().saturating_sub(cpu0);
    Ok(report)
}

fn on_sip(datagram: &[u8], run_tag: &str, calls: &mut [Call], script: &Script, tx: &mut Tx<'_>) {
    let Ok(msg) = parse(datagram) else { return };
    let headers = match &msg {
        Message::Request(r) => &r.headers,
        Message::Response(r) => &r.headers,
    };
    let Some(call) = headers
        .get("Call-ID")
        .and_then(|id| Call::index_of(id, run_tag))
        .and_then(|i| calls.get_mut(i))
    else {
        return;
    };
    let now = Instant::now();
    match &msg {
        Message::Request(req) => call.on_request(now, req, script, tx),
        Message::Response(resp) => call.on_response(now, resp, tx),
    }
    // SIP handling queues no RTP today; flush anyway so nothing waits for the next tick.
    tx.rtp.flush();
}

fn summarise(calls: &[Call], rtp: &SharedRtp, report: &mut Report) {
    let mut setup_total = Duration::ZERO;
    report.attempted = calls.len() as u32;
    report.media_checked = rtp.drains();
    let first_invite = calls.first().map(Call::started);
    let mut last_answer = None;
    let mut first_answer: Option<Instant> = None;
    for (index, call) in calls.iter().enumerate() {
        report.refers += call.refers();
        report.keys_sent += call.keys_sent() as u64;
        if let Some(setup) = call.setup_time() {
            report.answered += 1;
            report.answered_call_ids.push(call.call_id().to_string());
            setup_total += setup;
            report.setup_max = report.setup_max.max(setup);
            let answered_at = call.started() + setup;
            last_answer = last_answer.max(Some(answered_at));
            first_answer = Some(first_answer.map_or(answered_at, |f| f.min(answered_at)));
            if rtp.drains() && rtp.received(index) == 0 {
                report.no_media += 1;
            }
        }
        match call.outcome() {
            Some(o) if o.is_success() => {
                report.completed += 1;
                if o == Outcome::RemoteHangUp {
                    report.remote_hangups += 1;
                }
            }
            Some(Outcome::Rejected { .. }) => report.rejected += 1,
            Some(_) => report.timeouts += 1,
            None => report.timeouts += 1,
        }
    }
    report.failed = report.attempted - report.completed;
    if report.answered > 0 {
        report.setup_mean = setup_total / report.answered;
    }
    // Instant has no epoch: map it onto the wall clock through "now" on both clocks.
    let (now, wall_now) = (Instant::now(), SystemTime::now());
    report.first_answer = first_answer.and_then(|a| wall_now.checked_sub(now - a));
    if let (Some(first), Some(last)) = (first_invite, last_answer) {
        let span = last.saturating_duration_since(first).as_secs_f64();
        // n answers at a steady rate are n − 1 intervals apart.
        if span > 0.0 && report.answered > 1 {
            report.setup_rate = f64::from(report.answered - 1) / span;
        }
    }
}

/// This process's user + system CPU time, from /proc/self/stat (0 where that is unavailable).
pub fn process_cpu() -> Duration {
    let Ok(stat) = std::fs::read_to_string("/proc/self/stat") else {
        return Duration::ZERO;
    };
    // Fields after the parenthesised command name; utime and stime are fields 14 and 15.
    let Some(rest) = stat.rfind(')').map(|i| &stat[i + 1..]) else {
        return Duration::ZERO;
    };
    let fields: Vec<&str> = rest.split_whitespace().collect();
    let ticks: u64 = [11, 12]
        .iter()
        .filter_map(|&i| fields.get(i).and_then(|f| f.parse::<u64>().ok()))
        .sum();
    // USER_HZ is 100 on every Linux ABI.
    Duration::from_millis(ticks * 10)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn durations_and_keys_parse() {
        assert_eq!(parse_duration("20s").unwrap(), Duration::from_secs(20));
        assert_eq!(
            parse_duration("1500ms").unwrap(),
            Duration::from_millis(1500)
        );
        assert_eq!(parse_duration("2.5").unwrap(), Duration::from_millis(2500));
        assert!(parse_duration("soon").is_err());
        let keys = parse_keys("8s:#, 3s:2").unwrap();
        assert_eq!(
            keys[0],
            (Duration::from_secs(3), Digit::from_char('2').unwrap())
        );
        assert_eq!(
            keys[1],
            (Duration::from_secs(8), Digit::from_char('#').unwrap())
        );
        assert!(parse_keys("3s:22").is_err());
        assert!(parse_keys("3s").is_err());
    }

    #[test]
    fn tone_is_loud_enough_to_be_speech() {
        let tone = tone_second();
        assert_eq!(tone.len(), 8000);
        let mut pcm = vec![0i16; 8000];
        crate::media::g711::decode_ulaw(&tone, &mut pcm);
        let peak = pcm.iter().map(|s| s.unsigned_abs()).max().unwrap();
        assert!(peak > 4000, "peak {peak}");
    }

    #[test]
    fn own_cpu_time_is_readable() {
        let spin = Instant::now();
        let mut x = 0u64;
        while spin.elapsed() < Duration::from_millis(50) {
            x = x.wrapping_add(1);
        }
        std::hint::black_box(x);
        assert!(process_cpu() > Duration::ZERO);
    }
}
