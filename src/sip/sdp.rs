//! SDP offer/answer for one audio stream (RFC 3264 on RFC 4566 descriptions).
//!
//! ivrd speaks G.711 (PCMU, PCMA) and RFC 4733 telephone-event at 8 kHz, 20 ms packets. An offer
//! is parsed with `sdp-types`, negotiated against the configured codec preference, and answered
//! with one codec plus telephone-event; every other m-line is refused with port 0 (§6).

use std::fmt::Write as _;
use std::net::{IpAddr, SocketAddr};

pub use crate::media::g711::Codec as AudioCodec;

/// Media direction attribute (RFC 3264 §5.1, §6.1).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Direction {
    SendRecv,
    SendOnly,
    RecvOnly,
    Inactive,
}

impl Direction {
    /// The direction an answerer uses for an offer with this direction (RFC 3264 §6.1).
    pub fn answer_to(self) -> Direction {
        match self {
            Direction::SendOnly => Direction::RecvOnly,
            Direction::RecvOnly => Direction::SendOnly,
            other => other,
        }
    }

    /// The attribute name.
    pub fn as_str(self) -> &'static str {
        match self {
            Direction::SendRecv => "sendrecv",
            Direction::SendOnly => "sendonly",
            Direction::RecvOnly => "recvonly",
            Direction::Inactive => "inactive",
        }
    }

    /// Whether ivrd may send media when the peer's description carries this direction.
    pub fn peer_receives(self) -> bool {
        matches!(self, Direction::SendRecv | Direction::RecvOnly)
    }
}

/// Why an SDP body was refused. `NoCommonCodec` becomes `488` with a Warning (RFC 3261 §20.43).
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum SdpError {
    #[error("malformed SDP: {0}")]
    Malformed(String),
    #[error("no audio stream over RTP/AVP in the SDP")]
    NoAudio,
    #[error("no common codec; offered payload types {offered:?}")]
    NoCommonCodec { offered: String },
    #[error("no usable connection address for the audio stream")]
    NoAddress,
}

impl SdpError {
    /// The Warning header value for the `488` (code 305 "Incompatible media format", or 304).
    pub fn warning(&self, agent: &str) -> String {
        match self {
            SdpError::NoAudio => format!("304 {agent} \"Media type not available\""),
            _ => format!("305 {agent} \"Incompatible media format\""),
        }
    }
}

/// What was agreed for the audio stream.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct NegotiatedAudio {
    pub codec: AudioCodec,
    /// Payload type the peer uses for `codec` (static, or dynamic by rtpmap).
    pub codec_pt: u8,
    /// Payload type of telephone-event/8000, when the peer offered it.
    pub dtmf_pt: Option<u8>,
    /// Where to send RTP; `None` while the peer holds with `c=0.0.0.0` or port 0.
    pub remote: Option<SocketAddr>,
    /// The peer's direction attribute.
    pub peer_direction: Direction,
    /// Index of the audio m-line in the description.
    pub mline: usize,
}

/// How each m-line of an offer is answered.
#[derive(Debug, Clone, PartialEq, Eq)]
enum MLine {
    Audio,
    Rejected {
        media: String,
        proto: String,
        fmt: String,
    },
}

/// A parsed offer together with what we will accept of it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct OfferAnswer {
    pub audio: NegotiatedAudio,
    mlines: Vec<MLine>,
}

impl OfferAnswer {
    /// The state after the peer answered our offer: one audio m-line.
    pub fn from_answer(audio: NegotiatedAudio) -> OfferAnswer {
        OfferAnswer {
            audio,
            mlines: vec![MLine::Audio],
        }
    }
}

/// Our side of the session: address, port and the o= line's id/version (RFC 4566 §5.2).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct LocalMedia {
    pub addr: IpAddr,
    pub rtp_port: u16,
    pub session_id: u64,
    pub session_version: u64,
}

/// Negotiates an offer against our codec preference (first match in `prefs` wins).
pub fn answer_offer(offer: &[u8], prefs: &[AudioCodec]) -> Result<OfferAnswer, SdpError> {
    let session =
        sdp_types::Session::parse(offer).map_err(|e| SdpError::Malformed(e.to_string()))?;
    let mut audio = None;
    let mut mlines = Vec::with_capacity(session.medias.len());
    let mut offered_audio = Vec::new();
    for (index, media) in session.medias.iter().enumerate() {
        let usable = media.media == "audio" && media.proto.eq_ignore_ascii_case("RTP/AVP");
        let negotiated = if usable && audio.is_none() {
            offered_audio.push(media.fmt.clone());
            negotiate_mline(&session, media, index, prefs)?
        } else {
            None
        };
        match negotiated {
            Some(a) => {
                audio = Some(a);
                mlines.push(MLine::Audio);
            }
            None => mlines.push(MLine::Rejected {
                media: media.media.clone(),
                proto: media.proto.clone(),
                fmt: media
                    .fmt
                    .split_whitespace()
                    .next()
                    .unwrap_or("0")
                    .to_string(),
            }),
        }
    }
    match audio {
        Some(audio) => Ok(OfferAnswer { audio, mlines }),
        None if offered_audio.is_empty() => Err(SdpError::NoAudio),
        None => Err(SdpError::NoCommonCodec {
            offered: offered_audio.join(" "),
        }),
    }
}

/// Reads the peer's answer to our (late) offer (RFC 3264 §7): the first audio m-line must keep
/// one of the codecs we offered.
pub fn read_answer(answer: &[u8], offered: &[AudioCodec]) -> Result<NegotiatedAudio, SdpError> {
    let session =
        sdp_types::Session::parse(answer).map_err(|e| SdpError::Malformed(e.to_string()))?;
    let (index, media) = session
        .medias
        .iter()
        .enumerate()
        .find(|(_, m)| m.media == "audio" && m.port != 0)
        .ok_or(SdpError::NoAudio)?;
    negotiate_mline(&session, media, index, offered)?.ok_or_else(|| SdpError::NoCommonCodec {
        offered: media.fmt.clone(),
    })
}

fn negotiate_mline(
    session: &sdp_types::Session,
    media: &sdp_types::Media,
    index: usize,
    prefs: &[AudioCodec],
) -> Result<Option<NegotiatedAudio>, SdpError> {
    if media.port == 0 {
        return Ok(None);
    }
    let pts: Vec<u8> = media
        .fmt
        .split_whitespace()
        .filter_map(|p| p.parse().ok())
        .collect();
    let mut rtpmaps: Vec<(u8, String)> = Vec::new();
    for value in media.get_attribute_values("rtpmap").flatten() {
        if let Some((pt, enc)) = value.split_once(char::is_whitespace) {
            if let Ok(pt) = pt.parse() {
                rtpmaps.push((pt, enc.trim().to_ascii_lowercase()));
            }
        }
    }
    let encoding_of = |pt: u8| -> Option<String> {
        rtpmaps
            .iter()
            .find(|(p, _)| *p == pt)
            .map(|(_, e)| e.clone())
            .or(match pt {
                0 => Some("pcmu/8000".into()),
                8 => Some("pcma/8000".into()),
                _ => None,
            })
    };
    let matches_codec = |pt: u8, codec: AudioCodec| {
        encoding_of(pt).is_some_and(|e| {
            let e = e.trim_end_matches("/1");
            e == format!("{}/8000", codec.name().to_ascii_lowercase())
        })
    };
    let chosen = prefs.iter().find_map(|codec| {
        pts.iter()
            .find(|pt| matches_codec(**pt, *codec))
            .map(|pt| (*codec, *pt))
    });
    let Some((codec, codec_pt)) = chosen else {
        return Ok(None);
    };
    let dtmf_pt = pts
        .iter()
        .copied()
        .find(|pt| encoding_of(*pt).is_some_and(|e| e == "telephone-event/8000"));
    let conn = media.connections.first().or(session.connection.as_ref());
    let ip = conn
        .ok_or(SdpError::NoAddress)?
        .connection_address
        .split('/')
        .next()
        .and_then(|a| a.parse::<IpAddr>().ok())
        .ok_or(SdpError::NoAddress)?;
    let peer_direction = direction_of(media)
        .or_else(|| session_direction(session))
        .unwrap_or(Direction::SendRecv);
    // RFC 3264 §8.4 (and RFC 2543 practice): c=0.0.0.0 means "do not send to me".
    let remote = (!ip.is_unspecified()).then(|| SocketAddr::new(ip, media.port));
    let peer_direction = match (remote, peer_direction) {
        (None, Direction::SendRecv) => Direction::SendOnly,
        (None, Direction::RecvOnly) => Direction::Inactive,
        (_, d) => d,
    };
    Ok(Some(NegotiatedAudio {
        codec,
        codec_pt,
        dtmf_pt,
        remote,
        peer_direction,
        mline: index,
    }))
}

fn direction_of(media: &sdp_types::Media) -> Option<Direction> {
    [
        Direction::SendRecv,
        Direction::SendOnly,
        Direction::RecvOnly,
        Direction::Inactive,
    ]
    .into_iter()
    .find(|d| media.has_attribute(d.as_str()))
}

fn session_direction(session: &sdp_types::Session) -> Option<Direction> {
    [
        Direction::SendRecv,
        Direction::SendOnly,
        Direction::RecvOnly,
        Direction::Inactive,
    ]
    .into_iter()
    .find(|d| session.has_attribute(d.as_str()))
}

/// Writes our answer: the offer's m-lines in order (§6), audio with the chosen codec and
/// telephone-event, ptime 20, `direction`; the others with port 0.
pub fn write_answer(local: &LocalMedia, offer: &OfferAnswer, direction: Direction) -> String {
    let mut sdp = session_header(local);
    for mline in &offer.mlines {
        match mline {
            MLine::Audio => write_audio(&mut sdp, local, &offer.audio, direction),
            MLine::Rejected { media, proto, fmt } => {
                let _ = write!(sdp, "m={media} 0 {proto} {fmt}\r\n");
            }
        }
    }
    sdp
}

/// Writes our offer for a late-offer INVITE (RFC 3261 §13.2.1 "offer in the 2xx"): every
/// configured codec plus telephone-event on payload type 101.
pub fn write_offer(local: &LocalMedia, codecs: &[AudioCodec], direction: Direction) -> String {
    let mut sdp = session_header(local);
    let mut fmts: Vec<String> = codecs
        .iter()
        .map(|c| c.payload_type().to_string())
        .collect();
    fmts.push(OFFER_DTMF_PT.to_string());
    let _ = write!(
        sdp,
        "m=audio {} RTP/AVP {}\r\n",
        local.rtp_port,
        fmts.join(" ")
    );
    for c in codecs {
        let _ = write!(sdp, "a=rtpmap:{} {}/8000\r\n", c.payload_type(), c.name());
    }
    let _ = write!(
        sdp,
        "a=rtpmap:{OFFER_DTMF_PT} telephone-event/8000\r\na=fmtp:{OFFER_DTMF_PT} 0-16\r\n"
    );
    let _ = write!(sdp, "a=ptime:20\r\na={}\r\n", direction.as_str());
    sdp
}

/// The telephone-event payload type in our own offers.
pub const OFFER_DTMF_PT: u8 = 101;

fn session_header(local: &LocalMedia) -> String {
    let family = if local.addr.is_ipv6() { "IP6" } else { "IP4" };
    let mut sdp = String::with_capacity(320);
    let _ = write!(
        sdp,
        "v=0\r\no=ivrd {} {} IN {family} {}\r\ns=ivrd\r\nc=IN {family} {}\r\nt=0 0\r\n",
        local.session_id, local.session_version, local.addr, local.addr
    );
    sdp
}

fn write_audio(
    sdp: &mut String,
    local: &LocalMedia,
    audio: &NegotiatedAudio,
    direction: Direction,
) {
    let _ = write!(sdp, "m=audio {} RTP/AVP {}", local.rtp_port, audio.codec_pt);
    if let Some(pt) = audio.dtmf_pt {
        let _ = write!(sdp, " {pt}");
    }
    let _ = write!(
        sdp,
        "\r\na=rtpmap:{} {}/8000\r\n",
        audio.codec_pt,
        audio.codec.name()
    );
    if let Some(pt) = audio.dtmf_pt {
        let _ = write!(
            sdp,
            "a=rtpmap:{pt} telephone-event/8000\r\na=fmtp:{pt} 0-16\r\n"
        );
    }
    let _ = write!(sdp, "a=ptime:20\r\na={}\r\n", direction.as_str());
}

#[cfg(test)]
mod tests {
    use super::*;

    const PREFS: [AudioCodec; 2] = [AudioCodec::Pcmu, AudioCodec::Pcma];

    fn local() -> LocalMedia {
        LocalMedia {
            addr: "127.0.0.1".parse().expect("ip"),
            rtp_port: 20000,
            session_id: 42,
            session_version: 1,
        }
    }

    const SIPP_OFFER: &str = "v=0\r\no=user1 53655765 2353687637 IN IP4 127.0.0.1\r\ns=-\r\n\
        c=IN IP4 127.0.0.1\r\nt=0 0\r\nm=audio 6000 RTP/AVP 8 0 101\r\n\
        a=rtpmap:8 PCMA/8000\r\na=rtpmap:101 telephone-event/8000\r\na=fmtp:101 0-11,16\r\n";

    #[test]
    fn our_preference_picks_the_codec_and_keeps_the_offered_dtmf_pt() {
        let oa = answer_offer(SIPP_OFFER.as_bytes(), &PREFS).expect("answer");
        assert_eq!(oa.audio.codec, AudioCodec::Pcmu);
        assert_eq!(oa.audio.codec_pt, 0);
        assert_eq!(oa.audio.dtmf_pt, Some(101));
        assert_eq!(
            oa.audio.remote,
            Some("127.0.0.1:6000".parse().expect("addr"))
        );
        let only_a = answer_offer(SIPP_OFFER.as_bytes(), &[AudioCodec::Pcma]).expect("pcma");
        assert_eq!(
            (only_a.audio.codec, only_a.audio.codec_pt),
            (AudioCodec::Pcma, 8)
        );
    }

    #[test]
    fn answer_mirrors_mlines_and_rejects_video_with_port_zero() {
        let offer = "v=0\r\no=- 1 1 IN IP6 ::1\r\ns=-\r\nc=IN IP6 ::1\r\nt=0 0\r\n\
            m=video 7000 RTP/AVP 96\r\na=rtpmap:96 H264/90000\r\n\
            m=audio 7002 RTP/AVP 0\r\n";
        let oa = answer_offer(offer.as_bytes(), &PREFS).expect("answer");
        assert_eq!(oa.audio.mline, 1);
        assert_eq!(oa.audio.remote, Some("[::1]:7002".parse().expect("addr")));
        let text = write_answer(&local(), &oa, Direction::SendRecv);
        let mlines: Vec<&str> = text.lines().filter(|l| l.starts_with("m=")).collect();
        assert_eq!(mlines, ["m=video 0 RTP/AVP 96", "m=audio 20000 RTP/AVP 0"]);
        assert!(text.contains("a=ptime:20\r\n") && text.contains("a=sendrecv\r\n"));
        assert!(
            !text.contains("telephone-event"),
            "not offered, not answered"
        );
        // What we write parses again.
        assert!(sdp_types::Session::parse(text.as_bytes()).is_ok());
    }

    #[test]
    fn no_common_codec_is_reported_with_the_offered_list() {
        let offer = "v=0\r\no=- 1 1 IN IP4 1.2.3.4\r\ns=-\r\nc=IN IP4 1.2.3.4\r\nt=0 0\r\n\
            m=audio 7000 RTP/AVP 18 96\r\na=rtpmap:96 opus/48000/2\r\n";
        let err = answer_offer(offer.as_bytes(), &PREFS).expect_err("488");
        assert_eq!(
            err,
            SdpError::NoCommonCodec {
                offered: "18 96".into()
            }
        );
        assert!(err.warning("ivrd").starts_with("305 ivrd"));
        let video_only = "v=0\r\no=- 1 1 IN IP4 1.2.3.4\r\ns=-\r\nc=IN IP4 1.2.3.4\r\nt=0 0\r\nm=video 1 RTP/AVP 96\r\n";
        assert_eq!(
            answer_offer(video_only.as_bytes(), &PREFS),
            Err(SdpError::NoAudio)
        );
        assert!(matches!(
            answer_offer(b"garbage", &PREFS),
            Err(SdpError::Malformed(_))
        ));
    }

    #[test]
    fn hold_offers_are_answered_with_the_matching_direction() {
        let hold = SIPP_OFFER.replace(
            "a=fmtp:101 0-11,16\r\n",
            "a=fmtp:101 0-11,16\r\na=sendonly\r\n",
        );
        let oa = answer_offer(hold.as_bytes(), &PREFS).expect("hold");
        assert_eq!(oa.audio.peer_direction, Direction::SendOnly);
        assert_eq!(oa.audio.peer_direction.answer_to(), Direction::RecvOnly);
        assert!(!oa.audio.peer_direction.peer_receives());
        let old_style = SIPP_OFFER.replace("c=IN IP4 127.0.0.1", "c=IN IP4 0.0.0.0");
        let oa = answer_offer(old_style.as_bytes(), &PREFS).expect("c=0");
        assert_eq!(
            (oa.audio.remote, oa.audio.peer_direction),
            (None, Direction::SendOnly)
        );
    }

    #[test]
    fn dynamic_payload_types_are_mapped_by_rtpmap() {
        let offer = "v=0\r\no=- 1 1 IN IP4 1.2.3.4\r\ns=-\r\nc=IN IP4 1.2.3.4\r\nt=0 0\r\n\
            m=audio 7000 RTP/AVP 100 97\r\na=rtpmap:100 PCMA/8000/1\r\na=rtpmap:97 telephone-event/8000\r\n";
        let oa = answer_offer(offer.as_bytes(), &PREFS).expect("answer");
        assert_eq!(
            (oa.audio.codec, oa.audio.codec_pt, oa.audio.dtmf_pt),
            (AudioCodec::Pcma, 100, Some(97))
        );
    }

    #[test]
    fn late_offer_round_trip() {
        let offer = write_offer(&local(), &PREFS, Direction::SendRecv);
        assert!(offer.contains("m=audio 20000 RTP/AVP 0 8 101\r\n"));
        let answer = "v=0\r\no=- 1 1 IN IP4 10.9.9.9\r\ns=-\r\nc=IN IP4 10.9.9.9\r\nt=0 0\r\n\
            m=audio 4000 RTP/AVP 8 101\r\na=rtpmap:101 telephone-event/8000\r\n";
        let got = read_answer(answer.as_bytes(), &PREFS).expect("answer");
        assert_eq!((got.codec, got.dtmf_pt), (AudioCodec::Pcma, Some(101)));
        assert_eq!(got.remote, Some("10.9.9.9:4000".parse().expect("addr")));
    }
}
