//! Non-INVITE server transaction (RFC 3261 §17.2.2, Figure 8): absorbs request retransmissions,
//! resends the last response, and lingers for Timer J on unreliable transports.

use super::timers::TimerConfig;
use bytes::Bytes;
use std::time::{Duration, Instant};

/// States of Figure 8.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum NonInviteServerState {
    Trying,
    Proceeding,
    Completed,
    Terminated,
}

/// One non-INVITE server transaction.
#[derive(Debug, Clone)]
pub struct NonInviteServerTxn {
    state: NonInviteServerState,
    cfg: TimerConfig,
    unreliable: bool,
    last_response: Option<Bytes>,
    timer_j: Option<Instant>,
}

impl NonInviteServerTxn {
    /// A transaction for a newly received request; starts in Trying.
    pub fn new(cfg: TimerConfig, unreliable: bool) -> Self {
        NonInviteServerTxn {
            state: NonInviteServerState::Trying,
            cfg,
            unreliable,
            last_response: None,
            timer_j: None,
        }
    }

    /// The current state.
    pub fn state(&self) -> NonInviteServerState {
        self.state
    }

    /// The request arrived again: absorbed in Trying, answered with the last response after.
    pub fn on_retransmitted_request(&self) -> Option<Bytes> {
        match self.state {
            NonInviteServerState::Proceeding | NonInviteServerState::Completed => {
                self.last_response.clone()
            }
            _ => None,
        }
    }

    /// Records and returns a response to send. A final response completes the transaction and
    /// arms Timer J (64·T1 unreliable, zero reliable).
    pub fn send_response(&mut self, now: Instant, code: u16, response: Bytes) -> Option<Bytes> {
        if !matches!(
            self.state,
            NonInviteServerState::Trying | NonInviteServerState::Proceeding
        ) {
            return None;
        }
        self.last_response = Some(response.clone());
        if code < 200 {
            self.state = NonInviteServerState::Proceeding;
        } else {
            self.state = NonInviteServerState::Completed;
            let wait = if self.unreliable {
                self.cfg.timeout_64t1()
            } else {
                Duration::ZERO
            };
            self.timer_j = Some(now + wait);
        }
        Some(response)
    }

    /// The next deadline (Timer J).
    pub fn poll_timeout(&self) -> Option<Instant> {
        self.timer_j
    }

    /// Fires Timer J when due; returns true when the transaction just terminated.
    pub fn handle_timeout(&mut self, now: Instant) -> bool {
        match self.timer_j {
            Some(at) if at <= now => {
                self.timer_j = None;
                self.state = NonInviteServerState::Terminated;
                true
            }
            _ => false,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn absorbs_then_replays_then_times_out_with_j() {
        let t0 = Instant::now();
        let mut txn = NonInviteServerTxn::new(TimerConfig::default(), true);
        assert_eq!(txn.on_retransmitted_request(), None);
        let ok = Bytes::from_static(b"SIP/2.0 200 OK\r\n\r\n");
        assert_eq!(txn.send_response(t0, 200, ok.clone()), Some(ok.clone()));
        assert_eq!(txn.on_retransmitted_request(), Some(ok));
        assert_eq!(
            txn.send_response(t0, 500, Bytes::new()),
            None,
            "one final only"
        );
        assert_eq!(txn.poll_timeout(), Some(t0 + Duration::from_secs(32)));
        assert!(!txn.handle_timeout(t0 + Duration::from_secs(31)));
        assert!(txn.handle_timeout(t0 + Duration::from_secs(32)));
        assert_eq!(txn.state(), NonInviteServerState::Terminated);
    }

    #[test]
    fn reliable_transport_terminates_at_once() {
        let t0 = Instant::now();
        let mut txn = NonInviteServerTxn::new(TimerConfig::default(), false);
        txn.send_response(t0, 100, Bytes::from_static(b"100"));
        assert_eq!(txn.state(), NonInviteServerState::Proceeding);
        txn.send_response(t0, 200, Bytes::from_static(b"200"));
        assert_eq!(txn.poll_timeout(), Some(t0));
        assert!(txn.handle_timeout(t0));
    }
}
