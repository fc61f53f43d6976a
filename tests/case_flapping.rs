//! 1,000 SIPp calls through the real `ivrd` binary while the intake receiver flaps (down 5 s in
//! every 20 s): 1,000 distinct cases must arrive, each schema-valid. The figure is printed.
//!
//! Shape: 50 calls per second of 500 ms each (20 s of calls), the receiver starting with its
//! 5 s outage 8 s in, so cases are refused while calls are still coming in; flapping goes on
//! until SIPp is done, then the receiver stays up and the retries (backoff 2 s doubling, full
//! jitter) drain the spool. The whole run takes well under two minutes.

mod common_daemon;
mod common_http;
mod common_sipp;

use common_daemon::{Daemon, DaemonOptions, case_validator, check_case};
use common_http::Receiver;
use common_sipp::{Sipp, SippRun};
use std::collections::HashMap;
use std::time::{Duration, Instant};

const CALLS: u32 = 1000;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
#[ignore = "needs sipp; 1,000 calls, about a minute"]
async fn thousand_calls_with_a_flapping_receiver_give_thousand_cases() {
    let mut receiver = Receiver::start().await;
    let options = DaemonOptions::new("flap", receiver.url());
    let daemon = Daemon::start(&options);
    let mut run = SippRun::new("basic_call", CALLS);
    run.rate = 50;
    run.limit = 100;
    run.pause_ms = 500;
    run.timeout = Duration::from_secs(90);
    let started = Instant::now();
    let mut sipp = Sipp::start(daemon.sip, run);
    let mut bodies: HashMap<String, Vec<u8>> = HashMap::new();
    let mut posts = 0usize;
    let mut outages = 0;
    // Phase of the 20 s cycle: up for 8 s, down for 5 s, up for 7 s.
    let cycle_start = Instant::now();
    let mut down = false;
    loop {
        while let Some(request) = receiver.try_next() {
            posts += 1;
            let key = request.header("idempotency-key").unwrap().to_owned();
            bodies.entry(key).or_insert(request.body);
        }
        let phase = cycle_start.elapsed().as_millis() % 20_000;
        let should_be_down = (8_000..13_000).contains(&phase) && !sipp.finished();
        if should_be_down && !down {
            receiver.down().await;
            outages += 1;
            down = true;
        } else if !should_be_down && down {
            receiver.up().await;
            down = false;
        }
        if bodies.len() == CALLS as usize {
            break;
        }
        assert!(
            started.elapsed() < Duration::from_secs(150),
            "only {} of {CALLS} cases after {:?} ({posts} POSTs)",
            bodies.len(),
            started.elapsed()
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    let took = started.elapsed();
    let result = tokio::task::spawn_blocking(move || sipp.wait())
        .await
        .unwrap();
    assert!(
        result.exit_ok && result.successful == Some(CALLS.into()),
        "{result:?}"
    );
    assert!(outages >= 1, "the receiver did go down");
    let validator = case_validator();
    for (key, body) in &bodies {
        assert_eq!(&check_case(&validator, &options.storage, body), key);
    }
    println!(
        "flapping receiver: {CALLS} calls -> {} distinct cases received ({posts} POSTs received, \
         {outages} outage(s) of 5 s) in {:.1} s",
        bodies.len(),
        took.as_secs_f64()
    );
    assert_eq!(bodies.len(), CALLS as usize);
}
