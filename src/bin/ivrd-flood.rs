//! `ivrd-flood`: abusive traffic for the flood test and `bench/flood.sh`, loopback only.
//!
//! `sip` mode sends INVITEs from one untrusted source at a fixed rate, each with its own
//! Call-ID and branch (patched into one pre-built datagram, so the sender costs almost nothing
//! per packet and the rate it reports is the rate it achieved). `rtp` mode sends a mix of
//! well-formed RTP and RFC 4733 key events from a foreign SSRC, oversize datagrams and garbage
//! at one media port, as fast as it can or at `--rate`. It prints `sent=N errors=E secs=S` when done.

use clap::{Parser, ValueEnum};
use std::net::{SocketAddr, UdpSocket};
use std::process::ExitCode;
use std::time::{Duration, Instant};

#[derive(Debug, Clone, Copy, ValueEnum)]
enum Mode {
    /// INVITEs with unique Call-IDs, paced to `--rate`.
    Sip,
    /// RTP, oversize and garbage datagrams, unpaced unless `--rate` is given.
    Rtp,
}

/// Floods one ivrd address with SIP INVITEs or with RTP abuse.
#[derive(Debug, Parser)]
#[command(name = "ivrd-flood", version)]
struct Cli {
    #[arg(long, value_enum, default_value = "sip")]
    mode: Mode,
    /// Where to send (loopback only).
    #[arg(long)]
    target: SocketAddr,
    /// Our source address.
    #[arg(long, default_value = "127.0.0.1:0")]
    bind: SocketAddr,
    /// Datagrams per second; 0 sends as fast as the socket takes them.
    #[arg(long, default_value_t = 10_000)]
    rate: u32,
    /// Stop after this many seconds.
    #[arg(long, default_value_t = 10.0)]
    secs: f64,
    /// Stop after this many datagrams (0: no limit).
    #[arg(long, default_value_t = 0)]
    count: u64,
    /// Stop once this file exists (checked every 1,000 datagrams), so a script can end the
    /// flood at a moment of its choosing and still read the exact count.
    #[arg(long)]
    stop_file: Option<std::path::PathBuf>,
    /// RTP mode: the payload type of the audio packets (8, PCMA, is what SIPp's callers use).
    #[arg(long, default_value_t = 8)]
    audio_pt: u8,
    /// RTP mode: the payload type of the injected telephone-events.
    #[arg(long, default_value_t = 101)]
    event_pt: u8,
}

/// Width of the decimal counter patched into every datagram.
const COUNTER_DIGITS: usize = 10;
const COUNTER_MARK: &str = "@@@@@@@@@@";

/// One INVITE with three copies of the counter mark (branch, Call-ID, From tag).
fn invite_template(target: SocketAddr, local: SocketAddr) -> (Vec<u8>, Vec<usize>) {
    let sdp = format!(
        "v=0\r\no=flood 1 1 IN IP4 {ip}\r\ns=-\r\nc=IN IP4 {ip}\r\nt=0 0\r\nm=audio 9 RTP/AVP 0\r\n",
        ip = local.ip()
    );
    let text = format!(
        "INVITE sip:12345@{target} SIP/2.0\r\n\
         Via: SIP/2.0/UDP {local};branch=z9hG4bK{COUNTER_MARK}\r\n\
         From: <sip:13800000000@{ip}>;tag=f{COUNTER_MARK}\r\n\
         To: <sip:12345@{target}>\r\n\
         Call-ID: flood-{COUNTER_MARK}@{ip}\r\n\
         CSeq: 1 INVITE\r\n\
         Contact: <sip:flood@{local}>\r\n\
         Max-Forwards: 70\r\n\
         Content-Type: application/sdp\r\n\
         Content-Length: {len}\r\n\r\n{sdp}",
        ip = local.ip(),
        len = sdp.len()
    );
    let offsets = text.match_indices(COUNTER_MARK).map(|(i, _)| i).collect();
    (text.into_bytes(), offsets)
}

fn patch_counter(buf: &mut [u8], offsets: &[usize], n: u64) {
    let mut digits = [b'0'; COUNTER_DIGITS];
    let mut v = n;
    for d in digits.iter_mut().rev() {
        *d = b'0' + (v % 10) as u8;
        v /= 10;
    }
    for &at in offsets {
        buf[at..at + COUNTER_DIGITS].copy_from_slice(&digits);
    }
}

/// 20 ms of the in-band DTMF key 9 (852 Hz + 1477 Hz, ITU-T Q.23), A-law, starting at sample
/// `at`: what a stranger would send to make ivrd hear a key the caller never pressed.
fn key9_frame(at: u64, out: &mut [u8; 160]) {
    let mut pcm = [0i16; 160];
    for (i, s) in pcm.iter_mut().enumerate() {
        let t = (at + i as u64) as f64 / 8000.0;
        let v = (2.0 * std::f64::consts::PI * 852.0 * t).sin()
            + (2.0 * std::f64::consts::PI * 1477.0 * t).sin();
        *s = (v * 8000.0) as i16;
    }
    ivrd::media::g711::encode_alaw(&pcm, out);
}

/// Bytes of the largest abuse datagram (the oversize RTP packet).
const ABUSE_MAX: usize = 8000;

/// One RTP packet with the given header fields, written by the crate's own RTP writer.
fn rtp(
    pt: u8,
    marker: bool,
    ssrc: u32,
    seq: u16,
    ts: u32,
    payload: &[u8],
    out: &mut [u8],
) -> usize {
    ivrd::media::rtp::RtpSender::new(ssrc, seq, ts)
        .write_event_packet(pt & 0x7f, marker, ts, payload, out)
        .unwrap_or(0)
}

/// The `n`th RTP-abuse datagram into `out`, returning its length; a cycle of: a continuous
/// stream of key-9 tone audio under a foreign SSRC, an oversize RTP packet, garbage, a
/// truncated header, an empty datagram, and an RFC 4733 key-9 event (an attempt to inject a
/// key into the call).
fn rtp_abuse(n: u64, audio_pt: u8, event_pt: u8, out: &mut [u8; ABUSE_MAX]) -> usize {
    let seq = (n.wrapping_mul(7919) & 0xffff) as u16;
    let ts = (n.wrapping_mul(2_654_435_761) & 0xffff_ffff) as u32;
    let k = n / 6;
    match n % 6 {
        0 => {
            let mut frame = [0u8; 160];
            key9_frame(k * 160, &mut frame);
            let (seq, ts) = ((k & 0xffff) as u16, (k * 160) as u32);
            rtp(audio_pt, false, 0xdead_0001, seq, ts, &frame, out)
        }
        1 => {
            let payload = [0x55u8; ABUSE_MAX - 12];
            rtp(audio_pt, false, 0xbad0_bad0, seq, ts, &payload, out)
        }
        2 => {
            for (i, b) in out.iter_mut().take(97).enumerate() {
                *b = (n.wrapping_mul(31).wrapping_add(i as u64 * 131) & 0xff) as u8;
            }
            97
        }
        3 => {
            out[..3].copy_from_slice(&[0x80, audio_pt & 0x7f, 0x12]);
            3
        }
        4 => 0,
        _ => {
            // RFC 4733 §2.3: event 9, end bit on every other packet, volume 10, duration 800.
            let end = if k % 2 == 1 { 0x80 } else { 0 };
            rtp(
                event_pt,
                true,
                0x0bad_d7f0,
                seq,
                ts,
                &[9, end | 10, 0x03, 0x20],
                out,
            )
        }
    }
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    if !cli.target.ip().is_loopback() || !cli.bind.ip().is_loopback() {
        eprintln!("ivrd-flood: loopback addresses only");
        return ExitCode::from(2);
    }
    let socket = match UdpSocket::bind(cli.bind) {
        Ok(s) => s,
        Err(e) => {
            eprintln!("ivrd-flood: cannot bind {}: {e}", cli.bind);
            return ExitCode::from(1);
        }
    };
    let local = socket.local_addr().unwrap_or(cli.bind);
    let (mut invite, offsets) = invite_template(cli.target, local);
    let mut abuse = [0u8; ABUSE_MAX];
    let start = Instant::now();
    let limit = Duration::from_secs_f64(cli.secs.max(0.0));
    let (mut sent, mut errors) = (0u64, 0u64);
    while start.elapsed() < limit && (cli.count == 0 || sent + errors < cli.count) {
        if cli.rate > 0 {
            // Pacing against the start, not per packet, so the average rate holds exactly.
            let due = (start.elapsed().as_secs_f64() * f64::from(cli.rate)) as u64;
            if sent + errors >= due {
                std::thread::sleep(Duration::from_micros(500));
                continue;
            }
        }
        let n = sent + errors;
        if n % 1000 == 0 && cli.stop_file.as_ref().is_some_and(|f| f.exists()) {
            break;
        }
        let datagram: &[u8] = match cli.mode {
            Mode::Sip => {
                patch_counter(&mut invite, &offsets, n);
                &invite
            }
            Mode::Rtp => {
                let len = rtp_abuse(n, cli.audio_pt, cli.event_pt, &mut abuse);
                &abuse[..len]
            }
        };
        match socket.send_to(datagram, cli.target) {
            Ok(_) => sent += 1,
            Err(_) => errors += 1,
        }
    }
    println!(
        "sent={sent} errors={errors} secs={:.3}",
        start.elapsed().as_secs_f64()
    );
    ExitCode::SUCCESS
}
