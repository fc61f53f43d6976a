//! Case JSON: arbitrary bytes → `CaseSkeleton`; whatever deserialises must serialise with
//! `to_json` and read back equal (the outbox writes and re-reads these documents).

#![no_main]

use ivrd::case::skeleton::CaseSkeleton;
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let Ok(case) = serde_json::from_slice::<CaseSkeleton>(data) else {
        return;
    };
    let json = case.to_json().expect("a deserialised case serialises");
    let back: CaseSkeleton = serde_json::from_slice(&json).expect("our JSON reads back");
    assert_eq!(back, case);
});
