//! SDP offer/answer: an arbitrary offer → `answer_offer` → `write_answer`.
//!
//! Invariants: our answer parses with sdp-types; it keeps the offer's m-line count (RFC 3264 §6);
//! answering our own answer picks the same codec and payload types and writes the same text
//! (negotiation is a fixed point); and `read_answer` accepts it for the chosen codec.

#![no_main]

use ivrd::sip::sdp::{AudioCodec, Direction, LocalMedia, answer_offer, read_answer, write_answer};
use libfuzzer_sys::fuzz_target;

const PREFS: [AudioCodec; 2] = [AudioCodec::Pcmu, AudioCodec::Pcma];

fuzz_target!(|data: &[u8]| {
    let Ok(offer) = answer_offer(data, &PREFS) else {
        return;
    };
    let local = LocalMedia {
        addr: "192.0.2.1".parse().expect("literal"),
        rtp_port: 20000,
        session_id: 7,
        session_version: 1,
    };
    let answer = write_answer(&local, &offer, Direction::SendRecv);
    let parsed = match sdp_types::Session::parse(answer.as_bytes()) {
        Ok(s) => s,
        Err(e) => panic!("our answer does not parse ({e}):\n{answer}"),
    };
    let offered = sdp_types::Session::parse(data).expect("answer_offer parsed it");
    assert_eq!(
        parsed.medias.len(),
        offered.medias.len(),
        "m-line count changed:\n{answer}"
    );

    let again = match answer_offer(answer.as_bytes(), &PREFS) {
        Ok(a) => a,
        Err(e) => panic!("our answer is not negotiable ({e}):\n{answer}"),
    };
    assert_eq!(again.audio.codec, offer.audio.codec);
    assert_eq!(again.audio.codec_pt, offer.audio.codec_pt);
    assert_eq!(again.audio.dtmf_pt, offer.audio.dtmf_pt);
    assert_eq!(again.audio.mline, offer.audio.mline);
    let answer2 = write_answer(&local, &again, Direction::SendRecv);
    assert_eq!(answer2, answer, "answering our own answer is not stable");

    let read = match read_answer(answer.as_bytes(), &[offer.audio.codec]) {
        Ok(r) => r,
        Err(e) => panic!("read_answer rejects our answer ({e}):\n{answer}"),
    };
    assert_eq!(read.codec, offer.audio.codec);
});
