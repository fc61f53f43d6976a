//! One task per answered call: it drives the call's [`MediaSession`] (RTP, 20 ms clock, DTMF)
//! and its dialplan [`Engine`], records the call, and at the end leaves its case in the outbox.
//! Deadlines are absolute, so the media clock does not drift.

use crate::case::skeleton::RecordingRef;
use crate::case::{CallFacts, CaseId, CaseSkeleton};
use crate::dialplan::calendar::WallClock;
use crate::dialplan::{Action, CallStart, Engine, Event, LoadedPlan, TransferResult};
use crate::media::g711::FRAME_SAMPLES;
use crate::media::prompt::{PromptId, PromptLibrary};
use crate::media::rtcp::NtpTimestamp;
use crate::media::session::{MediaEvent, MediaSession, SessionParams, TickOutput};
use crate::metrics::{Metrics, RecordingKind};
use crate::runtime::case_writer::{self, hangup_of, recording_ref, unix_ms_of};
use crate::runtime::ports::RtpSockets;
use crate::runtime::recorder::{
    CallRecorder, MessageRecorder, RecordingDate, RecordingName, RecordingWriter,
};
use crate::sip::sdp::{Direction, NegotiatedAudio};
use crate::sip::uas::{CallHandle, CallInfo, EndReason, TransferOutcome, TransferRequest};
use bytes::Bytes;
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};
use tokio::net::UdpSocket;
use tokio::sync::mpsc;
use tracing::Instrument;

/// What the SIP driver tells a call task.
#[derive(Debug)]
pub enum CallEvent {
    MediaChanged {
        audio: NegotiatedAudio,
        our_direction: Direction,
    },
    Info {
        content_type: String,
        body: Bytes,
    },
    Transfer {
        outcome: TransferOutcome,
    },
    Ended {
        reason: EndReason,
    },
}

/// What a call task asks of the SIP driver.
#[derive(Debug)]
pub enum CallCommand {
    HangUp {
        call: CallHandle,
        reason: EndReason,
    },
    Transfer {
        call: CallHandle,
        request: TransferRequest,
    },
}

/// What every call shares, set up once at start-up.
pub struct CallShared {
    pub plans: crate::runtime::plans::PlanStore,
    pub media_timeout: Duration,
    pub cname: String,
    /// The recording writer; `None` when it could not start (calls are still answered).
    pub recorder: Option<RecordingWriter>,
    /// Where cases go: the outbox, or memory while the disk refuses them.
    pub cases: Arc<case_writer::CaseSpool>,
    pub metrics: Arc<Metrics>,
    pub host: String,
    /// `[storage] dir`, where call markers live.
    pub storage: std::path::PathBuf,
}

/// Mean absolute sample value below which a frame counts as silence for "end on silence"
/// (about -45 dBm0: quieter than speech, louder than a G.711 idle channel).
const SILENCE_LEVEL: u32 = 120;

/// Bytes of one packet we send: RTP header plus one 20 ms G.711 frame.
const RTP_PACKET_BYTES: u64 = (crate::media::rtp::RTP_HEADER_LEN + FRAME_SAMPLES) as u64;

/// A caller message being recorded for the engine.
struct MessageInProgress {
    id: u64,
    started: Instant,
    max: Duration,
    silence_end: Option<Duration>,
    silent_since: Option<Instant>,
    recorder: Option<MessageRecorder>,
    due: bool,
}

/// Starts the task of an answered call.
pub fn spawn(
    handle: CallHandle,
    info: CallInfo,
    sockets: Option<RtpSockets>,
    events: mpsc::Receiver<CallEvent>,
    commands: mpsc::Sender<CallCommand>,
    shared: Arc<CallShared>,
) -> tokio::task::JoinHandle<()> {
    let span = tracing::info_span!("call", call_id = %info.call_id);
    tokio::spawn(run(handle, info, sockets, events, commands, shared).instrument(span))
}

fn session_params(
    audio: Option<&NegotiatedAudio>,
    direction: Direction,
    shared: &CallShared,
) -> SessionParams {
    SessionParams {
        codec: audio.map_or(crate::media::g711::Codec::Pcmu, |a| a.codec),
        codec_pt: audio.map_or(0, |a| a.codec_pt),
        dtmf_pt: audio.and_then(|a| a.dtmf_pt),
        remote: audio.and_then(|a| a.remote),
        peer_receives: audio.is_some_and(|a| a.peer_direction.peer_receives())
            && direction != Direction::Inactive,
        peer_sends: audio
            .is_some_and(|a| matches!(a.peer_direction, Direction::SendRecv | Direction::SendOnly))
            && matches!(direction, Direction::SendRecv | Direction::RecvOnly),
        ssrc: rand::random(),
        initial_seq: rand::random(),
        initial_ts: rand::random(),
        cname: shared.cname.clone(),
        media_timeout: shared.media_timeout,
    }
}

/// The call's state machines and what ties them together.
struct CallTask {
    handle: CallHandle,
    info: CallInfo,
    case_id: CaseId,
    answered: Instant,
    date: RecordingDate,
    session: MediaSession,
    engine: Engine,
    /// The prompts loaded with the call's plan version.
    prompts: Arc<PromptLibrary>,
    shared: Arc<CallShared>,
    commands: mpsc::Sender<CallCommand>,
    /// The engine's current `Play` id, reported finished when the session's queue drains.
    playing: Option<u64>,
    call_recorder: Option<CallRecorder>,
    message: Option<MessageInProgress>,
    messages_taken: u32,
    recordings: Vec<RecordingRef>,
    media_timed_out: bool,
    hangup_sent: bool,
}

async fn run(
    handle: CallHandle,
    info: CallInfo,
    sockets: Option<RtpSockets>,
    mut events: mpsc::Receiver<CallEvent>,
    commands: mpsc::Sender<CallCommand>,
    shared: Arc<CallShared>,
) {
    let sockets = sockets.and_then(|s| {
        Some((
            UdpSocket::from_std(s.rtp).ok()?,
            UdpSocket::from_std(s.rtcp).ok()?,
        ))
    });
    let params = session_params(info.audio.as_ref(), info.our_direction, &shared);
    let now = Instant::now();
    let (Some((rtp, rtcp)), Ok(session)) =
        (sockets, MediaSession::new(now, params, rand::random()))
    else {
        tracing::error!(rtp_port = info.rtp_port, "media unavailable; hanging up");
        let _ = commands
            .send(CallCommand::HangUp {
                call: handle,
                reason: EndReason::LocalHangup,
            })
            .await;
        return;
    };
    let serving = shared.plans.current();
    let plan = serving.plan.clone();
    let case_id = case_writer::new_case_id();
    let engine = Engine::new(plan.clone(), call_start(now, &info, &plan, &case_id));
    let date = RecordingDate::from_system_time(SystemTime::now(), plan.utc_offset_minutes * 60);
    let call_recorder = shared.recorder.as_ref().and_then(|w| {
        CallRecorder::start(w, &RecordingName::for_call(&info.call_id, date))
            .map_err(|e| {
                tracing::error!(error = %e, "call recording could not start; the call goes on");
                shared.metrics.recording_failed(RecordingKind::Call);
            })
            .ok()
    });
    let marker = crate::runtime::call_marker::CallMarker {
        case_id: case_id.to_string(),
        call_id: info.call_id.clone(),
        caller: info.caller.clone(),
        called: info.called.clone(),
        trunk: info.trunk.to_string(),
        received_unix_ms: unix_ms_of(info.received),
        answered_unix_ms: unix_ms_of(now),
        recording: call_recorder.as_ref().map(|_| {
            RecordingName::for_call(&info.call_id, date)
                .relative_wav()
                .to_string_lossy()
                .into_owned()
        }),
        host: shared.host.clone(),
    };
    let storage = shared.storage.clone();
    match tokio::task::spawn_blocking(move || crate::runtime::call_marker::write(&storage, &marker))
        .await
    {
        Ok(Ok(())) => {}
        _ => {
            tracing::error!("call marker not written; a crash during this call would leave no case")
        }
    }
    tracing::info!(plan = plan.name(), version = plan.version(), case_id = %case_id, "IVR started");
    let mut task = CallTask {
        handle,
        info,
        case_id,
        answered: now,
        date,
        session,
        engine,
        prompts: serving.prompts.clone(),
        shared,
        commands,
        playing: None,
        call_recorder,
        message: None,
        messages_taken: 0,
        recordings: Vec::new(),
        media_timed_out: false,
        hangup_sent: false,
    };
    task.apply_actions(now).await;
    let mut out = TickOutput::default();
    let (mut rtp_buf, mut rtcp_buf) = ([0u8; 2048], [0u8; 1500]);
    let end = loop {
        let mut deadline = task.session.poll_timeout();
        if let Some(at) = task.engine.poll_timeout() {
            deadline = deadline.min(at);
        }
        tokio::select! {
            event = events.recv() => match event {
                None => break EndReason::Shutdown,
                Some(CallEvent::Ended { reason }) => break reason,
                Some(event) => task.on_call_event(event),
            },
            received = rtp.recv_from(&mut rtp_buf) => {
                if let Ok((n, source)) = received {
                    task.session.on_rtp(Instant::now(), source, &rtp_buf[..n]);
                }
            }
            received = rtcp.recv_from(&mut rtcp_buf) => {
                if let Ok((n, _)) = received {
                    task.session.on_rtcp(Instant::now(), &rtcp_buf[..n]);
                }
            }
            _ = tokio::time::sleep_until(tokio::time::Instant::from_std(deadline)) => {
                let now = Instant::now();
                while task.session.handle_timeout(now, ntp_now(), rand::random(), &mut out) {
                    send(&rtp, &out.rtp[..out.rtp_len], out.rtp_to).await;
                    send(&rtcp, &out.rtcp[..out.rtcp_len], out.rtcp_to).await;
                    if out.ticked {
                        task.on_tick(now, &out.caller, &out.ivrd);
                    }
                }
                if task.engine.poll_timeout().is_some_and(|at| at <= now) {
                    task.engine.handle(now, Event::Timeout);
                }
            }
        }
        let now = Instant::now();
        if task.message.as_ref().is_some_and(|m| m.due) {
            task.stop_message(now).await;
        }
        task.on_media_events(now);
        task.apply_actions(now).await;
    };
    task.finish(end, &rtcp, &mut rtcp_buf).await;
}

fn call_start(now: Instant, info: &CallInfo, plan: &LoadedPlan, case_id: &CaseId) -> CallStart {
    let unix = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .unwrap_or_default()
        .as_secs();
    let number = |uri: &str| {
        crate::sip::uri::SipUri::parse(uri)
            .ok()
            .and_then(|u| u.number())
            .unwrap_or_default()
    };
    CallStart {
        now,
        caller: number(&info.caller),
        called: number(&info.called),
        trunk: Some(info.trunk.to_string()),
        wall: WallClock::from_unix(i64::try_from(unix).unwrap_or(0), plan.utc_offset_minutes),
        case_id: Some(case_id.to_string()),
        language: None,
    }
}

impl CallTask {
    fn on_call_event(&mut self, event: CallEvent) {
        let now = Instant::now();
        match event {
            CallEvent::MediaChanged {
                audio,
                our_direction,
            } => {
                tracing::debug!(
                    codec = audio.codec.name(),
                    direction = our_direction.as_str(),
                    "media changed"
                );
                self.session.update(
                    now,
                    session_params(Some(&audio), our_direction, &self.shared),
                );
            }
            CallEvent::Info { content_type, body } => {
                if !self.session.on_info(now, &content_type, &body) {
                    tracing::debug!(%content_type, "INFO without DTMF ignored");
                }
            }
            CallEvent::Transfer { outcome } => {
                let result = match outcome {
                    TransferOutcome::Succeeded => TransferResult::Accepted,
                    TransferOutcome::Failed { code } => TransferResult::Failed { code },
                };
                self.engine.handle(now, Event::Transfer(result));
            }
            CallEvent::Ended { .. } => {}
        }
    }

    fn on_media_events(&mut self, now: Instant) {
        while let Some(event) = self.session.poll_event() {
            match event {
                MediaEvent::Digit(d) => {
                    tracing::info!(digit = %d.digit, method = d.method.as_str(), "DTMF");
                    self.engine.handle(now, Event::Digit(d));
                }
                MediaEvent::PromptFinished(_) => {
                    if let (Some(id), false) = (self.playing, self.session.is_playing()) {
                        self.playing = None;
                        self.engine.handle(now, Event::PromptFinished { id });
                    }
                }
                MediaEvent::MediaTimeout => {
                    tracing::info!("no RTP from the caller within the media timeout");
                    self.media_timed_out = true;
                    self.shared.metrics.media_timeout();
                    self.request_hangup(EndReason::MediaTimeout);
                }
                MediaEvent::RemoteBye => tracing::debug!("caller sent RTCP BYE"),
            }
        }
    }

    /// Per 20 ms tick: both channels to the call recording; the caller to a message being
    /// taken, with its end on silence or at the maximum.
    fn on_tick(
        &mut self,
        now: Instant,
        caller: &[i16; FRAME_SAMPLES],
        ivrd: &[i16; FRAME_SAMPLES],
    ) {
        if let Some(rec) = self.call_recorder.as_mut() {
            rec.push_frame(caller, ivrd);
        }
        let Some(msg) = self.message.as_mut() else {
            return;
        };
        if let Some(rec) = msg.recorder.as_mut() {
            rec.push(caller);
        }
        let level = caller
            .iter()
            .map(|s| u32::from(s.unsigned_abs()))
            .sum::<u32>()
            / FRAME_SAMPLES as u32;
        if level >= SILENCE_LEVEL {
            msg.silent_since = None;
        } else if msg.silent_since.is_none() {
            msg.silent_since = Some(now);
        }
        let silent_too_long = matches!((msg.silence_end, msg.silent_since), (Some(limit), Some(since)) if now >= since + limit);
        if silent_too_long || now >= msg.started + msg.max {
            msg.due = true;
        }
    }

    fn start_message(
        &mut self,
        now: Instant,
        id: u64,
        field: &str,
        max: Duration,
        silence_end: Option<Duration>,
    ) {
        self.messages_taken += 1;
        let name = RecordingName::for_message(&self.info.call_id, self.date, self.messages_taken);
        let recorder = self.shared.recorder.as_ref().and_then(|w| {
            MessageRecorder::start(w, &name)
                .map_err(|e| {
                    tracing::error!(error = %e, "message recording could not start");
                    self.shared.metrics.recording_failed(RecordingKind::Message);
                })
                .ok()
        });
        tracing::info!(%field, max_s = max.as_secs(), "recording the caller's message");
        self.message = Some(MessageInProgress {
            id,
            started: now,
            max,
            silence_end,
            silent_since: None,
            recorder,
            due: false,
        });
    }

    async fn stop_message(&mut self, now: Instant) {
        let Some(msg) = self.message.take() else {
            return;
        };
        let mut duration = now.saturating_duration_since(msg.started);
        if let Some(rec) = msg.recorder {
            let result = rec.finish().await;
            case_writer::observe_recording(&self.shared.metrics, RecordingKind::Message, &result);
            if let Ok(summary) = result {
                duration = Duration::from_millis(summary.duration_ms);
                self.recordings.push(recording_ref("message", &summary));
            }
        }
        tracing::info!(
            duration_ms = duration.as_millis() as u64,
            "caller message recorded"
        );
        self.engine.handle(
            now,
            Event::RecordingDone {
                id: msg.id,
                duration,
            },
        );
    }

    async fn apply_actions(&mut self, now: Instant) {
        // Stopping a recording feeds the engine again, which may queue more actions.
        for _ in 0..64 {
            let Some(action) = self.engine.poll_action() else {
                return;
            };
            match action {
                Action::Play { id, prompts, .. } => self.play(id, &prompts),
                Action::StopPlayback { .. } => {
                    self.session.stop_playback();
                    self.playing = None;
                }
                Action::StartRecording {
                    id,
                    field,
                    max,
                    silence_end,
                } => self.start_message(now, id, &field, max, silence_end),
                Action::StopRecording { .. } => self.stop_message(now).await,
                Action::Transfer {
                    target,
                    emergency,
                    headers,
                    user_to_user,
                } => {
                    tracing::info!(%target, emergency = emergency.as_deref().unwrap_or(""), "transfer requested by the plan");
                    let request = TransferRequest {
                        target,
                        headers,
                        user_to_user: user_to_user.into_bytes(),
                    };
                    let _ = self
                        .commands
                        .send(CallCommand::Transfer {
                            call: self.handle,
                            request,
                        })
                        .await;
                }
                Action::HangUp { outcome } => {
                    tracing::info!(outcome = outcome.as_str(), "IVR finished");
                    self.request_hangup(EndReason::LocalHangup);
                }
            }
        }
        tracing::warn!("dialplan produced too many actions at once; continuing next turn");
    }

    fn play(&mut self, id: u64, prompts: &[crate::dialplan::PromptId]) {
        self.session.stop_playback();
        let mut queued = 0;
        for prompt in prompts {
            let key = format!("{}/{}", prompt.language, prompt.name);
            match PromptId::new(&key)
                .ok()
                .and_then(|k| self.prompts.get(&k).cloned())
            {
                Some(p) => {
                    self.session.play(p);
                    queued += 1;
                }
                None => tracing::warn!(prompt = %key, "prompt not loaded; skipped"),
            }
        }
        if queued == 0 {
            // Nothing to play: the engine must not wait for a prompt that never ends.
            self.engine
                .handle(Instant::now(), Event::PromptFinished { id });
        } else {
            self.playing = Some(id);
        }
    }

    fn request_hangup(&mut self, reason: EndReason) {
        if !self.hangup_sent {
            self.hangup_sent = true;
            let _ = self.commands.try_send(CallCommand::HangUp {
                call: self.handle,
                reason,
            });
        }
    }

    /// The end: last RTCP, recordings finalised, the engine told, the case spooled.
    async fn finish(&mut self, end: EndReason, rtcp: &UdpSocket, buf: &mut [u8]) {
        let now = Instant::now();
        if !self.engine.is_done() {
            self.engine.handle(now, Event::HangUp);
        }
        self.stop_message(now).await;
        if let Some((n, to)) = self.session.goodbye(now, ntp_now(), buf) {
            send(rtcp, &buf[..n], Some(to)).await;
        }
        if let Some(rec) = self.call_recorder.take() {
            let result = rec.finish().await;
            case_writer::observe_recording(&self.shared.metrics, RecordingKind::Call, &result);
            if let Ok(summary) = result {
                self.recordings.insert(0, recording_ref("call", &summary));
            }
        }
        self.observe_media();
        let facts = CallFacts {
            case_id: self.case_id.to_string(),
            call_id: self.info.call_id.clone(),
            caller: self.info.caller.clone(),
            called: self.info.called.clone(),
            trunk: self.info.trunk.to_string(),
            received_unix_ms: unix_ms_of(self.info.received),
            answered_unix_ms: Some(unix_ms_of(self.answered)),
            ended_unix_ms: unix_ms_of(now),
            hangup: hangup_of(end),
            host: self.shared.host.clone(),
        };
        let journal = self.engine.journal();
        let case = CaseSkeleton::from_journal(
            &facts,
            journal,
            std::mem::take(&mut self.recordings),
            self.media_timed_out,
        );
        case_writer::observe_journey(
            &self.shared.metrics,
            journal,
            &case.outcome,
            now.saturating_duration_since(self.answered),
        );
        tracing::info!(
            reason = end.as_str(),
            outcome = %case.outcome,
            path = %journal.nodes_visited().join(">"),
            "call finished"
        );
        // The marker goes only once the case is on disk (or held in memory for the disk).
        self.shared.cases.spool(self.case_id.clone(), &case).await;
        let (storage, id) = (self.shared.storage.clone(), self.case_id.to_string());
        let _ =
            tokio::task::spawn_blocking(move || crate::runtime::call_marker::remove(&storage, &id))
                .await;
    }

    fn observe_media(&self) {
        let stats = self.session.receiver();
        let counters = self.session.counters();
        let m = &self.shared.metrics;
        m.rtp_received(stats.packets(), stats.bytes());
        m.rtp_sent(
            counters.packets_sent,
            counters.packets_sent * RTP_PACKET_BYTES,
        );
        m.rtp_lost(u64::try_from(stats.lost()).unwrap_or(0));
        m.rtp_late(stats.late());
        m.rtp_unexpected_source(counters.unexpected_source);
        m.rtp_jitter(Duration::from_micros(u64::from(stats.jitter()) * 125));
        tracing::debug!(
            rtp_in = stats.packets(),
            lost = stats.lost(),
            rtp_out = counters.packets_sent,
            "media ended"
        );
    }
}

async fn send(socket: &UdpSocket, bytes: &[u8], to: Option<SocketAddr>) {
    if let (false, Some(to)) = (bytes.is_empty(), to) {
        let _ = socket.send_to(bytes, to).await;
    }
}

fn ntp_now() -> NtpTimestamp {
    NtpTimestamp::from_unix(
        SystemTime::now()
            .duration_since(UNIX_EPOCH)
            .unwrap_or_default(),
    )
}
