//! The delivery retry policy: what to do after each attempt to POST a case.
//!
//! Sans-IO: the delivery worker (`runtime::delivery`) performs the HTTP request, turns the result into
//! an [`AttemptOutcome`], and asks [`RetryPolicy::decide`] for a [`Decision`], passing in the wall
//! clock and a random number. Times are Unix milliseconds rather than `Instant`s because a case's age
//! and attempt count are persisted in the spool and must survive a restart.
//!
//! Rules:
//! - 2xx: delivered.
//! - 408, 425, 429, 5xx, network errors and timeouts: retried (RFC 9110 §15.5.9 and §15.6 call these
//!   conditions transient; RFC 6585 §4 for 429; RFC 8470 §5.2 for 425).
//! - Every other status (other 4xx, and 1xx/3xx, which a correctly configured intake URL never sends
//!   because redirects are not followed): dead letter, since repeating the same request cannot help.
//! - Backoff is exponential with "full jitter": attempt `n` waits a uniformly random time in
//!   `[0, min(cap, base * 2^(n-1))]`.
//! - A `Retry-After` header (RFC 9110 §10.2.3) in delay-seconds form replaces the backoff for that
//!   attempt; the HTTP-date form is not interpreted and falls back to the backoff.
//! - After `max_attempts` failed attempts, or when the next attempt would fall later than
//!   `max_age` after the case was first enqueued, the case is dead-lettered with the reason.

use std::fmt;
use std::time::Duration;

/// Retry limits and backoff shape. Plain configuration, so its fields are public.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct RetryPolicy {
    /// Upper bound of the first retry's delay; doubles per attempt.
    pub base: Duration,
    /// The largest backoff upper bound (a `Retry-After` may exceed it).
    pub cap: Duration,
    /// Attempts (including the first) after which a still-failing case is dead-lettered.
    pub max_attempts: u32,
    /// How long after its first enqueue a case may still be attempted.
    pub max_age: Duration,
}

impl Default for RetryPolicy {
    /// 2 s base, 10 min cap, 500 attempts, 7 days: long enough to ride out a weekend outage of the
    /// intake backend (500 attempts at a mean 5 min is ~40 h) while still surfacing a dead endpoint.
    fn default() -> Self {
        RetryPolicy {
            base: Duration::from_secs(2),
            cap: Duration::from_secs(600),
            max_attempts: 500,
            max_age: Duration::from_secs(7 * 24 * 3600),
        }
    }
}

/// What one delivery attempt produced, as seen by the policy.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum AttemptOutcome {
    /// The receiver answered with this status; `retry_after` is its parsed `Retry-After`, if any.
    Status {
        code: u16,
        retry_after: Option<Duration>,
    },
    /// No complete answer within the configured request timeout.
    Timeout,
    /// Connecting or talking to the receiver failed (refused, reset, DNS, TLS...).
    Network,
}

impl fmt::Display for AttemptOutcome {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            AttemptOutcome::Status { code, .. } => write!(f, "HTTP {code}"),
            AttemptOutcome::Timeout => f.write_str("timeout"),
            AttemptOutcome::Network => f.write_str("network error"),
        }
    }
}

/// How a status code is treated.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum StatusClass {
    /// The receiver has the case.
    Delivered,
    /// A transient condition: try again later.
    Retryable,
    /// The receiver refused this request for good.
    Rejected,
}

/// Classifies a response status (see the module rules).
pub fn classify_status(code: u16) -> StatusClass {
    match code {
        200..=299 => StatusClass::Delivered,
        408 | 425 | 429 | 500..=599 => StatusClass::Retryable,
        _ => StatusClass::Rejected,
    }
}

/// Parses a `Retry-After` value in delay-seconds form (RFC 9110 §10.2.3: `1*DIGIT`). Returns `None`
/// for the HTTP-date form or anything malformed, so the caller falls back to its backoff.
pub fn parse_retry_after(value: &str) -> Option<Duration> {
    let value = value.trim();
    if value.is_empty() || !value.bytes().all(|b| b.is_ascii_digit()) {
        return None;
    }
    // An absurd number of digits saturates rather than failing: the max-age rule then applies.
    Some(Duration::from_secs(value.parse().unwrap_or(u64::MAX)))
}

/// The facts about the attempt being judged.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Attempt {
    /// 1 for the first attempt, counting this one.
    pub number: u32,
    /// When the case entered the outbox (Unix ms).
    pub first_enqueued_unix_ms: u64,
    /// The time the attempt finished (Unix ms).
    pub now_unix_ms: u64,
}

/// Why a case was moved to the dead-letter directory; its `Display` is the reason file's first line.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum DeadReason {
    /// The receiver answered with a status that is not worth repeating.
    Rejected { status: u16 },
    /// `max_attempts` attempts all failed.
    AttemptsExhausted { attempts: u32, last: AttemptOutcome },
    /// The next attempt would come later than `max_age` after the first enqueue.
    Expired {
        age: Duration,
        attempts: u32,
        last: AttemptOutcome,
    },
}

impl fmt::Display for DeadReason {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            DeadReason::Rejected { status } => {
                write!(f, "rejected: receiver answered HTTP {status}")
            }
            DeadReason::AttemptsExhausted { attempts, last } => {
                write!(f, "gave up after {attempts} attempts; last: {last}")
            }
            DeadReason::Expired {
                age,
                attempts,
                last,
            } => write!(
                f,
                "expired: next attempt would be {} s after enqueue, after {attempts} attempts; last: {last}",
                age.as_secs()
            ),
        }
    }
}

/// What the worker must do with the case after an attempt.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Decision {
    /// Remove it from the spool.
    Delivered,
    /// Attempt again after this delay (from `now`).
    RetryIn(Duration),
    /// Move it to the dead-letter directory.
    Dead(DeadReason),
}

impl RetryPolicy {
    /// The backoff before retrying after failed attempt `attempt` (1-based): full jitter over
    /// `[0, min(cap, base * 2^(attempt-1))]`, picked by `random` (uniform over `u64` is uniform here
    /// up to a negligible modulo bias). Millisecond resolution.
    pub fn backoff(&self, attempt: u32, random: u64) -> Duration {
        let doublings = attempt.saturating_sub(1).min(63);
        let base_ms = u64::try_from(self.base.as_millis()).unwrap_or(u64::MAX);
        let cap_ms = u64::try_from(self.cap.as_millis()).unwrap_or(u64::MAX);
        let ceiling = base_ms.saturating_mul(1u64 << doublings).min(cap_ms);
        Duration::from_millis(random % ceiling.saturating_add(1))
    }

    /// Judges one finished attempt (see the module rules for the order of the checks).
    pub fn decide(&self, outcome: AttemptOutcome, attempt: Attempt, random: u64) -> Decision {
        let retry_after = match outcome {
            AttemptOutcome::Status { code, retry_after } => match classify_status(code) {
                StatusClass::Delivered => return Decision::Delivered,
                StatusClass::Rejected => {
                    return Decision::Dead(DeadReason::Rejected { status: code });
                }
                StatusClass::Retryable => retry_after,
            },
            AttemptOutcome::Timeout | AttemptOutcome::Network => None,
        };
        if attempt.number >= self.max_attempts {
            return Decision::Dead(DeadReason::AttemptsExhausted {
                attempts: attempt.number,
                last: outcome,
            });
        }
        let delay = retry_after.unwrap_or_else(|| self.backoff(attempt.number, random));
        let delay_ms = u64::try_from(delay.as_millis()).unwrap_or(u64::MAX);
        let next_age_ms = attempt
            .now_unix_ms
            .saturating_add(delay_ms)
            .saturating_sub(attempt.first_enqueued_unix_ms);
        let next_age = Duration::from_millis(next_age_ms);
        if next_age > self.max_age {
            return Decision::Dead(DeadReason::Expired {
                age: next_age,
                attempts: attempt.number,
                last: outcome,
            });
        }
        Decision::RetryIn(delay)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const T0: u64 = 1_795_000_000_000;

    fn policy() -> RetryPolicy {
        RetryPolicy {
            base: Duration::from_millis(1000),
            cap: Duration::from_millis(30_000),
            max_attempts: 5,
            max_age: Duration::from_secs(3600),
        }
    }

    fn attempt(number: u32, now: u64) -> Attempt {
        Attempt {
            number,
            first_enqueued_unix_ms: T0,
            now_unix_ms: now,
        }
    }

    fn status(code: u16) -> AttemptOutcome {
        AttemptOutcome::Status {
            code,
            retry_after: None,
        }
    }

    #[test]
    fn classification_follows_the_rules() {
        for code in [200, 201, 202, 204, 299] {
            assert_eq!(classify_status(code), StatusClass::Delivered, "{code}");
        }
        for code in [408, 425, 429, 500, 502, 503, 504, 599] {
            assert_eq!(classify_status(code), StatusClass::Retryable, "{code}");
        }
        for code in [
            100, 301, 302, 400, 401, 403, 404, 409, 413, 422, 451, 499, 600,
        ] {
            assert_eq!(classify_status(code), StatusClass::Rejected, "{code}");
        }
    }

    #[test]
    fn backoff_ceiling_doubles_then_caps() {
        let p = policy();
        // random = u64::MAX - k picks near the ceiling; use exact modulo arithmetic instead:
        // ceiling + random where random == ceiling gives exactly the ceiling.
        assert_eq!(p.backoff(1, 1000), Duration::from_millis(1000));
        assert_eq!(p.backoff(2, 2000), Duration::from_millis(2000));
        assert_eq!(p.backoff(3, 4000), Duration::from_millis(4000));
        assert_eq!(p.backoff(5, 16_000), Duration::from_millis(16_000));
        // Attempt 6 would be 32 s; the cap is 30 s, so 30_000 is the largest value and 30_001 wraps.
        assert_eq!(p.backoff(6, 30_000), Duration::from_millis(30_000));
        assert_eq!(p.backoff(6, 30_001), Duration::ZERO);
        assert_eq!(p.backoff(40, 30_000), Duration::from_millis(30_000));
        assert_eq!(p.backoff(u32::MAX, 7), Duration::from_millis(7));
    }

    #[test]
    fn backoff_is_full_jitter() {
        let p = policy();
        // Attempt 3: ceiling 4000 ms, so the delay is random mod 4001.
        assert_eq!(p.backoff(3, 12_345), Duration::from_millis(342));
        assert_eq!(p.backoff(3, 0), Duration::ZERO);
        assert_eq!(p.backoff(3, 4001), Duration::ZERO);
        assert_eq!(p.backoff(3, 4002), Duration::from_millis(1));
    }

    #[test]
    fn success_and_rejection_end_the_case() {
        let p = policy();
        assert_eq!(
            p.decide(status(204), attempt(1, T0), 0),
            Decision::Delivered
        );
        assert_eq!(
            p.decide(status(400), attempt(1, T0), 0),
            Decision::Dead(DeadReason::Rejected { status: 400 })
        );
        // A rejection is final even on the last allowed attempt or with a Retry-After.
        let rejected = AttemptOutcome::Status {
            code: 403,
            retry_after: Some(Duration::from_secs(1)),
        };
        assert_eq!(
            p.decide(rejected, attempt(5, T0), 0),
            Decision::Dead(DeadReason::Rejected { status: 403 })
        );
    }

    #[test]
    fn transient_failures_back_off() {
        let p = policy();
        assert_eq!(
            p.decide(status(500), attempt(1, T0 + 10), 700),
            Decision::RetryIn(Duration::from_millis(700))
        );
        assert_eq!(
            p.decide(AttemptOutcome::Timeout, attempt(2, T0), 2001),
            Decision::RetryIn(Duration::ZERO)
        );
        assert_eq!(
            p.decide(AttemptOutcome::Network, attempt(3, T0), 12_345),
            Decision::RetryIn(Duration::from_millis(342))
        );
    }

    #[test]
    fn retry_after_seconds_replace_the_backoff() {
        let p = policy();
        let busy = AttemptOutcome::Status {
            code: 429,
            retry_after: parse_retry_after("120"),
        };
        assert_eq!(
            p.decide(busy, attempt(1, T0), 5),
            Decision::RetryIn(Duration::from_secs(120))
        );
    }

    #[test]
    fn retry_after_http_date_falls_back_to_backoff() {
        let p = policy();
        let value = "Wed, 21 Oct 2015 07:28:00 GMT";
        assert_eq!(parse_retry_after(value), None);
        let busy = AttemptOutcome::Status {
            code: 503,
            retry_after: parse_retry_after(value),
        };
        assert_eq!(
            p.decide(busy, attempt(2, T0), 1500),
            Decision::RetryIn(Duration::from_millis(1500))
        );
    }

    #[test]
    fn retry_after_parsing() {
        assert_eq!(parse_retry_after("0"), Some(Duration::ZERO));
        assert_eq!(parse_retry_after(" 1 "), Some(Duration::from_secs(1)));
        assert_eq!(parse_retry_after("-1"), None);
        assert_eq!(parse_retry_after("1.5"), None);
        assert_eq!(parse_retry_after(""), None);
        assert_eq!(
            parse_retry_after("99999999999999999999999"),
            Some(Duration::from_secs(u64::MAX))
        );
    }

    #[test]
    fn attempts_are_limited() {
        let p = policy();
        assert!(matches!(
            p.decide(status(503), attempt(4, T0), 1),
            Decision::RetryIn(_)
        ));
        assert_eq!(
            p.decide(status(503), attempt(5, T0), 1),
            Decision::Dead(DeadReason::AttemptsExhausted {
                attempts: 5,
                last: status(503)
            })
        );
    }

    #[test]
    fn age_is_limited_by_the_next_attempt_time() {
        let p = policy();
        // 3599 s old, a 1 s delay lands exactly on max_age: still allowed.
        let now = T0 + 3_599_000;
        assert_eq!(
            p.decide(AttemptOutcome::Network, attempt(1, now), 1000),
            Decision::RetryIn(Duration::from_millis(1000))
        );
        // One more millisecond of delay crosses it.
        assert_eq!(
            p.decide(AttemptOutcome::Network, attempt(2, now), 1001),
            Decision::Dead(DeadReason::Expired {
                age: Duration::from_millis(3_600_001),
                attempts: 2,
                last: AttemptOutcome::Network
            })
        );
        // A huge Retry-After cannot park a case beyond max_age either.
        let busy = AttemptOutcome::Status {
            code: 429,
            retry_after: parse_retry_after("99999999999999999999999"),
        };
        assert!(matches!(
            p.decide(busy, attempt(1, T0), 0),
            Decision::Dead(DeadReason::Expired { .. })
        ));
    }

    #[test]
    fn reasons_read_well() {
        assert_eq!(
            DeadReason::Rejected { status: 400 }.to_string(),
            "rejected: receiver answered HTTP 400"
        );
        assert_eq!(
            DeadReason::AttemptsExhausted {
                attempts: 3,
                last: AttemptOutcome::Timeout
            }
            .to_string(),
            "gave up after 3 attempts; last: timeout"
        );
    }
}
