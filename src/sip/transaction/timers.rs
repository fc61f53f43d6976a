//! RFC 3261 timer values and a small timer table (one deadline per named timer; the next wake-up
//! is the earliest). The driver owns the one real timer; state machines only compare instants.

use std::time::{Duration, Instant};

/// The three base values of RFC 3261 §17.1.1.1 / Table 4; everything else derives from them.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct TimerConfig {
    /// RTT estimate (default 500 ms).
    pub t1: Duration,
    /// Maximum retransmit interval for non-INVITE requests and INVITE responses (default 4 s).
    pub t2: Duration,
    /// Maximum time a message stays in the network (default 5 s).
    pub t4: Duration,
}

impl Default for TimerConfig {
    fn default() -> Self {
        TimerConfig {
            t1: Duration::from_millis(500),
            t2: Duration::from_secs(4),
            t4: Duration::from_secs(5),
        }
    }
}

impl TimerConfig {
    /// 64·T1: Timers B, F, H, J and L (and the §13.3.1.4 wait for the ACK of a 2xx).
    pub fn timeout_64t1(&self) -> Duration {
        self.t1 * 64
    }

    /// The next retransmit interval: doubled, capped at T2 (§17.1.2.2, §17.2.1 Timer G).
    pub fn backoff(&self, current: Duration) -> Duration {
        (current * 2).min(self.t2)
    }
}

/// Deadlines for up to `N` named timers.
#[derive(Debug, Clone)]
pub struct TimerTable<const N: usize> {
    slots: [Option<Instant>; N],
}

impl<const N: usize> Default for TimerTable<N> {
    fn default() -> Self {
        TimerTable { slots: [None; N] }
    }
}

impl<const N: usize> TimerTable<N> {
    /// Arms timer `index` to fire at `at` (replacing any earlier deadline).
    pub fn set(&mut self, index: usize, at: Instant) {
        self.slots[index] = Some(at);
    }

    /// Disarms timer `index`.
    pub fn clear(&mut self, index: usize) {
        self.slots[index] = None;
    }

    /// Disarms every timer.
    pub fn clear_all(&mut self) {
        self.slots = [None; N];
    }

    /// The earliest armed deadline.
    pub fn next(&self) -> Option<Instant> {
        self.slots.iter().flatten().min().copied()
    }

    /// Takes the earliest timer that is due at `now`, disarming it.
    pub fn take_expired(&mut self, now: Instant) -> Option<usize> {
        let (index, _) = self
            .slots
            .iter()
            .enumerate()
            .filter_map(|(i, s)| s.map(|at| (i, at)))
            .filter(|(_, at)| *at <= now)
            .min_by_key(|(_, at)| *at)?;
        self.slots[index] = None;
        Some(index)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn earliest_due_timer_fires_first() {
        let t0 = Instant::now();
        let mut table = TimerTable::<3>::default();
        table.set(0, t0 + Duration::from_secs(3));
        table.set(2, t0 + Duration::from_secs(1));
        assert_eq!(table.next(), Some(t0 + Duration::from_secs(1)));
        assert_eq!(table.take_expired(t0), None);
        assert_eq!(table.take_expired(t0 + Duration::from_secs(5)), Some(2));
        assert_eq!(table.take_expired(t0 + Duration::from_secs(5)), Some(0));
        assert_eq!(table.next(), None);
    }

    #[test]
    fn backoff_doubles_to_t2() {
        let cfg = TimerConfig::default();
        let mut d = cfg.t1;
        let seen: Vec<u64> = (0..6)
            .map(|_| {
                d = cfg.backoff(d);
                d.as_millis() as u64
            })
            .collect();
        assert_eq!(seen, [1000, 2000, 4000, 4000, 4000, 4000]);
        assert_eq!(cfg.timeout_64t1(), Duration::from_secs(32));
    }
}
