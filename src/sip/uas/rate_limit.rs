//! Per-source token buckets: how often ivrd answers a source it does not trust. Beyond the rate,
//! requests are dropped and counted, so a flood costs neither transactions nor reply bandwidth.

use std::collections::HashMap;
use std::net::IpAddr;
use std::time::Instant;

/// Sources tracked at once; when full, the table starts afresh (a flood from many addresses
/// resets buckets, which only lets through another burst of stateless refusals).
const MAX_SOURCES: usize = 4096;

#[derive(Debug, Clone, Copy)]
struct Bucket {
    tokens: f64,
    last: Instant,
}

/// Token buckets keyed by source address.
#[derive(Debug)]
pub struct SourceLimiter {
    rate_per_sec: f64,
    burst: f64,
    buckets: HashMap<IpAddr, Bucket>,
}

impl SourceLimiter {
    /// `rate_per_sec` sustained, `burst` at once.
    pub fn new(rate_per_sec: u32, burst: u32) -> Self {
        SourceLimiter {
            rate_per_sec: f64::from(rate_per_sec),
            burst: f64::from(burst.max(1)),
            buckets: HashMap::new(),
        }
    }

    /// Takes one token for `source` at `now`; false when the source is over its rate.
    pub fn allow(&mut self, source: IpAddr, now: Instant) -> bool {
        if self.buckets.len() >= MAX_SOURCES && !self.buckets.contains_key(&source) {
            self.buckets.clear();
        }
        let burst = self.burst;
        let bucket = self.buckets.entry(source).or_insert(Bucket {
            tokens: burst,
            last: now,
        });
        let elapsed = now.saturating_duration_since(bucket.last).as_secs_f64();
        bucket.tokens = (bucket.tokens + elapsed * self.rate_per_sec).min(burst);
        bucket.last = now;
        if bucket.tokens >= 1.0 {
            bucket.tokens -= 1.0;
            true
        } else {
            false
        }
    }

    /// Sources currently tracked (bounded by a constant).
    #[cfg(test)]
    pub fn tracked(&self) -> usize {
        self.buckets.len()
    }
}

/// Default: 5 refusals a second per untrusted source, bursts of 20.
impl Default for SourceLimiter {
    fn default() -> Self {
        SourceLimiter::new(5, 20)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::time::Duration;

    #[test]
    fn burst_then_rate_then_refill() {
        let t0 = Instant::now();
        let ip: IpAddr = "192.0.2.1".parse().expect("ip");
        let mut l = SourceLimiter::new(5, 3);
        let allowed = (0..10).filter(|_| l.allow(ip, t0)).count();
        assert_eq!(allowed, 3, "the burst");
        assert!(
            !l.allow(ip, t0 + Duration::from_millis(100)),
            "0.5 token is not enough"
        );
        assert!(
            l.allow(ip, t0 + Duration::from_millis(200)),
            "one token after 200 ms at 5/s"
        );
        let other: IpAddr = "192.0.2.2".parse().expect("ip");
        assert!(l.allow(other, t0), "sources are independent");
    }

    #[test]
    fn the_table_stays_bounded_under_many_sources() {
        let t0 = Instant::now();
        let mut l = SourceLimiter::default();
        for i in 0..20_000u32 {
            l.allow(IpAddr::from(i.to_be_bytes()), t0);
        }
        assert!(l.tracked() <= MAX_SOURCES);
    }
}
