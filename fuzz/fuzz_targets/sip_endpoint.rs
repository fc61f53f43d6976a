//! The sans-IO UAS core fed arbitrary datagrams with timer advances on a fake clock.
//!
//! Input layout: the first byte picks the source (bit 0: untrusted), transport (bit 1: TCP) and
//! the answer delay (bit 2: ring 1 s before answering); the rest is split at NUL bytes into
//! messages (SIP never contains NUL outside bodies, so seeds are plain messages joined by NUL).
//! Between messages the clock advances by the message length modulo 64, in 100 ms steps.
//!
//! Invariants: never a panic; every transmitted message parses; the port pool never sees a
//! release of a port it did not hand out; the number of transactions stays bounded by the
//! messages fed; and after hanging up everything and advancing past 64·T1 + T4 (twice, for the
//! BYE's own transaction) no transaction, call or port is left behind.

#![no_main]

use ivrd::sip::header::Transport;
use ivrd::sip::message::parse;
use ivrd::sip::uas::{Endpoint, EndpointConfig, Inbound, Output, RtpPortSource};
use libfuzzer_sys::fuzz_target;
use std::collections::BTreeSet;
use std::net::SocketAddr;
use std::time::{Duration, Instant};

struct Pool {
    free: Vec<u16>,
    out: BTreeSet<u16>,
}

impl RtpPortSource for Pool {
    fn reserve(&mut self) -> Option<u16> {
        let port = self.free.pop()?;
        self.out.insert(port);
        Some(port)
    }
    fn release(&mut self, port: u16) {
        assert!(
            self.out.remove(&port),
            "released port {port} twice or never reserved"
        );
        self.free.push(port);
    }
}

struct Rig {
    ep: Endpoint,
    pool: Pool,
    now: Instant,
}

impl Rig {
    fn drain(&mut self) {
        while let Some(out) = self.ep.poll_output() {
            if let Some((_, bytes)) = out.transmission() {
                assert!(
                    parse(bytes).is_ok(),
                    "we sent a message we cannot parse: {:?}",
                    String::from_utf8_lossy(&bytes)
                );
            }
        }
    }

    fn advance(&mut self, by: Duration) {
        let target = self.now + by;
        let mut rounds = 0u32;
        while let Some(at) = self.ep.poll_timeout().filter(|at| *at <= target) {
            rounds += 1;
            assert!(rounds < 100_000, "timers do not converge");
            self.now = at.max(self.now);
            self.ep.handle_timeout(self.now, &mut self.pool);
            self.drain();
        }
        self.now = target;
    }
}

fuzz_target!(|data: &[u8]| {
    let Some((&flags, rest)) = data.split_first() else {
        return;
    };
    let mut cfg = EndpointConfig::default();
    // Serve every dialled number (flag bit 3 off) so inputs reach the call path, not just 404.
    if flags & 8 == 0 {
        cfg.service_numbers.clear();
    }
    if flags & 4 != 0 {
        cfg.answer_delay = Duration::from_secs(1);
    }
    let timers = cfg.timers;
    let mut rig = Rig {
        ep: Endpoint::new(cfg),
        pool: Pool {
            free: vec![20006, 20004, 20002, 20000],
            out: BTreeSet::new(),
        },
        now: Instant::now(),
    };
    let source: SocketAddr = if flags & 1 == 0 {
        "127.0.0.1:5061".parse().expect("literal")
    } else {
        "198.51.100.9:5060".parse().expect("literal")
    };
    let (transport, conn) = if flags & 2 == 0 {
        (Transport::Udp, None)
    } else {
        (Transport::Tcp, Some(7))
    };
    let mut fed = 0usize;
    for msg in rest.split(|b| *b == 0).filter(|m| !m.is_empty()) {
        fed += 1;
        let inbound = Inbound {
            transport,
            source,
            local: "127.0.0.1:5060".parse().expect("literal"),
            conn,
            data: msg,
        };
        rig.ep.handle_inbound(rig.now, inbound, &mut rig.pool);
        rig.drain();
        // One message opens at most one server transaction (plus a BYE/NOTIFY of ours).
        assert!(
            rig.ep.transaction_count() <= 2 * fed,
            "transactions grow faster than input"
        );
        rig.advance(Duration::from_millis(100 * (msg.len() % 64) as u64));
    }
    let quiet = 64 * timers.t1 + timers.t4 + Duration::from_secs(1);
    rig.advance(quiet);
    rig.ep.hang_up_all(rig.now, &mut rig.pool);
    rig.drain();
    rig.advance(quiet);
    rig.advance(quiet);
    assert_eq!(rig.ep.transaction_count(), 0, "a transaction is stuck");
    assert_eq!(rig.ep.active_calls(), 0, "a call outlived hang_up_all");
    assert!(rig.pool.out.is_empty(), "ports leaked: {:?}", rig.pool.out);
});
