//! Real-time scheduling for the threads whose lateness a caller hears: the media clock's
//! workers. A 20 ms tick that waits behind the recorder, the SIP runtime or another process on
//! a busy machine becomes a gap in every call's audio; `SCHED_RR` lets the ticks run first
//! (telephony servers commonly run their timing threads this way). The kernel's real-time
//! throttling (`sched_rt_runtime_us`, 95 % by default) still leaves the rest of the system
//! time to run should a worker ever spin.

/// Puts the calling thread under `SCHED_RR` at `priority` (1–99). `Ok(false)` for priority 0
/// (left at normal priority); an error when the kernel refuses (no CAP_SYS_NICE, no RTPRIO
/// limit, or a container without the capability).
pub fn set_realtime(priority: u8) -> std::io::Result<bool> {
    if priority == 0 {
        return Ok(false);
    }
    let param = libc::sched_param {
        sched_priority: i32::from(priority.min(99)),
    };
    // SAFETY: `param` is a valid sched_param for the call; pid 0 is the calling thread.
    let rc = unsafe { libc::sched_setscheduler(0, libc::SCHED_RR, &param) };
    if rc == 0 {
        Ok(true)
    } else {
        Err(std::io::Error::last_os_error())
    }
}

/// Sets the calling thread's nice value (-20–19; lower runs more). A thread with a negative
/// nice value still shares the CPU with everything else under the fair scheduler, only with a
/// larger weight, so unlike `SCHED_RR` it cannot keep a lock holder off the CPU for long.
/// An error when the kernel refuses (no CAP_SYS_NICE or RLIMIT_NICE below it).
pub fn set_nice(nice: i32) -> std::io::Result<()> {
    // SAFETY: gettid has no preconditions.
    let tid = unsafe { libc::gettid() };
    // SAFETY: plain system call on our own thread id; PRIO_PROCESS with a thread id sets that
    // thread's nice value on Linux.
    let rc = unsafe { libc::setpriority(libc::PRIO_PROCESS, tid as libc::id_t, nice) };
    if rc == 0 {
        Ok(())
    } else {
        Err(std::io::Error::last_os_error())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Field `n` (1-based, as in proc(5)) of /proc/thread-self/stat for the calling thread.
    fn own_stat_field<T: std::str::FromStr>(n: usize) -> T {
        let stat = std::fs::read_to_string("/proc/thread-self/stat").expect("stat");
        // The command name may hold spaces; the fields after it are plain numbers.
        let after_comm = &stat[stat.rfind(')').expect("comm") + 2..];
        // Field 3 (state) is after_comm's first, so field N is its (N - 3)th.
        let field = after_comm.split(' ').nth(n - 3).expect("field");
        field
            .parse()
            .unwrap_or_else(|_| panic!("field {n} is {field:?}"))
    }

    /// The calling thread's (policy, rt_priority): fields 41 and 40.
    fn own_policy() -> (u32, u32) {
        (own_stat_field(41), own_stat_field(40))
    }

    /// The calling thread's nice value: field 19.
    fn own_nice() -> i32 {
        own_stat_field(19)
    }

    #[test]
    fn a_permitted_nice_value_applies_to_the_calling_thread_only() {
        let before = own_nice();
        std::thread::spawn(|| match set_nice(-3) {
            Ok(()) => assert_eq!(own_nice(), -3),
            Err(e) => assert_eq!(e.raw_os_error(), Some(libc::EACCES), "{e}"),
        })
        .join()
        .expect("thread");
        assert_eq!(own_nice(), before, "other threads keep theirs");
    }

    #[test]
    fn priority_zero_leaves_the_thread_alone() {
        std::thread::spawn(|| {
            assert!(!set_realtime(0).expect("no system call"));
            assert_eq!(own_policy(), (libc::SCHED_OTHER as u32, 0));
        })
        .join()
        .expect("thread");
    }

    #[test]
    fn a_permitted_request_makes_the_thread_round_robin_at_that_priority() {
        std::thread::spawn(|| match set_realtime(7) {
            Ok(applied) => {
                assert!(applied);
                assert_eq!(own_policy(), (libc::SCHED_RR as u32, 7));
            }
            // Without CAP_SYS_NICE the kernel refuses and nothing changes.
            Err(e) => {
                assert_eq!(e.raw_os_error(), Some(libc::EPERM), "{e}");
                assert_eq!(own_policy(), (libc::SCHED_OTHER as u32, 0));
            }
        })
        .join()
        .expect("thread");
    }
}
