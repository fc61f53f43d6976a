//! The open-file limit. Every call holds four descriptors (RTP and RTCP sockets, the call
//! recording, a message recording), so the usual soft limit of 1,024 would stop a daemon
//! configured for thousands of calls at a few hundred, with port-pool errors that do not say
//! why. At start-up the soft limit is raised to the hard limit (what the administrator allows;
//! raising it needs no privilege), and the log says when even that is short of `max_calls`.

/// Descriptors one call may hold at once.
pub const FDS_PER_CALL: u64 = 4;
/// Descriptors the daemon needs besides calls: listeners, TCP connections' share, files.
pub const FDS_BASE: u64 = 256;

/// What the limit was and is.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct FdLimit {
    pub before: u64,
    pub now: u64,
    pub hard: u64,
}

/// Descriptors needed for `max_calls` calls and `max_tcp` TCP connections.
pub fn needed(max_calls: usize, max_tcp: usize) -> u64 {
    FDS_BASE + FDS_PER_CALL * max_calls as u64 + max_tcp as u64
}

/// Raises the soft `RLIMIT_NOFILE` to the hard limit.
pub fn raise() -> std::io::Result<FdLimit> {
    let mut lim = libc::rlimit {
        rlim_cur: 0,
        rlim_max: 0,
    };
    // SAFETY: getrlimit writes one rlimit into the struct we own.
    if unsafe { libc::getrlimit(libc::RLIMIT_NOFILE, &mut lim) } != 0 {
        return Err(std::io::Error::last_os_error());
    }
    let before = lim.rlim_cur;
    if lim.rlim_cur < lim.rlim_max {
        let raised = libc::rlimit {
            rlim_cur: lim.rlim_max,
            rlim_max: lim.rlim_max,
        };
        // SAFETY: setrlimit reads the struct we own.
        if unsafe { libc::setrlimit(libc::RLIMIT_NOFILE, &raised) } != 0 {
            return Err(std::io::Error::last_os_error());
        }
        lim = raised;
    }
    Ok(FdLimit {
        before,
        now: lim.rlim_cur,
        hard: lim.rlim_max,
    })
}

/// Raises the limit and logs what it means for `max_calls`.
pub fn raise_and_report(max_calls: usize, max_tcp: usize) {
    let need = needed(max_calls, max_tcp);
    match raise() {
        Ok(limit) if limit.now < need => tracing::warn!(
            limit = limit.now,
            needed = need,
            max_calls,
            "open-file limit is below what max_calls needs; raise the hard limit (e.g. LimitNOFILE) or lower max_calls"
        ),
        Ok(limit) => tracing::debug!(before = limit.before, now = limit.now, "open-file limit"),
        Err(e) => tracing::warn!(error = %e, "cannot read or raise the open-file limit"),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_soft_limit_ends_at_the_hard_limit() {
        let limit = raise().expect("rlimit");
        assert!(limit.before <= limit.now);
        assert_eq!(limit.now, limit.hard);
        // Idempotent: a second call finds nothing to raise.
        assert_eq!(raise().expect("rlimit").before, limit.hard);
    }
}
