//! One task per answered call: the driver of the call's [`MediaSession`]. It owns the RTP and
//! RTCP sockets, wakes at the session's deadlines (absolute, so the 20 ms clock does not drift),
//! and turns session events into SIP commands.

use crate::media::prompt::{PromptId, PromptLibrary};
use crate::media::rtcp::NtpTimestamp;
use crate::media::session::{MediaEvent, MediaSession, SessionParams, TickOutput};
use crate::runtime::ports::RtpSockets;
use crate::sip::sdp::{Direction, NegotiatedAudio};
use crate::sip::uas::{CallHandle, CallInfo, EndReason, TransferOutcome};
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
    HangUp { call: CallHandle, reason: EndReason },
}

/// What every call shares: prompts and media settings, loaded once.
#[derive(Debug)]
pub struct CallShared {
    pub prompts: PromptLibrary,
    pub media_timeout: Duration,
    pub cname: String,
}

/// Until the dialplan drives calls, each call plays this prompt (or a beep) and logs digits.
const TEST_MODE_PROMPTS: [&str; 2] = ["zh-CN/welcome", PromptId::BEEP];

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

async fn run(
    handle: CallHandle,
    info: CallInfo,
    sockets: Option<RtpSockets>,
    mut events: mpsc::Receiver<CallEvent>,
    commands: mpsc::Sender<CallCommand>,
    shared: Arc<CallShared>,
) {
    let (Some(rtp), Some(rtcp)) = (
        sockets
            .as_ref()
            .and_then(|s| s.rtp.try_clone().ok())
            .and_then(|s| UdpSocket::from_std(s).ok()),
        sockets
            .as_ref()
            .and_then(|s| s.rtcp.try_clone().ok())
            .and_then(|s| UdpSocket::from_std(s).ok()),
    ) else {
        tracing::error!(
            rtp_port = info.rtp_port,
            "RTP sockets unavailable; hanging up"
        );
        let _ = commands
            .send(CallCommand::HangUp {
                call: handle,
                reason: EndReason::LocalHangup,
            })
            .await;
        return;
    };
    drop(sockets);
    let params = session_params(info.audio.as_ref(), info.our_direction, &shared);
    let mut session = match MediaSession::new(Instant::now(), params, rand::random()) {
        Ok(s) => s,
        Err(e) => {
            tracing::error!(error = %e, "cannot start media");
            let _ = commands
                .send(CallCommand::HangUp {
                    call: handle,
                    reason: EndReason::LocalHangup,
                })
                .await;
            return;
        }
    };
    if let Some(prompt) = TEST_MODE_PROMPTS.iter().find_map(|id| {
        PromptId::new(id)
            .ok()
            .and_then(|id| shared.prompts.get(&id).cloned())
    }) {
        session.play(prompt);
    }
    let mut out = TickOutput::default();
    let (mut rtp_buf, mut rtcp_buf) = ([0u8; 2048], [0u8; 1500]);
    let end = loop {
        let deadline = tokio::time::Instant::from_std(session.poll_timeout());
        tokio::select! {
            event = events.recv() => match event {
                None => break EndReason::Shutdown,
                Some(CallEvent::Ended { reason }) => break reason,
                Some(CallEvent::MediaChanged { audio, our_direction }) => {
                    tracing::debug!(codec = audio.codec.name(), direction = our_direction.as_str(), "media changed");
                    session.update(Instant::now(), session_params(Some(&audio), our_direction, &shared));
                }
                Some(CallEvent::Transfer { outcome }) => tracing::info!(?outcome, "transfer ended"),
                Some(CallEvent::Info { content_type, body }) => {
                    if !session.on_info(Instant::now(), &content_type, &body) {
                        tracing::debug!(%content_type, "INFO without DTMF ignored");
                    }
                }
            },
            received = rtp.recv_from(&mut rtp_buf) => {
                if let Ok((n, source)) = received {
                    session.on_rtp(Instant::now(), source, &rtp_buf[..n]);
                }
            }
            received = rtcp.recv_from(&mut rtcp_buf) => {
                if let Ok((n, _)) = received {
                    session.on_rtcp(Instant::now(), &rtcp_buf[..n]);
                }
            }
            _ = tokio::time::sleep_until(deadline) => {
                let now = Instant::now();
                while session.handle_timeout(now, ntp_now(), rand::random(), &mut out) {
                    send(&rtp, &out.rtp[..out.rtp_len], out.rtp_to).await;
                    send(&rtcp, &out.rtcp[..out.rtcp_len], out.rtcp_to).await;
                }
            }
        }
        if let Some(reason) = handle_events(&mut session) {
            let _ = commands
                .send(CallCommand::HangUp {
                    call: handle,
                    reason,
                })
                .await;
        }
    };
    if let Some((n, to)) = session.goodbye(Instant::now(), ntp_now(), &mut rtcp_buf) {
        send(&rtcp, &rtcp_buf[..n], Some(to)).await;
    }
    let stats = session.receiver();
    tracing::info!(
        reason = end.as_str(),
        rtp_in = stats.packets(),
        lost = stats.lost(),
        jitter_ms = f64::from(stats.jitter()) / 8.0,
        rtp_out = session.counters().packets_sent,
        "media ended"
    );
}

/// Logs digits (test mode until the dialplan drives the call); returns a reason to hang up.
fn handle_events(session: &mut MediaSession) -> Option<EndReason> {
    let mut hang_up = None;
    while let Some(event) = session.poll_event() {
        match event {
            MediaEvent::Digit(d) => {
                tracing::info!(digit = %d.digit, method = d.method.as_str(), "DTMF")
            }
            MediaEvent::PromptFinished(id) => {
                tracing::debug!(prompt = id.as_str(), "prompt finished")
            }
            MediaEvent::MediaTimeout => {
                tracing::info!("no RTP from the caller within the media timeout");
                hang_up = Some(EndReason::MediaTimeout);
            }
            MediaEvent::RemoteBye => tracing::debug!("caller sent RTCP BYE"),
        }
    }
    hang_up
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
