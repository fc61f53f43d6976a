//! One task per answered call. It owns the call's RTP sockets and reacts to what the SIP driver
//! tells it (media changes, INFO bodies, the end of the call). The media pipeline (prompts,
//! DTMF, recording) plugs in here.

use crate::runtime::ports::RtpSockets;
use crate::sip::sdp::{Direction, NegotiatedAudio};
use crate::sip::uas::{CallHandle, CallInfo, EndReason};
use bytes::Bytes;
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
    Ended {
        reason: EndReason,
    },
}

/// What a call task asks of the SIP driver.
#[derive(Debug)]
pub enum CallCommand {
    HangUp { call: CallHandle, reason: EndReason },
}

/// Runs a call until the SIP side ends it.
pub fn spawn(
    handle: CallHandle,
    info: CallInfo,
    sockets: Option<RtpSockets>,
    events: mpsc::Receiver<CallEvent>,
    commands: mpsc::Sender<CallCommand>,
) -> tokio::task::JoinHandle<()> {
    let span = tracing::info_span!("call", call_id = %info.call_id);
    tokio::spawn(run(handle, info, sockets, events, commands).instrument(span))
}

async fn run(
    _handle: CallHandle,
    info: CallInfo,
    sockets: Option<RtpSockets>,
    mut events: mpsc::Receiver<CallEvent>,
    _commands: mpsc::Sender<CallCommand>,
) {
    let rtp = sockets.and_then(|s| UdpSocket::from_std(s.rtp).ok());
    let mut buf = [0u8; 2048];
    let mut packets: u64 = 0;
    tracing::debug!(rtp_port = info.rtp_port, "call task started");
    loop {
        tokio::select! {
            event = events.recv() => match event {
                None => {
                    tracing::debug!(packets, "SIP driver gone; call task ends");
                    return;
                }
                Some(CallEvent::Ended { reason }) => {
                    tracing::debug!(packets, reason = reason.as_str(), "call task ends");
                    return;
                }
                Some(CallEvent::MediaChanged { audio, our_direction }) => {
                    tracing::debug!(codec = audio.codec.name(), direction = our_direction.as_str(), "media changed");
                }
                Some(CallEvent::Info { content_type, body }) => {
                    tracing::debug!(%content_type, len = body.len(), "INFO received");
                }
            },
            received = recv(rtp.as_ref(), &mut buf) => {
                if received.is_some() {
                    packets += 1;
                }
            }
        }
    }
}

async fn recv(socket: Option<&UdpSocket>, buf: &mut [u8]) -> Option<usize> {
    match socket {
        Some(s) => s.recv_from(buf).await.ok().map(|(n, _)| n),
        None => std::future::pending().await,
    }
}
