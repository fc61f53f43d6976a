//! One task per answered call: the call's control. It runs the dialplan [`Engine`], hands the
//! call's media (RTP, 20 ms clock, DTMF, recording) to the shared [`MediaClock`] and steers it
//! through a [`MediaLink`], and at the end leaves the call's case in the outbox.
//!
//! The task wakes for SIP events, for the media's notices (a key, a prompt played out, a
//! message ended) and for the engine's own deadlines — a handful of times per call, never per
//! packet: packets and the 20 ms clock are the media clock's.

use crate::case::CaseId;
use crate::case::skeleton::RecordingRef;
use crate::dialplan::calendar::WallClock;
use crate::dialplan::{Action, CallStart, Engine, Event, LoadedPlan, TransferResult};
use crate::media::prompt::{PromptId, PromptLibrary};
use crate::media::session::{MediaSession, SessionParams};
use crate::metrics::{Metrics, RecordingKind};
use crate::runtime::call_marker::{CallMarker, MarkerPlace, MarkerStore};
use crate::runtime::case_writer::{self, recording_ref, unix_ms_of};
use crate::runtime::media_call::{self, MediaCommand, MediaNotice, MessageTap};
use crate::runtime::media_clock::{MediaClock, MediaLink, StartMedia};
use crate::runtime::ports::RtpSockets;
use crate::runtime::recorder::{
    CallRecorder, MessageRecorder, RecordingDate, RecordingName, RecordingWriter,
};
use crate::runtime::transport::UdpSenders;
use crate::sip::header::Transport;
use crate::sip::sdp::{Direction, NegotiatedAudio};
use crate::sip::uas::{
    CallHandle, CallInfo, EndReason, TransferOutcome, TransferRequest, Transmission,
};
use bytes::Bytes;
use std::sync::Arc;
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};
use tokio::sync::mpsc;
use tokio::task::JoinSet;
use tracing::Instrument;

mod end;

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
    /// Send the call's 200 over its TCP connection (a call sends a UDP 200 itself) now: its crash
    /// marker is durable (or could not be written).
    SendAnswer(Transmission),
}

/// What every call shares, set up once at start-up.
pub struct CallShared {
    pub plans: crate::runtime::plans::PlanStore,
    pub media_timeout: Duration,
    pub cname: String,
    /// The media clock every call's media runs on.
    pub media: MediaClock,
    /// The recording writer; `None` when it could not start (calls are still answered).
    pub recorder: Option<RecordingWriter>,
    /// Where cases go: the outbox, or memory while the disk refuses them.
    pub cases: Arc<case_writer::CaseSpool>,
    pub metrics: Arc<Metrics>,
    pub host: String,
    /// The markers that turn a crash during a call into an abandoned case.
    pub markers: Arc<MarkerStore>,
    /// The SIP UDP sockets, for the calls' 200s.
    pub sip_udp: UdpSenders,
}

/// A call the SIP endpoint answered, for its task.
pub struct NewCall {
    pub handle: CallHandle,
    pub info: CallInfo,
    /// The call's 200, sent by the task once the call's crash marker is written.
    pub answer: Option<Transmission>,
    pub sockets: Option<RtpSockets>,
}

/// Starts a call's task in `tasks` (the SIP driver's set, awaited at shutdown).
pub fn spawn(
    tasks: &mut JoinSet<()>,
    call: NewCall,
    events: mpsc::Receiver<CallEvent>,
    commands: mpsc::Sender<CallCommand>,
    shared: Arc<CallShared>,
) {
    let span = tracing::info_span!("call", call_id = %call.info.call_id);
    tasks.spawn(run(call, events, commands, shared).instrument(span));
}

/// Sends the call's 200 (once): over UDP from this task, over TCP through the SIP driver, which
/// owns the connections.
async fn send_answer(
    shared: &CallShared,
    commands: &mpsc::Sender<CallCommand>,
    answer: &mut Option<Transmission>,
) {
    let Some(answer) = answer.take() else {
        return;
    };
    if answer.to.transport == Transport::Udp {
        // One hand-over to the SIP driver fewer per call.
        shared.sip_udp.send(answer.to.addr, &answer.bytes).await;
    } else {
        // The driver gone means the daemon is stopping; the call ends with it.
        let _ = commands.send(CallCommand::SendAnswer(answer)).await;
    }
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
    engine: Engine,
    media: MediaLink,
    notices: mpsc::UnboundedReceiver<MediaNotice>,
    /// The prompts loaded with the call's plan version.
    prompts: Arc<PromptLibrary>,
    shared: Arc<CallShared>,
    commands: mpsc::Sender<CallCommand>,
    /// The engine's current `Play` id, reported finished when the media says it played out.
    playing: Option<u64>,
    /// The engine's id of the caller message being taken.
    message: Option<u64>,
    messages_taken: u32,
    recordings: Vec<RecordingRef>,
    media_timed_out: bool,
    hangup_sent: bool,
    /// Where the call's marker is, if it could be written.
    marker: Option<MarkerPlace>,
}

async fn run(
    call: NewCall,
    mut events: mpsc::Receiver<CallEvent>,
    commands: mpsc::Sender<CallCommand>,
    shared: Arc<CallShared>,
) {
    let NewCall {
        handle,
        info,
        mut answer,
        sockets,
    } = call;
    let params = session_params(info.audio.as_ref(), info.our_direction, &shared);
    let now = Instant::now();
    let (Some(sockets), Ok(session)) = (sockets, MediaSession::new(now, params, rand::random()))
    else {
        tracing::error!(rtp_port = info.rtp_port, "media unavailable; hanging up");
        send_answer(&shared, &commands, &mut answer).await;
        hang_up_unavailable(&commands, handle).await;
        return;
    };
    let serving = shared.plans.current();
    let plan = serving.plan.clone();
    let case_id = case_writer::new_case_id();
    let date = RecordingDate::from_system_time(SystemTime::now(), plan.utc_offset_minutes * 60);
    let call_recorder = start_call_recorder(&shared, &info, date);
    let recording = call_recorder.is_some();
    let (notice_tx, notices) = mpsc::unbounded_channel();
    // Boxed before the marker's await, so that the media session (2.5 KiB) waiting there is
    // not part of the call's task for its whole life.
    let start = Box::new(StartMedia {
        session,
        rtp: sockets.rtp,
        rtcp: sockets.rtcp,
        recorder: call_recorder,
        notices: notice_tx,
    });
    // The caller hears the call answered only once a crash from now on leaves a case.
    let marker = write_marker(&shared, &info, &case_id, now, date, recording).await;
    media_call::discard_backlog(&start.rtp);
    send_answer(&shared, &commands, &mut answer).await;
    // The call is answered now, not when the task began: the marker's fsync may have taken a
    // while, and the IVR's clock and the recording start from here.
    let now = Instant::now();
    let engine = Engine::new(plan.clone(), call_start(now, &info, &plan, &case_id));
    let Some(media) = shared.media.start_call(start) else {
        tracing::error!("media clock unavailable; hanging up");
        hang_up_unavailable(&commands, handle).await;
        return;
    };
    tracing::info!(plan = plan.name(), version = plan.version(), case_id = %case_id, "IVR started");
    let mut task = CallTask {
        handle,
        info,
        case_id,
        answered: now,
        date,
        engine,
        media,
        notices,
        prompts: serving.prompts.clone(),
        shared,
        commands,
        playing: None,
        message: None,
        messages_taken: 0,
        recordings: Vec::new(),
        media_timed_out: false,
        hangup_sent: false,
        marker,
    };
    task.apply_actions(now).await;
    let end = loop {
        let deadline = task.engine.poll_timeout();
        tokio::select! {
            event = events.recv() => match event {
                None => break EndReason::Shutdown,
                Some(CallEvent::Ended { reason }) => break reason,
                Some(event) => task.on_call_event(event),
            },
            notice = task.notices.recv() => match notice {
                Some(notice) => task.on_notice(notice).await,
                None => {
                    tracing::error!("media clock stopped; hanging up");
                    task.request_hangup(EndReason::LocalHangup);
                }
            },
            _ = sleep_until(deadline), if deadline.is_some() => {
                task.engine.handle(Instant::now(), Event::Timeout);
            }
        }
        task.apply_actions(Instant::now()).await;
    };
    // Boxed: the end's state (the finished media session, the recordings' and the case's
    // futures) would otherwise be part of every call's task for its whole life.
    Box::pin(task.finish(end)).await;
}

async fn sleep_until(deadline: Option<Instant>) {
    if let Some(at) = deadline {
        tokio::time::sleep_until(tokio::time::Instant::from_std(at)).await;
    }
}

async fn hang_up_unavailable(commands: &mpsc::Sender<CallCommand>, call: CallHandle) {
    let _ = commands
        .send(CallCommand::HangUp {
            call,
            reason: EndReason::LocalHangup,
        })
        .await;
}

fn start_call_recorder(
    shared: &CallShared,
    info: &CallInfo,
    date: RecordingDate,
) -> Option<CallRecorder> {
    shared.recorder.as_ref().and_then(|w| {
        CallRecorder::start(w, &RecordingName::for_call(&info.call_id, date))
            .map_err(|e| {
                tracing::error!(error = %e, "call recording could not start; the call goes on");
                shared.metrics.recording_failed(RecordingKind::Call);
            })
            .ok()
    })
}

/// The durable marker that turns a crash during the call into an abandoned case.
async fn write_marker(
    shared: &CallShared,
    info: &CallInfo,
    case_id: &CaseId,
    answered: Instant,
    date: RecordingDate,
    recording: bool,
) -> Option<MarkerPlace> {
    let marker = CallMarker {
        case_id: case_id.to_string(),
        call_id: info.call_id.clone(),
        caller: info.caller.clone(),
        called: info.called.clone(),
        trunk: info.trunk.to_string(),
        received_unix_ms: unix_ms_of(info.received),
        answered_unix_ms: unix_ms_of(answered),
        recording: recording.then(|| {
            RecordingName::for_call(&info.call_id, date)
                .relative_wav()
                .to_string_lossy()
                .into_owned()
        }),
        host: shared.host.clone(),
    };
    match shared.markers.write_async(marker).await {
        Ok(place) => Some(place),
        Err(_) => {
            tracing::error!(
                "call marker not written; a crash during this call would leave no case"
            );
            None
        }
    }
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
                let params = session_params(Some(&audio), our_direction, &self.shared);
                self.media.send(MediaCommand::Update(params));
            }
            CallEvent::Info { content_type, body } => {
                self.media.send(MediaCommand::Info { content_type, body });
            }
            CallEvent::Transfer { outcome } => {
                let result = match outcome {
                    TransferOutcome::Succeeded => TransferResult::Accepted,
                    TransferOutcome::Failed { code } => TransferResult::Failed { code },
                };
                self.engine.handle(Instant::now(), Event::Transfer(result));
            }
            CallEvent::Ended { .. } => {}
        }
    }

    async fn on_notice(&mut self, notice: MediaNotice) {
        let now = Instant::now();
        match notice {
            MediaNotice::Digit(d) => {
                tracing::info!(digit = %d.digit, method = d.method.as_str(), "DTMF");
                self.engine.handle(now, Event::Digit(d));
            }
            MediaNotice::MediaTimeout => {
                tracing::info!("no RTP from the caller within the media timeout");
                self.media_timed_out = true;
                self.shared.metrics.media_timeout();
                self.request_hangup(EndReason::MediaTimeout);
            }
            MediaNotice::RemoteBye => tracing::debug!("caller sent RTCP BYE"),
            MediaNotice::PlaybackDone { id } => {
                if self.playing == Some(id) {
                    self.playing = None;
                    self.engine.handle(now, Event::PromptFinished { id });
                }
            }
            MediaNotice::MessageEnded { tap, at } => self.message_ended(tap, at).await,
            MediaNotice::Finished(_) => {
                tracing::warn!("media finished before the call asked; ignored");
            }
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
        self.message = Some(id);
        self.media
            .send(MediaCommand::StartMessage(Box::new(MessageTap::new(
                recorder,
                now,
                max,
                silence_end,
            ))));
    }

    /// The media ended a message (silence, its maximum, `StopMessage` or the call's end).
    async fn message_ended(&mut self, tap: Box<MessageTap>, at: Instant) {
        let mut duration = at.saturating_duration_since(tap.started);
        if let Some(rec) = tap.recorder {
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
        if let Some(id) = self.message.take() {
            self.engine
                .handle(Instant::now(), Event::RecordingDone { id, duration });
        }
    }

    async fn apply_actions(&mut self, now: Instant) {
        // A message ending feeds the engine again, which may queue more actions.
        for _ in 0..64 {
            let Some(action) = self.engine.poll_action() else {
                return;
            };
            match action {
                Action::Play { id, prompts, .. } => self.play(id, &prompts),
                Action::StopPlayback { .. } => {
                    self.media.send(MediaCommand::StopPlayback);
                    self.playing = None;
                }
                Action::StartRecording {
                    id,
                    field,
                    max,
                    silence_end,
                } => self.start_message(now, id, &field, max, silence_end),
                Action::StopRecording { .. } => {
                    self.media.send(MediaCommand::StopMessage);
                }
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
        let mut queued = Vec::with_capacity(prompts.len());
        for prompt in prompts {
            let key = format!("{}/{}", prompt.language, prompt.name);
            match PromptId::new(&key)
                .ok()
                .and_then(|k| self.prompts.get(&k).cloned())
            {
                Some(p) => queued.push(p),
                None => tracing::warn!(prompt = %key, "prompt not loaded; skipped"),
            }
        }
        if queued.is_empty() {
            // Nothing to play: the engine must not wait for a prompt that never ends.
            self.media.send(MediaCommand::StopPlayback);
            self.playing = None;
            self.engine
                .handle(Instant::now(), Event::PromptFinished { id });
        } else {
            self.playing = Some(id);
            self.media.send(MediaCommand::Play {
                id,
                prompts: queued,
            });
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
}
