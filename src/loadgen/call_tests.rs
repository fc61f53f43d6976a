use super::*;
use crate::media::dtmf::TelephoneEvent;
use crate::media::rtp::parse_rtp;
use crate::sip::message::{Message, parse};
use crate::sip::sdp::{Direction, LocalMedia, answer_offer, write_answer};

#[derive(Default)]
struct Wire {
    sip: Vec<Vec<u8>>,
    rtp: Vec<(SocketAddr, Vec<u8>)>,
}

impl Transmit for Wire {
    fn sip(&mut self, bytes: &[u8]) {
        self.sip.push(bytes.to_vec());
    }
    fn rtp(&mut self, to: SocketAddr, bytes: &[u8]) {
        self.rtp.push((to, bytes.to_vec()));
    }
}

fn request(bytes: &[u8]) -> Request {
    match parse(bytes) {
        Ok(Message::Request(r)) => r,
        other => panic!("not a request: {other:?}"),
    }
}

fn response(bytes: &[u8]) -> Response {
    match parse(bytes) {
        Ok(Message::Response(r)) => r,
        other => panic!("not a response: {other:?}"),
    }
}

fn script() -> Script {
    Script {
        keys: vec![(Duration::from_secs(1), Digit::from_char('2').unwrap())],
        duration: Duration::from_secs(3),
        transfer_status: "486 Busy Here".into(),
        audio: vec![0x55; 8000],
    }
}

const IVRD: &str = "127.0.0.1:5060";
const IVRD_RTP: u16 = 20_000;

/// Starts a call and answers it the way ivrd does; returns the call, the wire and the INVITE.
fn answered(base: Instant) -> (Call, Wire, Request) {
    let mut wire = Wire::default();
    let local = "127.0.0.1:40000".parse().unwrap();
    let mut call = Call::start(
        base,
        3,
        "lgT",
        local,
        IVRD.parse().unwrap(),
        "1234501",
        30_000,
        &mut wire,
    );
    let invite = request(&wire.sip[0]);
    let oa = answer_offer(&invite.body, &[AudioCodec::Pcmu]).unwrap();
    let sdp = write_answer(
        &LocalMedia {
            addr: "127.0.0.1".parse().unwrap(),
            rtp_port: IVRD_RTP,
            session_id: 1,
            session_version: 1,
        },
        &oa,
        Direction::SendRecv,
    );
    let ok = build_response(
        &invite,
        200,
        "OK",
        &ResponseParts {
            to_tag: Some("ivr1"),
            contact: Some("sip:ivrd@127.0.0.1:5060"),
            body: Some(("application/sdp", sdp.as_bytes())),
            ..ResponseParts::default()
        },
    );
    call.on_response(base + Duration::from_millis(10), &response(&ok), &mut wire);
    (call, wire, invite)
}

#[test]
fn a_late_tick_catches_up_at_most_five_frames() {
    let base = Instant::now();
    let (mut call, mut wire, _) = answered(base);
    let mut buf = [0u8; RTP_BUF];
    call.on_tick(
        base + Duration::from_millis(510),
        &script(),
        &mut buf,
        &mut wire,
    );
    assert_eq!(wire.rtp.len(), MAX_CATCH_UP as usize);
    let ts: Vec<u32> = wire
        .rtp
        .iter()
        .map(|(_, p)| parse_rtp(p).unwrap().timestamp)
        .collect();
    // The skipped frames still advanced the media clock: the last frame is frame 25.
    assert_eq!(ts[4].wrapping_sub(ts[0]), 4 * 160);
}

#[test]
fn call_id_index_round_trips() {
    let base = Instant::now();
    let (_, _, invite) = answered(base);
    let id = invite.headers.get("Call-ID").unwrap();
    assert_eq!(Call::index_of(id, "lgT"), Some(3));
    assert_eq!(Call::index_of(id, "lgX"), None);
}

#[test]
fn invite_is_retransmitted_until_a_provisional_response() {
    let base = Instant::now();
    let mut wire = Wire::default();
    let local = "127.0.0.1:40000".parse().unwrap();
    let mut call = Call::start(
        base,
        0,
        "lgT",
        local,
        IVRD.parse().unwrap(),
        "1",
        30_000,
        &mut wire,
    );
    let mut buf = [0u8; RTP_BUF];
    call.on_tick(
        base + Duration::from_millis(499),
        &script(),
        &mut buf,
        &mut wire,
    );
    assert_eq!(wire.sip.len(), 1);
    call.on_tick(base + T1, &script(), &mut buf, &mut wire);
    assert_eq!(wire.sip.len(), 2, "Timer A fired once");
    let trying = build_response(
        &request(&wire.sip[0]),
        100,
        "Trying",
        &ResponseParts::default(),
    );
    call.on_response(base + T1, &response(&trying), &mut wire);
    call.on_tick(
        base + Duration::from_secs(5),
        &script(),
        &mut buf,
        &mut wire,
    );
    assert_eq!(wire.sip.len(), 2, "no retransmission after 100");
    call.on_tick(base + TXN_TIMEOUT, &script(), &mut buf, &mut wire);
    assert_eq!(call.outcome(), Some(Outcome::Timeout));
}

#[test]
fn answered_call_acks_streams_audio_presses_a_key_and_hangs_up() {
    let base = Instant::now();
    let (mut call, mut wire, _) = answered(base);
    let ack = request(&wire.sip[1]);
    assert_eq!(ack.method, Method::Ack);
    assert_eq!(ack.uri, "sip:ivrd@127.0.0.1:5060");
    let mut buf = [0u8; RTP_BUF];
    let answered_at = base + Duration::from_millis(10);
    // Ticking every 10 ms to 200 ms after answer: frames 0..=10 are due (one every 20 ms).
    for ms in (0..=200).step_by(10) {
        call.on_tick(
            answered_at + Duration::from_millis(ms),
            &script(),
            &mut buf,
            &mut wire,
        );
    }
    assert_eq!(wire.rtp.len(), 11);
    assert!(wire.rtp.iter().all(|(to, _)| to.port() == IVRD_RTP));
    let seqs: Vec<u16> = wire
        .rtp
        .iter()
        .map(|(_, p)| parse_rtp(p).unwrap().sequence)
        .collect();
    assert!(seqs.windows(2).all(|w| w[1] == w[0].wrapping_add(1)));
    // Walk to the key press and past it in 5 ms steps, as the driver does.
    wire.rtp.clear();
    let mut t = answered_at + Duration::from_millis(200);
    while t < answered_at + Duration::from_millis(1400) {
        t += Duration::from_millis(5);
        call.on_tick(t, &script(), &mut buf, &mut wire);
    }
    let events: Vec<TelephoneEvent> = wire
        .rtp
        .iter()
        .filter_map(|(_, p)| parse_rtp(p).ok().filter(|r| r.payload_type == 101))
        .map(|r| TelephoneEvent::parse(r.payload).unwrap())
        .collect();
    assert!(
        events.len() >= 4,
        "start, update(s) and three ends: {events:?}"
    );
    assert!(events.iter().all(|e| e.event == 2));
    assert_eq!(events.iter().filter(|e| e.end).count(), 3);
    assert_eq!(call.keys_sent(), 1);
    // BYE at 3 s after answer; its 200 ends the call.
    call.on_tick(
        answered_at + Duration::from_secs(3),
        &script(),
        &mut buf,
        &mut wire,
    );
    let bye = request(wire.sip.last().unwrap());
    assert_eq!(bye.method, Method::Bye);
    let ok = build_response(&bye, 200, "OK", &ResponseParts::default());
    call.on_response(
        answered_at + Duration::from_secs(3),
        &response(&ok),
        &mut wire,
    );
    assert_eq!(call.outcome(), Some(Outcome::HungUp));
}

#[test]
fn refer_gets_202_and_a_final_notify_and_remote_bye_gets_200() {
    let base = Instant::now();
    let (mut call, mut wire, invite) = answered(base);
    let call_id = invite.headers.get("Call-ID").unwrap();
    let refer = format!(
        "REFER sip:caller@127.0.0.1:40000 SIP/2.0\r\nVia: SIP/2.0/UDP 127.0.0.1:5060;branch=z9hG4bKr1\r\n\
         From: <sip:1234501@127.0.0.1>;tag=ivr1\r\nTo: <sip:13800000003@127.0.0.1>;tag=lg3\r\n\
         Call-ID: {call_id}\r\nCSeq: 1 REFER\r\nRefer-To: <sip:english@acd>\r\nContent-Length: 0\r\n\r\n"
    );
    let now = base + Duration::from_secs(2);
    call.on_request(now, &request(refer.as_bytes()), &script(), &mut wire);
    let n = wire.sip.len();
    assert_eq!(response(&wire.sip[n - 2]).code, 202);
    let notify = request(&wire.sip[n - 1]);
    assert_eq!(notify.method, Method::Notify);
    assert_eq!(&notify.body[..], b"SIP/2.0 486 Busy Here\r\n");
    assert_eq!(call.refers(), 1);
    let bye = refer
        .replace("REFER sip", "BYE sip")
        .replace("1 REFER", "2 BYE");
    call.on_request(now, &request(bye.as_bytes()), &script(), &mut wire);
    assert_eq!(response(wire.sip.last().unwrap()).code, 200);
    assert_eq!(call.outcome(), Some(Outcome::RemoteHangUp));
}
