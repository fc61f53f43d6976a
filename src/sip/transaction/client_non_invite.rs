//! Non-INVITE client transaction (RFC 3261 §17.1.2, Figure 6) for the requests ivrd sends: BYE now,
//! REFER and NOTIFY responses' partners later. Timer E retransmits (doubling, capped at T2, and at
//! T2 once a provisional arrived), Timer F gives up at 64·T1, Timer K absorbs stray finals.

use super::timers::{TimerConfig, TimerTable};
use bytes::Bytes;
use std::time::{Duration, Instant};

/// States of Figure 6.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum NonInviteClientState {
    Trying,
    Proceeding,
    Completed,
    Terminated,
}

/// What the transaction reports.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum NonInviteClientEvent {
    /// Send the request again.
    Retransmit(Bytes),
    /// Timer F fired with no final response: the TU treats this as a 408 (§8.1.3.1).
    Timeout,
    /// Timer K ran out; the transaction can be removed.
    Terminated,
}

#[derive(Clone, Copy)]
enum Timer {
    E = 0,
    F = 1,
    K = 2,
}

/// One non-INVITE client transaction.
#[derive(Debug, Clone)]
pub struct NonInviteClientTxn {
    state: NonInviteClientState,
    cfg: TimerConfig,
    unreliable: bool,
    request: Bytes,
    interval: Duration,
    timers: TimerTable<3>,
}

impl NonInviteClientTxn {
    /// Starts the transaction for `request`, which the caller sends right away.
    pub fn start(now: Instant, cfg: TimerConfig, unreliable: bool, request: Bytes) -> Self {
        let mut timers = TimerTable::default();
        if unreliable {
            timers.set(Timer::E as usize, now + cfg.t1);
        }
        timers.set(Timer::F as usize, now + cfg.timeout_64t1());
        NonInviteClientTxn {
            state: NonInviteClientState::Trying,
            cfg,
            unreliable,
            request,
            interval: cfg.t1,
            timers,
        }
    }

    /// The current state.
    pub fn state(&self) -> NonInviteClientState {
        self.state
    }

    /// A response matched this transaction. Returns the status code to pass to the TU, or `None`
    /// when it is a retransmission to absorb.
    pub fn on_response(&mut self, now: Instant, code: u16) -> Option<u16> {
        match (self.state, code) {
            (NonInviteClientState::Trying | NonInviteClientState::Proceeding, 100..=199) => {
                self.state = NonInviteClientState::Proceeding;
                Some(code)
            }
            (NonInviteClientState::Trying | NonInviteClientState::Proceeding, _) => {
                self.state = NonInviteClientState::Completed;
                self.timers.clear_all();
                let wait = if self.unreliable {
                    self.cfg.t4
                } else {
                    Duration::ZERO
                };
                self.timers.set(Timer::K as usize, now + wait);
                Some(code)
            }
            _ => None,
        }
    }

    /// The next deadline.
    pub fn poll_timeout(&self) -> Option<Instant> {
        self.timers.next()
    }

    /// Runs one due timer; call until it returns `None`.
    pub fn handle_timeout(&mut self, now: Instant) -> Option<NonInviteClientEvent> {
        let fired = self.timers.take_expired(now)?;
        if fired == Timer::E as usize {
            // §17.1.2.2: in Proceeding retransmissions continue every T2.
            self.interval = match self.state {
                NonInviteClientState::Proceeding => self.cfg.t2,
                _ => self.cfg.backoff(self.interval),
            };
            self.timers.set(Timer::E as usize, now + self.interval);
            return Some(NonInviteClientEvent::Retransmit(self.request.clone()));
        }
        self.state = NonInviteClientState::Terminated;
        self.timers.clear_all();
        Some(if fired == Timer::F as usize {
            NonInviteClientEvent::Timeout
        } else {
            NonInviteClientEvent::Terminated
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn drive(
        txn: &mut NonInviteClientTxn,
        t0: Instant,
        until: Duration,
    ) -> Vec<(u64, NonInviteClientEvent)> {
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
    fn timer_e_is_capped_at_t2_and_f_fires_at_64t1() {
        let t0 = Instant::now();
        let bye = Bytes::from_static(b"BYE");
        let mut txn = NonInviteClientTxn::start(t0, TimerConfig::default(), true, bye);
        let events = drive(&mut txn, t0, Duration::from_secs(60));
        let times: Vec<u64> = events
            .iter()
            .filter(|(_, e)| matches!(e, NonInviteClientEvent::Retransmit(_)))
            .map(|(t, _)| *t)
            .collect();
        // RFC 3261 §17.1.2.2: 500 ms, 1 s, 2 s, then 4 s (T2) apart — never more.
        assert_eq!(
            times,
            [
                500, 1500, 3500, 7500, 11500, 15500, 19500, 23500, 27500, 31500
            ]
        );
        assert_eq!(
            events.last(),
            Some(&(32_000, NonInviteClientEvent::Timeout))
        );
        assert_eq!(txn.state(), NonInviteClientState::Terminated);
    }

    #[test]
    fn provisional_moves_retransmits_to_t2() {
        let t0 = Instant::now();
        let mut txn =
            NonInviteClientTxn::start(t0, TimerConfig::default(), true, Bytes::from_static(b"R"));
        assert_eq!(drive(&mut txn, t0, Duration::from_millis(600)).len(), 1);
        assert_eq!(
            txn.on_response(t0 + Duration::from_millis(700), 100),
            Some(100)
        );
        let events = drive(&mut txn, t0, Duration::from_millis(9_600));
        let times: Vec<u64> = events.iter().map(|(t, _)| *t).collect();
        // The pending E (due at 1.5 s) fires, then every T2.
        assert_eq!(times, [1500, 5500, 9500]);
    }

    #[test]
    fn final_response_completes_and_k_absorbs_retransmissions() {
        let t0 = Instant::now();
        let mut txn =
            NonInviteClientTxn::start(t0, TimerConfig::default(), true, Bytes::from_static(b"R"));
        assert_eq!(txn.on_response(t0, 200), Some(200));
        assert_eq!(txn.on_response(t0, 200), None);
        assert_eq!(
            drive(&mut txn, t0, Duration::from_secs(60)),
            [(5_000, NonInviteClientEvent::Terminated)]
        );
    }

    #[test]
    fn tcp_sends_once_and_terminates_on_final() {
        let t0 = Instant::now();
        let mut txn =
            NonInviteClientTxn::start(t0, TimerConfig::default(), false, Bytes::from_static(b"R"));
        assert_eq!(txn.poll_timeout(), Some(t0 + Duration::from_secs(32)));
        txn.on_response(t0, 481);
        assert_eq!(
            drive(&mut txn, t0, Duration::from_secs(1)),
            [(0, NonInviteClientEvent::Terminated)]
        );
    }
}
