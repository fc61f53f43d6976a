//! The UAS core (RFC 3261 §8.2, §12–§17) as one sans-IO state machine.
//!
//! The transport driver hands it every datagram or stream frame ([`Inbound`]) with `now`; the call
//! drivers hand it commands (hang up, drain). It answers with [`Output`]s: bytes to transmit, and
//! call events (started, media changed, INFO body, ended). After every input the driver calls
//! [`Endpoint::poll_output`] until `None`, then sleeps until [`Endpoint::poll_timeout`].

mod admission;
pub mod calls;
mod config;
mod dispatch;
mod hangup;
mod invite;
mod rate_limit;
mod reinvite;
mod source_limits;
mod tally;
mod transfer;

pub use calls::{CallHandle, CallInfo, EndReason};
pub use config::{EndpointConfig, RtpPortSource};
pub use tally::{RequestTally, ResponseTally};
pub use transfer::{TransferOutcome, TransferRequest, refer_to_value, sipfrag_status};

use crate::sip::header::Transport;
use crate::sip::sdp::{Direction, NegotiatedAudio};
use crate::sip::transaction::{InviteServerTxn, NonInviteClientTxn, NonInviteServerTxn};
use bytes::Bytes;
use calls::Call;
use std::cmp::Reverse;
use std::collections::{BinaryHeap, HashMap, VecDeque};
use std::net::SocketAddr;
use std::time::Instant;

/// Identifies a stream connection in the transport driver, so responses go back on it.
pub type ConnId = u64;

/// One message as received.
#[derive(Debug, Clone, Copy)]
pub struct Inbound<'a> {
    pub transport: Transport,
    /// The peer's address (the datagram's source, or the connection's peer).
    pub source: SocketAddr,
    /// Our address the message arrived on, as the peer can reach it (used in Contact and SDP).
    pub local: SocketAddr,
    /// The stream connection, for TCP.
    pub conn: Option<ConnId>,
    pub data: &'a [u8],
}

/// Where to send bytes.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Destination {
    pub transport: Transport,
    pub addr: SocketAddr,
    /// Reuse this connection when it is still open (TCP).
    pub conn: Option<ConnId>,
}

/// A message to send and where.
#[derive(Debug, Clone, PartialEq)]
pub struct Transmission {
    pub to: Destination,
    pub bytes: Bytes,
}

/// What the endpoint asks of its drivers.
#[derive(Debug, Clone, PartialEq)]
pub enum Output {
    /// Send `bytes` to `to`.
    Transmit { to: Destination, bytes: Bytes },
    /// A call was answered: send `answer` (the 200) once the call is accounted for (its crash
    /// marker durable), then start its media on `info.rtp_port`. The transaction retransmits
    /// the 200 from T1 on by itself, so a lost or late first send only delays the caller.
    CallStarted {
        call: CallHandle,
        info: CallInfo,
        answer: Option<Transmission>,
    },
    /// The peer changed the media (re-INVITE, UPDATE, or the ACK of a late offer).
    MediaChanged {
        call: CallHandle,
        audio: NegotiatedAudio,
        our_direction: Direction,
    },
    /// A SIP INFO arrived in the call's dialog (DTMF relay bodies are parsed by the media layer).
    Info {
        call: CallHandle,
        content_type: String,
        body: Bytes,
    },
    /// A trusted trunk's call was refused for overload or drain (503): a missed call the back
    /// office must call back, so it gets a case.
    CallRefused {
        call_id: String,
        caller: String,
        called: String,
        trunk: std::net::IpAddr,
        received: Instant,
    },
    /// A transfer started with [`Endpoint::transfer`] ended.
    Transfer {
        call: CallHandle,
        outcome: TransferOutcome,
    },
    /// The call is over; release its media. `rtp_port` goes back to the pool already.
    CallEnded { call: CallHandle, reason: EndReason },
}

impl Output {
    /// What this output sends, if anything: a `Transmit`, or a `CallStarted`'s 200.
    pub fn transmission(&self) -> Option<(&Destination, &Bytes)> {
        match self {
            Output::Transmit { to, bytes } => Some((to, bytes)),
            Output::CallStarted {
                answer: Some(Transmission { to, bytes }),
                ..
            } => Some((to, bytes)),
            _ => None,
        }
    }
}

/// Counters the metrics layer exports; each says what was decided, never who sent it.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct SipCounters {
    /// Messages that could not be parsed (answered 400 or dropped).
    pub parse_errors: u64,
    /// Malformed messages dropped because no response could be formed.
    pub dropped: u64,
    pub acl_rejected: u64,
    /// INVITEs refused 503 for load: `max_calls`, drain, RTP ports, or a per-source limit.
    pub overload_rejected: u64,
    /// The part of `overload_rejected` refused by the per-source cap on calls held.
    pub source_limited_calls: u64,
    /// The part of `overload_rejected` refused by the per-source INVITE rate.
    pub source_limited_invite_rate: u64,
    /// Out-of-dialog non-INVITE requests from a trusted source refused by its request rate
    /// (not calls, so not in `overload_rejected`).
    pub source_limited_requests: u64,
    pub codec_rejected: u64,
    pub retransmissions_sent: u64,
    pub transaction_timeouts: u64,
    pub calls_offered: u64,
    pub calls_answered: u64,
    /// Requests parsed, by method (retransmitted requests included: they were received).
    pub requests: RequestTally,
    /// Responses transmitted, by request method and code; first transmissions only (our
    /// retransmissions are in `retransmissions_sent`).
    pub responses: ResponseTally,
}

#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord)]
enum TimerKey {
    InviteTxn(String),
    NonInviteTxn(String),
    ClientTxn(String),
    Answer(CallHandle),
}

/// An INVITE server transaction and what the UAS core needs to finish it.
struct InviteTxnEntry {
    txn: InviteServerTxn,
    call: Option<CallHandle>,
    reply_to: Destination,
}

struct ClientTxnEntry {
    txn: NonInviteClientTxn,
    to: Destination,
    /// The call whose transfer this request is (REFER); `None` for BYE.
    call: Option<CallHandle>,
}

/// The sans-IO SIP user-agent server.
pub struct Endpoint {
    cfg: EndpointConfig,
    invite_txns: HashMap<String, InviteTxnEntry>,
    non_invite_txns: HashMap<String, (NonInviteServerTxn, Destination)>,
    client_txns: HashMap<String, ClientTxnEntry>,
    calls: HashMap<CallHandle, Call>,
    dialogs: HashMap<(String, String, String), CallHandle>,
    timers: BinaryHeap<Reverse<(Instant, TimerKey)>>,
    outputs: VecDeque<Output>,
    next_handle: u64,
    draining: bool,
    counters: SipCounters,
    /// How often untrusted sources get an answer at all.
    untrusted: rate_limit::SourceLimiter,
    /// Calls held, INVITE rate and other requests' rate per trusted source.
    per_source: source_limits::SourceLimits,
}

impl Endpoint {
    /// An endpoint with no calls.
    pub fn new(cfg: EndpointConfig) -> Self {
        let per_source = source_limits::SourceLimits::new(
            cfg.max_calls_per_source,
            (
                cfg.invites_per_sec_per_source,
                cfg.invite_burst_per_source,
                cfg.other_requests_per_sec_per_source,
                cfg.other_request_burst_per_source,
            ),
        );
        Endpoint {
            cfg,
            per_source,
            invite_txns: HashMap::new(),
            non_invite_txns: HashMap::new(),
            client_txns: HashMap::new(),
            calls: HashMap::new(),
            dialogs: HashMap::new(),
            timers: BinaryHeap::new(),
            outputs: VecDeque::new(),
            next_handle: 1,
            draining: false,
            counters: SipCounters::default(),
            untrusted: rate_limit::SourceLimiter::default(),
        }
    }

    /// The next thing to do, if any. Call until `None` after every input.
    pub fn poll_output(&mut self) -> Option<Output> {
        self.outputs.pop_front()
    }

    /// When the driver must call [`Endpoint::handle_timeout`] next.
    pub fn poll_timeout(&self) -> Option<Instant> {
        self.timers.peek().map(|Reverse((at, _))| *at)
    }

    /// Decision counters so far.
    pub fn counters(&self) -> &SipCounters {
        &self.counters
    }

    /// Calls that exist now (ringing or answered).
    pub fn active_calls(&self) -> usize {
        self.calls.len()
    }

    /// Number of live transactions (for leak checks and metrics).
    pub fn transaction_count(&self) -> usize {
        self.invite_txns.len() + self.non_invite_txns.len() + self.client_txns.len()
    }

    /// Whether new calls are refused because a drain began.
    pub fn is_draining(&self) -> bool {
        self.draining
    }

    /// Stops accepting calls: new INVITEs get `503` with Retry-After from now on.
    pub fn begin_drain(&mut self) {
        self.draining = true;
    }

    /// Ends every call with BYE (answered) or a final response (ringing): the end of a drain.
    pub fn hang_up_all(&mut self, now: Instant, ports: &mut dyn RtpPortSource) {
        let handles: Vec<CallHandle> = self.calls.keys().copied().collect();
        for call in handles {
            self.hang_up(now, call, EndReason::Shutdown, ports);
        }
    }

    fn arm(&mut self, key: TimerKey, at: Option<Instant>) {
        if let Some(at) = at {
            self.timers.push(Reverse((at, key)));
        }
    }

    fn transmit(&mut self, to: Destination, bytes: Bytes) {
        self.outputs.push_back(Output::Transmit { to, bytes });
    }

    /// Transmits a response (its first transmission) and counts it for the metrics.
    fn transmit_response(
        &mut self,
        to: Destination,
        method: &crate::sip::method::Method,
        code: u16,
        bytes: Bytes,
    ) {
        self.counters.responses.add(method, code);
        self.transmit(to, bytes);
    }

    /// Runs every timer that is due at `now`.
    pub fn handle_timeout(&mut self, now: Instant, ports: &mut dyn RtpPortSource) {
        while let Some(Reverse((at, _))) = self.timers.peek() {
            if *at > now {
                break;
            }
            let Some(Reverse((_, key))) = self.timers.pop() else {
                break;
            };
            match key {
                TimerKey::InviteTxn(k) => self.run_invite_txn_timers(now, &k, ports),
                TimerKey::NonInviteTxn(k) => self.run_non_invite_txn_timers(now, &k),
                TimerKey::ClientTxn(k) => self.run_client_txn_timers(now, &k),
                TimerKey::Answer(call) => self.answer_due(now, call, ports),
            }
        }
    }

    fn run_non_invite_txn_timers(&mut self, now: Instant, key: &str) {
        let Some((txn, _)) = self.non_invite_txns.get_mut(key) else {
            return;
        };
        if txn.handle_timeout(now) {
            self.non_invite_txns.remove(key);
        } else {
            let next = txn.poll_timeout();
            self.arm(TimerKey::NonInviteTxn(key.to_string()), next);
        }
    }

    fn run_client_txn_timers(&mut self, now: Instant, key: &str) {
        use crate::sip::transaction::NonInviteClientEvent as Ev;
        let Some(entry) = self.client_txns.get_mut(key) else {
            return;
        };
        let (mut done, mut timed_out) = (false, false);
        let mut resend = Vec::new();
        while let Some(ev) = entry.txn.handle_timeout(now) {
            match ev {
                Ev::Retransmit(bytes) => resend.push(bytes),
                Ev::Timeout => {
                    self.counters.transaction_timeouts += 1;
                    tracing::debug!(branch = key, "request timed out (Timer F)");
                    done = true;
                    timed_out = true;
                }
                Ev::Terminated => done = true,
            }
        }
        let (to, call) = (entry.to.clone(), entry.call);
        let next = entry.txn.poll_timeout();
        if let (true, Some(call)) = (timed_out, call) {
            self.on_refer_result(call, key, None);
        }
        for bytes in resend {
            self.counters.retransmissions_sent += 1;
            self.transmit(to.clone(), bytes);
        }
        if done {
            self.client_txns.remove(key);
        } else {
            self.arm(TimerKey::ClientTxn(key.to_string()), next);
        }
    }

    fn run_invite_txn_timers(&mut self, now: Instant, key: &str, ports: &mut dyn RtpPortSource) {
        use crate::sip::transaction::InviteServerEvent as Ev;
        let Some(entry) = self.invite_txns.get_mut(key) else {
            return;
        };
        let (mut events, to, call) = (Vec::new(), entry.reply_to.clone(), entry.call);
        while let Some(ev) = entry.txn.handle_timeout(now) {
            events.push(ev);
        }
        let next = entry.txn.poll_timeout();
        let mut terminated = false;
        for ev in events {
            match ev {
                Ev::Retransmit(bytes) => {
                    self.counters.retransmissions_sent += 1;
                    self.transmit(to.clone(), bytes);
                }
                Ev::AckTimeout => {
                    self.counters.transaction_timeouts += 1;
                    terminated = true;
                }
                Ev::NoAckFor2xx => {
                    self.counters.transaction_timeouts += 1;
                    terminated = true;
                    if let Some(call) = call {
                        tracing::info!(
                            "no ACK for our 200 within 64*T1; sending BYE (RFC 3261 §13.3.1.4)"
                        );
                        self.hang_up(now, call, EndReason::NoAck, ports);
                    }
                }
                Ev::Terminated => terminated = true,
            }
        }
        if terminated {
            self.invite_txns.remove(key);
        } else {
            self.arm(TimerKey::InviteTxn(key.to_string()), next);
        }
    }
}

#[cfg(test)]
impl Endpoint {
    fn max_calls_for_test(&mut self, n: usize) {
        self.cfg.max_calls = n;
    }
}

#[cfg(test)]
mod tests;
#[cfg(test)]
mod tests_dialog;
#[cfg(test)]
mod tests_source_limits;
#[cfg(test)]
mod tests_transfer_safety;

impl Endpoint {
    /// Requests we sent that still await a final response (BYEs during a drain).
    pub fn pending_requests(&self) -> usize {
        self.client_txns
            .values()
            .filter(|e| e.txn.state() != crate::sip::transaction::NonInviteClientState::Completed)
            .count()
    }
}
