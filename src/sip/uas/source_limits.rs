//! Limits per trusted source: how many calls one trunk address may hold at once and how fast it
//! may start new ones. A carrier trunk is one or a few addresses carrying every call, so the
//! defaults sit far above a normal trunk's peak; they exist so that a runaway trunk (a looping
//! PBX, a misrouted test dialler) cannot take every line or every CPU cycle from the others.
//! Out-of-dialog requests other than INVITE (OPTIONS, REGISTER, MESSAGE, a BYE for no dialog…)
//! have their own rate, because each one costs a transaction held for Timer J (64*T1) and a
//! spoofed trusted address over UDP could otherwise send them without bound.
//! Every limit is answered 503 with Retry-After (RFC 3261 §21.5.4, §20.33).

use super::rate_limit::SourceLimiter;
use std::collections::HashMap;
use std::net::IpAddr;
use std::time::Instant;

/// Why a trusted source's request is refused before it costs a call or a transaction.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) enum SourceRefusal {
    /// The source already holds its share of concurrent calls.
    CallsHeld,
    /// The source starts calls faster than its INVITE rate allows.
    InviteRate,
    /// The source sends out-of-dialog non-INVITE requests faster than their rate allows.
    RequestRate,
}

/// Takes a token from `source`'s bucket in `rate`, or refuses with `refusal`.
fn take(
    rate: &mut SourceLimiter,
    source: IpAddr,
    now: Instant,
    refusal: SourceRefusal,
) -> Result<(), SourceRefusal> {
    if rate.allow(source, now) {
        Ok(())
    } else {
        Err(refusal)
    }
}

/// Calls held, INVITE rate and other requests' rate, per trusted source address.
#[derive(Debug)]
pub(super) struct SourceLimits {
    max_calls: usize,
    invite_rate: SourceLimiter,
    request_rate: SourceLimiter,
    /// Calls (ringing or answered) per source; entries at zero are removed, so the map holds
    /// at most as many entries as there are calls.
    calls: HashMap<IpAddr, usize>,
}

impl SourceLimits {
    /// `rates` are (INVITEs a second, INVITE burst, other requests a second, their burst).
    pub(super) fn new(max_calls: usize, rates: (u32, u32, u32, u32)) -> Self {
        let (invites_per_sec, invite_burst, requests_per_sec, request_burst) = rates;
        SourceLimits {
            max_calls,
            invite_rate: SourceLimiter::new(invites_per_sec, invite_burst),
            request_rate: SourceLimiter::new(requests_per_sec, request_burst),
            calls: HashMap::new(),
        }
    }

    /// Takes one INVITE token for `source` at `now`; `InviteRate` when its bucket is empty.
    pub(super) fn admit_invite(
        &mut self,
        source: IpAddr,
        now: Instant,
    ) -> Result<(), SourceRefusal> {
        take(
            &mut self.invite_rate,
            source,
            now,
            SourceRefusal::InviteRate,
        )
    }

    /// Takes one token of the out-of-dialog request rate for `source` at `now`;
    /// `RequestRate` when its bucket is empty.
    pub(super) fn admit_request(
        &mut self,
        source: IpAddr,
        now: Instant,
    ) -> Result<(), SourceRefusal> {
        take(
            &mut self.request_rate,
            source,
            now,
            SourceRefusal::RequestRate,
        )
    }

    /// `CallsHeld` when `source` already holds its cap.
    pub(super) fn check_calls(&self, source: IpAddr) -> Result<(), SourceRefusal> {
        if self.calls_of(source) >= self.max_calls {
            Err(SourceRefusal::CallsHeld)
        } else {
            Ok(())
        }
    }

    pub(super) fn calls_of(&self, source: IpAddr) -> usize {
        self.calls.get(&source).copied().unwrap_or(0)
    }

    /// A call from `source` now exists.
    pub(super) fn call_started(&mut self, source: IpAddr) {
        *self.calls.entry(source).or_insert(0) += 1;
    }

    /// A call from `source` is gone.
    pub(super) fn call_ended(&mut self, source: IpAddr) {
        if let Some(n) = self.calls.get_mut(&source) {
            *n = n.saturating_sub(1);
            if *n == 0 {
                self.calls.remove(&source);
            }
        }
    }
}

impl super::Endpoint {
    /// Counts a refusal under its limit (`ivrd_sip_source_limited_total{limit}`).
    pub(super) fn count_source_limited(&mut self, refusal: SourceRefusal) {
        let c = &mut self.counters;
        match refusal {
            SourceRefusal::CallsHeld => c.source_limited_calls += 1,
            SourceRefusal::InviteRate => c.source_limited_invite_rate += 1,
            SourceRefusal::RequestRate => c.source_limited_requests += 1,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::time::Duration;

    fn ip(s: &str) -> IpAddr {
        s.parse().expect("ip")
    }

    #[test]
    fn concurrent_calls_are_capped_per_source_and_freed_on_end() {
        let mut l = SourceLimits::new(2, (100, 100, 100, 100));
        let (a, b) = (ip("192.0.2.1"), ip("192.0.2.2"));
        l.call_started(a);
        assert_eq!(l.check_calls(a), Ok(()));
        l.call_started(a);
        assert_eq!(l.check_calls(a), Err(SourceRefusal::CallsHeld));
        assert_eq!(l.check_calls(b), Ok(()), "another trunk is not affected");
        l.call_ended(a);
        assert_eq!(l.check_calls(a), Ok(()));
        l.call_ended(a);
        l.call_ended(a);
        assert_eq!(l.calls_of(a), 0, "never below zero");
        assert!(
            l.calls.is_empty(),
            "no entry left for a source without calls"
        );
    }

    #[test]
    fn invite_rate_is_a_token_bucket_per_source_on_the_given_clock() {
        let t0 = Instant::now();
        let mut l = SourceLimits::new(10, (10, 5, 100, 100));
        let (a, b) = (ip("192.0.2.1"), ip("192.0.2.2"));
        let burst = (0..50).filter(|_| l.admit_invite(a, t0).is_ok()).count();
        assert_eq!(burst, 5, "the burst, then refused");
        assert_eq!(l.admit_invite(a, t0), Err(SourceRefusal::InviteRate));
        assert_eq!(
            l.admit_invite(b, t0),
            Ok(()),
            "sources have their own bucket"
        );
        let t1 = t0 + Duration::from_millis(50);
        assert_eq!(
            l.admit_invite(a, t1),
            Err(SourceRefusal::InviteRate),
            "half a token"
        );
        let t2 = t0 + Duration::from_millis(100);
        assert_eq!(
            l.admit_invite(a, t2),
            Ok(()),
            "one token per 100 ms at 10/s"
        );
        // Over a second at 10/s the source gets 10 more, whatever it sends.
        let admitted = (1..=1000)
            .filter(|i| l.admit_invite(a, t2 + Duration::from_millis(*i)).is_ok())
            .count();
        assert_eq!(admitted, 10);
    }

    #[test]
    fn other_requests_have_their_own_bucket() {
        let t0 = Instant::now();
        let mut l = SourceLimits::new(10, (10, 5, 2, 3));
        let a = ip("192.0.2.1");
        let sent = (0..10).filter(|_| l.admit_request(a, t0).is_ok()).count();
        assert_eq!(sent, 3, "the request burst");
        assert_eq!(l.admit_request(a, t0), Err(SourceRefusal::RequestRate));
        assert_eq!(l.admit_invite(a, t0), Ok(()), "INVITEs are not charged");
        assert_eq!(
            l.admit_request(a, t0 + Duration::from_millis(500)),
            Ok(()),
            "one token per 500 ms at 2/s"
        );
    }
}
