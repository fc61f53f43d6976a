//! INVITE server transaction: RFC 3261 §17.2.1 as amended by RFC 6026 §7.1 (the Accepted state),
//! plus the UAS core's 2xx retransmission until ACK (§13.3.1.4), kept here because it shares the
//! transaction's lifetime and timers.

use super::timers::{TimerConfig, TimerTable};
use bytes::Bytes;
use std::time::{Duration, Instant};

/// Where the transaction is in Figure 7 of RFC 3261 (with RFC 6026's Accepted).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum InviteServerState {
    Proceeding,
    /// A 2xx was sent; retransmitting it until the ACK arrives or 64·T1 passes.
    Accepted,
    /// A 3xx–6xx was sent; waiting for the ACK.
    Completed,
    Confirmed,
    Terminated,
}

/// What the transaction asks its driver to do or tells its TU.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum InviteServerEvent {
    /// Send these bytes to the peer again.
    Retransmit(Bytes),
    /// Timer H: no ACK for our non-2xx final (§17.2.1).
    AckTimeout,
    /// No ACK for our 2xx within 64·T1: the UAS should send BYE (§13.3.1.4).
    NoAckFor2xx,
    /// The transaction is over and can be removed.
    Terminated,
}

#[derive(Clone, Copy)]
enum Timer {
    G = 0,
    H = 1,
    I = 2,
    Retransmit2xx = 3,
    L = 4,
}

/// One INVITE server transaction.
#[derive(Debug, Clone)]
pub struct InviteServerTxn {
    state: InviteServerState,
    cfg: TimerConfig,
    unreliable: bool,
    last_response: Option<Bytes>,
    interval: Duration,
    acked: bool,
    timers: TimerTable<5>,
}

impl InviteServerTxn {
    /// A new transaction for a received INVITE; it starts in Proceeding.
    pub fn new(cfg: TimerConfig, unreliable: bool) -> Self {
        InviteServerTxn {
            state: InviteServerState::Proceeding,
            cfg,
            unreliable,
            last_response: None,
            interval: cfg.t1,
            acked: false,
            timers: TimerTable::default(),
        }
    }

    /// The current state.
    pub fn state(&self) -> InviteServerState {
        self.state
    }

    /// The INVITE arrived again: in Proceeding and Completed the last response is resent
    /// (§17.2.1); in Accepted it is absorbed (RFC 6026 §7.1), the 2xx timer covers it.
    pub fn on_retransmitted_invite(&self) -> Option<Bytes> {
        match self.state {
            InviteServerState::Proceeding | InviteServerState::Completed => {
                self.last_response.clone()
            }
            _ => None,
        }
    }

    /// Records a provisional response for retransmission; returns the bytes to send now.
    pub fn send_provisional(&mut self, response: Bytes) -> Option<Bytes> {
        if self.state != InviteServerState::Proceeding {
            return None;
        }
        self.last_response = Some(response.clone());
        Some(response)
    }

    /// Sends a final response; returns the bytes to send now. 2xx enters Accepted, others
    /// Completed with Timer G (unreliable transports only) and Timer H.
    pub fn send_final(&mut self, now: Instant, code: u16, response: Bytes) -> Option<Bytes> {
        if self.state != InviteServerState::Proceeding {
            return None;
        }
        self.last_response = Some(response.clone());
        self.interval = self.cfg.t1;
        if (200..300).contains(&code) {
            self.state = InviteServerState::Accepted;
            // §13.3.1.4 applies whatever the transport: the ACK is end to end.
            self.timers
                .set(Timer::Retransmit2xx as usize, now + self.interval);
            self.timers
                .set(Timer::L as usize, now + self.cfg.timeout_64t1());
        } else {
            self.state = InviteServerState::Completed;
            if self.unreliable {
                self.timers.set(Timer::G as usize, now + self.interval);
            }
            self.timers
                .set(Timer::H as usize, now + self.cfg.timeout_64t1());
        }
        Some(response)
    }

    /// An ACK matched this transaction (non-2xx: same branch) or its dialog (2xx).
    pub fn on_ack(&mut self, now: Instant) {
        match self.state {
            InviteServerState::Completed => {
                self.state = InviteServerState::Confirmed;
                self.timers.clear(Timer::G as usize);
                self.timers.clear(Timer::H as usize);
                let wait = if self.unreliable {
                    self.cfg.t4
                } else {
                    Duration::ZERO
                };
                self.timers.set(Timer::I as usize, now + wait);
            }
            InviteServerState::Accepted => {
                self.acked = true;
                self.timers.clear(Timer::Retransmit2xx as usize);
            }
            _ => {}
        }
    }

    /// Whether the 2xx was acknowledged.
    pub fn acked(&self) -> bool {
        self.acked
    }

    /// The next deadline the driver must wake up for.
    pub fn poll_timeout(&self) -> Option<Instant> {
        self.timers.next()
    }

    /// Runs one due timer; call until it returns `None`.
    pub fn handle_timeout(&mut self, now: Instant) -> Option<InviteServerEvent> {
        let fired = self.timers.take_expired(now)?;
        let event = match fired {
            f if f == Timer::G as usize || f == Timer::Retransmit2xx as usize => {
                self.interval = self.cfg.backoff(self.interval);
                self.timers.set(f, now + self.interval);
                InviteServerEvent::Retransmit(self.last_response.clone()?)
            }
            f if f == Timer::H as usize => {
                self.terminate();
                InviteServerEvent::AckTimeout
            }
            f if f == Timer::L as usize && !self.acked => {
                self.terminate();
                InviteServerEvent::NoAckFor2xx
            }
            _ => {
                self.terminate();
                InviteServerEvent::Terminated
            }
        };
        Some(event)
    }

    fn terminate(&mut self) {
        self.state = InviteServerState::Terminated;
        self.timers.clear_all();
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ms(n: u64) -> Duration {
        Duration::from_millis(n)
    }

    /// Runs the transaction on a fake clock, recording when each event happened (ms after t0).
    fn drive(
        txn: &mut InviteServerTxn,
        t0: Instant,
        until: Duration,
    ) -> Vec<(u64, InviteServerEvent)> {
        let mut seen = Vec::new();
        while let Some(at) = txn.poll_timeout() {
            if at > t0 + until {
                break;
            }
            while let Some(ev) = txn.handle_timeout(at) {
                seen.push(((at - t0).as_millis() as u64, ev));
            }
        }
        seen
    }

    #[test]
    fn timer_g_schedule_then_timer_h_over_udp() {
        let t0 = Instant::now();
        let mut txn = InviteServerTxn::new(TimerConfig::default(), true);
        let resp = Bytes::from_static(b"SIP/2.0 486 Busy Here\r\n\r\n");
        assert!(txn.send_final(t0, 486, resp.clone()).is_some());
        let events = drive(&mut txn, t0, Duration::from_secs(60));
        let retransmits: Vec<u64> = events
            .iter()
            .filter(|(_, e)| matches!(e, InviteServerEvent::Retransmit(_)))
            .map(|(t, _)| *t)
            .collect();
        // G = T1, doubling to T2: 500, 1500, 3500, 7500, then every 4 s until H at 32 s.
        assert_eq!(
            retransmits,
            [
                500, 1500, 3500, 7500, 11500, 15500, 19500, 23500, 27500, 31500
            ]
        );
        assert_eq!(
            events.last(),
            Some(&(32_000, InviteServerEvent::AckTimeout))
        );
        assert_eq!(txn.state(), InviteServerState::Terminated);
    }

    #[test]
    fn ack_confirms_and_timer_i_ends_it() {
        let t0 = Instant::now();
        let mut txn = InviteServerTxn::new(TimerConfig::default(), true);
        txn.send_final(t0, 487, Bytes::from_static(b"487"));
        txn.on_ack(t0 + ms(700));
        assert_eq!(txn.state(), InviteServerState::Confirmed);
        assert_eq!(txn.on_retransmitted_invite(), None);
        let events = drive(&mut txn, t0, Duration::from_secs(60));
        assert_eq!(events, [(5_700, InviteServerEvent::Terminated)]);
    }

    #[test]
    fn reliable_transport_has_no_timer_g_and_zero_timer_i() {
        let t0 = Instant::now();
        let mut txn = InviteServerTxn::new(TimerConfig::default(), false);
        txn.send_final(t0, 488, Bytes::from_static(b"488"));
        assert_eq!(txn.poll_timeout(), Some(t0 + Duration::from_secs(32)));
        txn.on_ack(t0 + ms(10));
        assert_eq!(
            drive(&mut txn, t0, Duration::from_secs(1)),
            [(10, InviteServerEvent::Terminated)]
        );
    }

    #[test]
    fn retransmitted_invite_gets_the_last_response() {
        let t0 = Instant::now();
        let mut txn = InviteServerTxn::new(TimerConfig::default(), true);
        assert_eq!(txn.on_retransmitted_invite(), None);
        txn.send_provisional(Bytes::from_static(b"100"));
        assert_eq!(
            txn.on_retransmitted_invite(),
            Some(Bytes::from_static(b"100"))
        );
        txn.send_final(t0, 200, Bytes::from_static(b"200"));
        // Accepted absorbs the INVITE (RFC 6026 §7.1); the 2xx timer resends the 200.
        assert_eq!(txn.on_retransmitted_invite(), None);
        assert_eq!(txn.send_provisional(Bytes::from_static(b"180")), None);
    }

    #[test]
    fn unacked_2xx_is_resent_to_t2_then_reported_at_64t1() {
        let t0 = Instant::now();
        let mut txn = InviteServerTxn::new(TimerConfig::default(), false);
        txn.send_final(t0, 200, Bytes::from_static(b"200"));
        let events = drive(&mut txn, t0, Duration::from_secs(60));
        let times: Vec<u64> = events.iter().map(|(t, _)| *t).collect();
        assert_eq!(times[..5], [500, 1500, 3500, 7500, 11500]);
        assert_eq!(
            events.last(),
            Some(&(32_000, InviteServerEvent::NoAckFor2xx))
        );
    }

    #[test]
    fn acked_2xx_stops_retransmitting_and_ends_quietly() {
        let t0 = Instant::now();
        let mut txn = InviteServerTxn::new(TimerConfig::default(), true);
        txn.send_final(t0, 200, Bytes::from_static(b"200"));
        let first = drive(&mut txn, t0, ms(600));
        assert_eq!(
            first,
            [(
                500,
                InviteServerEvent::Retransmit(Bytes::from_static(b"200"))
            )]
        );
        txn.on_ack(t0 + ms(800));
        assert!(txn.acked());
        let rest = drive(&mut txn, t0, Duration::from_secs(60));
        assert_eq!(rest, [(32_000, InviteServerEvent::Terminated)]);
    }
}
