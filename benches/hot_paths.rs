//! Criterion micro-benchmarks of ivrd's per-call and per-packet hot paths (issue 7).
//!
//! Each benchmark drives one pure module the way the runtime does, with realistic input: a carrier
//! INVITE with SDP, 20 ms G.711 frames, one media tick with one incoming RTP packet, one media
//! clock tick over a worker's 1,000 calls, one recorder frame, one dialplan key press. Run with
//! short windows on a shared machine:
//!
//! ```sh
//! cargo bench --bench hot_paths -- --warm-up-time 1 --measurement-time 3
//! ```

use std::hint::black_box;
use std::net::{IpAddr, Ipv4Addr, SocketAddr};
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::{Duration, Instant};

use criterion::{BatchSize, Criterion, Throughput, criterion_group, criterion_main};

use ivrd::dialplan::calendar::WallClock;
use ivrd::dialplan::engine::{Action, CallStart, Engine, Event};
use ivrd::dialplan::load::load_file;
use ivrd::loadgen::process_cpu;
use ivrd::media::digit::{Digit, DigitEvent, DtmfMethod};
use ivrd::media::dtmf::GoertzelDetector;
use ivrd::media::dtmf::Rfc4733Encoder;
use ivrd::media::g711::{self, Codec, FRAME_SAMPLES};
use ivrd::media::prompt::{Prompt, PromptId};
use ivrd::media::rtcp::NtpTimestamp;
use ivrd::media::rtp::{RTP_HEADER_LEN, RtpSender, parse_rtp};
use ivrd::media::session::{MediaSession, SessionParams, TICK, TickOutput};
use ivrd::runtime::media_call::MessageTap;
use ivrd::runtime::recorder::{
    CallRecorder, MessageRecorder, RecordingDate, RecordingName, RecordingWriter,
};
use ivrd::sip::message::{Message, parse};
use ivrd::sip::response::{ResponseParts, build_response};
use ivrd::sip::sdp::{AudioCodec, Direction, LocalMedia, answer_offer, write_answer};

/// A carrier-style INVITE: several Vias, Record-Route, P-Asserted-Identity and an SDP offer with
/// PCMU, PCMA and telephone-event.
const INVITE: &str = "INVITE sip:1234501@10.0.0.5:5060 SIP/2.0\r\n\
Via: SIP/2.0/UDP 10.0.0.1:5060;branch=z9hG4bK-524287-1---a1b2c3d4e5f6;rport\r\n\
Via: SIP/2.0/UDP 10.20.0.7:5060;received=10.20.0.7;branch=z9hG4bK7f3a9c1e\r\n\
Record-Route: <sip:10.0.0.1:5060;lr>\r\n\
Max-Forwards: 69\r\n\
From: \"13800138000\" <sip:13800138000@10.20.0.7>;tag=as6f2c8d1e\r\n\
To: <sip:1234501@10.0.0.5>\r\n\
Call-ID: 7b3e1f0c2a9d4e6b8c5a1f3e7d9b2c4a@10.20.0.7\r\n\
CSeq: 102 INVITE\r\n\
Contact: <sip:13800138000@10.20.0.7:5060>\r\n\
P-Asserted-Identity: <sip:+8613800138000@10.20.0.7>\r\n\
Allow: INVITE, ACK, CANCEL, OPTIONS, BYE, REFER, NOTIFY, INFO, UPDATE\r\n\
Supported: replaces, timer\r\n\
User-Agent: CarrierSBC/5.2\r\n\
Content-Type: application/sdp\r\n\
Content-Length: 235\r\n\
\r\n\
v=0\r\n\
o=- 1732600000 1732600000 IN IP4 10.20.0.7\r\n\
s=call\r\n\
c=IN IP4 10.20.0.7\r\n\
t=0 0\r\n\
m=audio 31000 RTP/AVP 0 8 101\r\n\
a=rtpmap:0 PCMU/8000\r\n\
a=rtpmap:8 PCMA/8000\r\n\
a=rtpmap:101 telephone-event/8000\r\n\
a=fmtp:101 0-16\r\n\
a=ptime:20\r\n\
a=sendrecv\r\n";

fn sdp_body() -> &'static [u8] {
    let start = INVITE.find("\r\n\r\n").map_or(0, |i| i + 4);
    &INVITE.as_bytes()[start..]
}

fn local_media() -> LocalMedia {
    LocalMedia {
        addr: IpAddr::V4(Ipv4Addr::new(10, 0, 0, 5)),
        rtp_port: 20_000,
        session_id: 42,
        session_version: 42,
    }
}

fn bench_sip(c: &mut Criterion) {
    assert_eq!(sdp_body().len(), 235, "Content-Length of the fixture");
    let source: SocketAddr = "10.0.0.1:5060".parse().unwrap();
    let answer = write_answer(
        &local_media(),
        &answer_offer(sdp_body(), &[AudioCodec::Pcmu, AudioCodec::Pcma]).unwrap(),
        Direction::SendRecv,
    );
    c.bench_function("sip/parse_invite+build_200", |b| {
        b.iter(|| {
            let Ok(Message::Request(req)) = parse(black_box(INVITE.as_bytes())) else {
                panic!("fixture must parse");
            };
            let parts = ResponseParts {
                to_tag: Some("ivrd-8f3a2c"),
                source: Some(source),
                contact: Some("sip:ivrd@10.0.0.5:5060"),
                record_route: true,
                extra: &[(
                    "Allow",
                    "INVITE, ACK, CANCEL, BYE, OPTIONS, INFO, REFER, NOTIFY",
                )],
                body: Some(("application/sdp", answer.as_bytes())),
            };
            black_box(build_response(&req, 200, "OK", &parts))
        })
    });
    c.bench_function("sdp/answer_offer+write_answer", |b| {
        let local = local_media();
        b.iter(|| {
            let oa =
                answer_offer(black_box(sdp_body()), &[AudioCodec::Pcmu, AudioCodec::Pcma]).unwrap();
            black_box(write_answer(&local, &oa, Direction::SendRecv))
        })
    });
}

/// 20 ms of a 440 Hz tone with some noise-free harmonics: a plausible voice-band frame.
fn voice_frame() -> [i16; FRAME_SAMPLES] {
    let mut f = [0i16; FRAME_SAMPLES];
    for (i, s) in f.iter_mut().enumerate() {
        let t = i as f64 / 8000.0;
        let v = 6000.0 * (2.0 * std::f64::consts::PI * 440.0 * t).sin()
            + 2000.0 * (2.0 * std::f64::consts::PI * 1320.0 * t).sin();
        *s = v as i16;
    }
    f
}

fn bench_g711_dtmf(c: &mut Criterion) {
    let pcm = voice_frame();
    let mut ulaw = [0u8; FRAME_SAMPLES];
    g711::encode_ulaw(&pcm, &mut ulaw);
    c.bench_function("g711/encode_ulaw_160", |b| {
        let mut out = [0u8; FRAME_SAMPLES];
        b.iter(|| black_box(g711::encode_ulaw(black_box(&pcm), &mut out)))
    });
    c.bench_function("g711/decode_ulaw_160", |b| {
        let mut out = [0i16; FRAME_SAMPLES];
        b.iter(|| black_box(g711::decode_ulaw(black_box(&ulaw), &mut out)))
    });
    c.bench_function("g711/encode_alaw_160", |b| {
        let mut out = [0u8; FRAME_SAMPLES];
        b.iter(|| black_box(g711::encode_alaw(black_box(&pcm), &mut out)))
    });
    c.bench_function("g711/decode_alaw_160", |b| {
        let mut out = [0i16; FRAME_SAMPLES];
        b.iter(|| black_box(g711::decode_alaw(black_box(&ulaw), &mut out)))
    });
    c.bench_function("dtmf/goertzel_push_20ms", |b| {
        let mut det = GoertzelDetector::new();
        let base = Instant::now();
        let mut k = 0u32;
        b.iter(|| {
            k = k.wrapping_add(1);
            det.push(base + TICK * (k % 1_000_000), black_box(&pcm));
            black_box(det.poll())
        })
    });
}

fn bench_rtp(c: &mut Criterion) {
    let payload = [0xFFu8; FRAME_SAMPLES];
    c.bench_function("rtp/write_packet", |b| {
        let mut tx = RtpSender::new(0x1234_5678, 1, 160);
        let mut out = [0u8; RTP_HEADER_LEN + FRAME_SAMPLES];
        b.iter(|| {
            let n = tx
                .write_packet(0, false, black_box(&payload), &mut out)
                .unwrap();
            tx.advance(FRAME_SAMPLES as u32);
            black_box(n)
        })
    });
    let mut tx = RtpSender::new(0x1234_5678, 1, 160);
    let mut pkt = [0u8; RTP_HEADER_LEN + FRAME_SAMPLES];
    tx.write_packet(0, false, &payload, &mut pkt).unwrap();
    c.bench_function("rtp/parse", |b| {
        b.iter(|| black_box(parse_rtp(black_box(&pkt)).map(|p| p.sequence)))
    });
}

fn session_params(remote: SocketAddr) -> SessionParams {
    SessionParams {
        codec: Codec::Pcmu,
        codec_pt: 0,
        dtmf_pt: Some(101),
        remote: Some(remote),
        peer_receives: true,
        peer_sends: true,
        ssrc: 0xCAFE_0001,
        initial_seq: 100,
        initial_ts: 1000,
        cname: "ivrd@bench".into(),
        media_timeout: Duration::from_secs(30),
    }
}

/// A one-minute prompt of `tone` repeated.
fn minute_prompt(tone: &[i16]) -> Arc<Prompt> {
    let minute: Vec<i16> = tone.iter().copied().cycle().take(8000 * 60).collect();
    Arc::new(Prompt::from_samples(
        PromptId::new("bench").unwrap(),
        &minute,
    ))
}

/// One media tick as the call task runs it: the caller's packet for this 20 ms arrives, then the
/// tick sends our prompt frame and hands both channels to the recorder.
fn bench_media_tick(c: &mut Criterion) {
    let remote: SocketAddr = "127.0.0.1:31000".parse().unwrap();
    let tone = voice_frame();
    let prompt = minute_prompt(&tone);
    let mut caller_payload = [0u8; FRAME_SAMPLES];
    g711::encode_ulaw(&tone, &mut caller_payload);
    c.bench_function("media/tick_with_rx_packet", |b| {
        let base = Instant::now();
        let mut session = MediaSession::new(base, session_params(remote), 0.5).unwrap();
        let mut caller = RtpSender::new(0x0BAD_F00D, 7, 0);
        let mut pkt = [0u8; RTP_HEADER_LEN + FRAME_SAMPLES];
        let mut out = TickOutput::default();
        let mut k: u32 = 0;
        b.iter(|| {
            k += 1;
            if !session.is_playing() {
                session.play(Arc::clone(&prompt));
            }
            let now = base + TICK * k;
            let n = caller
                .write_packet(0, false, &caller_payload, &mut pkt)
                .unwrap();
            caller.advance(FRAME_SAMPLES as u32);
            session.on_rtp(now, remote, &pkt[..n]);
            let ntp = NtpTimestamp::from_unix(Duration::from_secs(1_764_000_000) + TICK * k);
            while session.handle_timeout(now, ntp, 0.5, &mut out) {
                black_box(out.rtp_len);
            }
            while let Some(ev) = session.poll_event() {
                black_box(ev);
            }
        })
    });
}

/// Calls on one media clock worker in [`bench_media_tick_calls`]: a worker holds half the calls
/// of the 2-core machine, so this is the 2,000-call load of issue 7.
const TICK_CALLS: usize = 1_000;

/// The fake caller of one call in [`bench_media_tick_calls`]: only the RTP header fields that
/// change, so the bench spends its time on ivrd's side, not on building packets.
struct FakeCaller {
    ssrc: u32,
    seq: u16,
    ts: u32,
}

impl FakeCaller {
    /// Writes the header of the caller's next packet into `pkt`, whose payload is in place.
    fn next_header(&mut self, pkt: &mut [u8], pt: u8, marker: bool, ts: u32) {
        pkt[0] = 0x80;
        pkt[1] = pt | if marker { 0x80 } else { 0 };
        pkt[2..4].copy_from_slice(&self.seq.to_be_bytes());
        pkt[4..8].copy_from_slice(&ts.to_be_bytes());
        pkt[8..12].copy_from_slice(&self.ssrc.to_be_bytes());
        self.seq = self.seq.wrapping_add(1);
    }
}

/// Bytes read between two bench ticks: twice the L3 cache of the project's VM (32 MiB).
const EVICT_BYTES: usize = 64 << 20;

/// Reads a word of every 64-byte line of `buf`, which pushes what the last tick left out of
/// every cache level. In the daemon a call's state is as cold when its next tick comes 20 ms
/// later: the kernel's socket work for the other calls, the recorder, the load generator and
/// everything else on the machine run in between (its profile shows the tick's loads of call
/// state as the costly instructions).
fn evict_caches(buf: &[u64]) -> u64 {
    buf.iter().step_by(8).fold(0, |acc, &w| acc.wrapping_add(w))
}

/// One call as a media clock worker holds it, without the sockets.
struct TickedCall {
    session: MediaSession,
    recorder: CallRecorder,
    message: Option<MessageTap>,
    caller: FakeCaller,
}

/// One media clock tick over [`TICK_CALLS`] calls, as `start_tick` and `CallMedia::on_tick` run
/// it minus the system calls: every other tick a call gets the caller's two packets (the clock
/// reads a socket every other tick), then the session's tick and the recorder push, and for
/// half the calls the caller's message. Each call has heard an RFC 4733 key (in-band detection
/// is off, as for most of a call in the load test). [`evict_caches`] runs (untimed) between
/// ticks, so the cache lines of call state a tick touches (~3 KiB of session per call, its
/// 7.5 KiB recording block, for half of them a second block for the message) come from memory,
/// as in the daemon.
///
/// The recording writer is created but not run: the calls' first blocks fill its queue and
/// every later full block is counted as dropped and reused in place, which keeps the writer's
/// disk work (and its thread) out of the measurement.
fn bench_media_tick_calls(c: &mut Criterion) {
    let remote: SocketAddr = "127.0.0.1:31000".parse().unwrap();
    let tone = voice_frame();
    let prompt = minute_prompt(&tone);
    let dir = TempDir::new("tick");
    let (writer, _idle_worker) = RecordingWriter::new(&dir.0, 2 * TICK_CALLS);
    let date = RecordingDate::from_unix_seconds(1_764_000_000, 8 * 3600);
    let base = Instant::now();
    let mut calls: Vec<TickedCall> = (0..TICK_CALLS)
        .map(|i| {
            let id = format!("bench-tick-{i}");
            let recorder = CallRecorder::start(&writer, &RecordingName::for_call(&id, date))
                .expect("writer queue holds every open");
            let message = (i % 2 == 0).then(|| {
                let name = RecordingName::for_message(&id, date, 1);
                let rec = MessageRecorder::start(&writer, &name).expect("queue holds it");
                MessageTap::new(
                    Some(rec),
                    base,
                    Duration::from_secs(3600),
                    Some(Duration::from_secs(5)),
                )
            });
            let mut session = MediaSession::new(base, session_params(remote), 0.5).unwrap();
            session.play(Arc::clone(&prompt));
            TickedCall {
                session,
                recorder,
                message,
                caller: FakeCaller {
                    ssrc: 0x0BAD_0000 + i as u32,
                    seq: 7,
                    ts: 0,
                },
            }
        })
        .collect();
    let mut pkt = [0u8; RTP_HEADER_LEN + FRAME_SAMPLES];
    g711::encode_ulaw(&tone, &mut pkt[RTP_HEADER_LEN..]);
    let mut out = TickOutput::default();
    let mut k: u32 = 0;
    let mut tick = |calls: &mut [TickedCall], k: u32| {
        let now = base + TICK * k;
        let ntp = NtpTimestamp::from_unix(Duration::from_secs(1_764_000_000) + TICK * k);
        for (i, call) in calls.iter_mut().enumerate() {
            if (k as usize + i) % 2 == 0 {
                for _ in 0..2 {
                    let ts = call.caller.ts;
                    call.caller.next_header(&mut pkt, 0, false, ts);
                    call.caller.ts = ts.wrapping_add(FRAME_SAMPLES as u32);
                    call.session.on_rtp(now, remote, &pkt);
                }
            }
            while call.session.handle_timeout(now, ntp, 0.5, &mut out) {
                if out.ticked {
                    call.recorder.push_frame(&out.caller, &out.ivrd);
                    if let Some(tap) = call.message.as_mut() {
                        black_box(tap.push(now, &out.caller));
                    }
                }
                black_box(out.rtp_len);
            }
            while let Some(event) = call.session.poll_event() {
                if !call.session.is_playing() {
                    call.session.play(Arc::clone(&prompt));
                }
                black_box(event);
            }
        }
    };
    // A key as RFC 4733 from every caller (in-band detection stops), then a few ticks of audio.
    for call in &mut calls {
        let press = Rfc4733Encoder::new(Digit::D2, call.caller.ts, TICK * 5, 10);
        for event in press {
            let mut ev_pkt = [0u8; RTP_HEADER_LEN + 4];
            call.caller
                .next_header(&mut ev_pkt, 101, event.marker, event.timestamp);
            ev_pkt[RTP_HEADER_LEN..].copy_from_slice(&event.payload);
            call.session.on_rtp(base, remote, &ev_pkt);
        }
    }
    for _ in 0..10 {
        k += 1;
        tick(&mut calls, k);
    }
    let mut group = c.benchmark_group("media");
    group.throughput(Throughput::Elements(TICK_CALLS as u64));
    // Each tick also reads 64 MiB (untimed): fewer samples keep the run short.
    group.sample_size(20);
    let other_work: Vec<u64> = (0..EVICT_BYTES as u64 / 8).collect();
    group.bench_function(format!("tick_{TICK_CALLS}_calls"), |b| {
        b.iter_custom(|iters| {
            let mut took = Duration::ZERO;
            for _ in 0..iters {
                black_box(evict_caches(&other_work));
                k += 1;
                let start = Instant::now();
                tick(&mut calls, k);
                took += start.elapsed();
            }
            took
        })
    });
    group.finish();
}

struct TempDir(PathBuf);

impl TempDir {
    fn new(tag: &str) -> TempDir {
        let dir = std::env::temp_dir().join(format!("ivrd-bench-{tag}-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        TempDir(dir)
    }
}

impl Drop for TempDir {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.0);
    }
}

/// Frames in one bench recording: a 60 s call.
const CALL_FRAMES: u64 = 3_000;

/// Pushes `iters` frames in recordings of [`CALL_FRAMES`] frames each, letting the writer catch
/// up after every 25-frame block. With `push_only` the result is the wall time of the
/// `push_frame` calls; otherwise it is the CPU time of the whole process (all threads, 10 ms
/// resolution) for everything: pushes, the writer's WAV writes and, at the end of each recording,
/// finalise, fsync, rename and SHA-256. Time spent waiting for the disk is not counted.
fn record_frames(writer: &RecordingWriter, iters: u64, push_only: bool, seq: &mut u64) -> Duration {
    let caller = voice_frame();
    let ivrd = voice_frame();
    let date = RecordingDate::from_unix_seconds(1_764_000_000, 8 * 3600);
    let mut total = Duration::ZERO;
    let mut left = iters;
    while left > 0 {
        let n = left.min(CALL_FRAMES);
        *seq += 1;
        let name = RecordingName::for_call(&format!("bench-{seq}"), date);
        let mut rec = CallRecorder::start(writer, &name).unwrap();
        let cpu0 = process_cpu();
        let mut pushed = 0;
        while pushed < n {
            let block = (n - pushed).min(25);
            let t = Instant::now();
            for _ in 0..block {
                rec.push_frame(black_box(&caller), &ivrd);
            }
            if push_only {
                total += t.elapsed();
            }
            // The real caller pushes every 20 ms, which gives the writer time to keep up; a
            // tight loop must wait for it or blocks would be dropped.
            writer.drain_blocking().unwrap();
            pushed += block;
        }
        let summary = rec.finish_blocking().unwrap();
        if !push_only {
            total += process_cpu().saturating_sub(cpu0);
        }
        assert_eq!(summary.dropped_frames, 0, "the writer kept pace");
        let _ = std::fs::remove_file(&summary.path);
        left -= n;
    }
    total
}

fn bench_recorder(c: &mut Criterion) {
    let dir = TempDir::new("rec");
    let writer = RecordingWriter::spawn(&dir.0, 64).unwrap();
    let mut seq = 0u64;
    let mut group = c.benchmark_group("recorder");
    group.sample_size(10);
    // Only the pushes are timed but the writer's catch-up runs too, so the wall time is ~50x
    // the measured time: keep the window short.
    group.measurement_time(Duration::from_millis(300));
    group.warm_up_time(Duration::from_millis(100));
    group.bench_function("push_frame", |b| {
        b.iter_custom(|iters| record_frames(&writer, iters, true, &mut seq))
    });
    group.finish();
    let mut group = c.benchmark_group("recorder");
    group.sample_size(10);
    group.bench_function("push_frame+writer_cpu_per_frame", |b| {
        b.iter_custom(|iters| record_frames(&writer, iters, false, &mut seq))
    });
    group.finish();
}

fn bench_dialplan(c: &mut Criterion) {
    let root = Path::new(env!("CARGO_MANIFEST_DIR"));
    let plan = Arc::new(
        load_file(&root.join("dialplans/12345.toml"), &root.join("prompts"))
            .expect("shipped dialplan loads"),
    );
    let base = Instant::now();
    // Wednesday 2026-11-25 15:00 in Hainan (UTC+8): in office hours.
    let start = CallStart {
        now: base,
        caller: "13800138000".into(),
        called: "1234501".into(),
        trunk: None,
        wall: WallClock::from_unix(1_764_054_000, 8 * 60),
        case_id: Some("bench-case".into()),
        language: None,
    };
    // An engine in the main menu, prompt finished, waiting for a key.
    let in_menu = || {
        let mut e = Engine::new(Arc::clone(&plan), start.clone());
        for _ in 0..4 {
            let mut finished = Vec::new();
            while let Some(a) = e.poll_action() {
                if let Action::Play { id, .. } = a {
                    finished.push(id);
                }
            }
            for id in finished {
                e.handle(base, Event::PromptFinished { id });
            }
        }
        e
    };
    let key = DigitEvent {
        digit: Digit::from_char('3').unwrap(),
        method: DtmfMethod::Rfc4733,
        at: base,
    };
    c.bench_function("dialplan/handle_digit+poll", |b| {
        b.iter_batched_ref(
            in_menu,
            |e| {
                e.handle(base + Duration::from_secs(20), Event::Digit(key));
                while let Some(a) = e.poll_action() {
                    black_box(a);
                }
            },
            BatchSize::SmallInput,
        )
    });
}

criterion_group!(
    benches,
    bench_sip,
    bench_g711_dtmf,
    bench_rtp,
    bench_media_tick,
    bench_media_tick_calls,
    bench_recorder,
    bench_dialplan
);
criterion_main!(benches);
