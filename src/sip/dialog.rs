//! The UAS side of a dialog (RFC 3261 §12): identifiers, route set, remote target, CSeq spaces,
//! and building the requests ivrd sends inside it (BYE now; REFER later).

use crate::sip::header::{CSeq, HeaderError, NameAddr, split_list};
use crate::sip::message::Request;
use crate::sip::method::Method;
use crate::sip::response::PRODUCT;
use std::fmt::Write as _;

/// The identifiers of a dialog as seen by the UAS: Call-ID, our To-tag, the peer's From-tag.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct DialogId {
    pub call_id: String,
    pub local_tag: String,
    pub remote_tag: String,
}

/// One dialog created by an INVITE we answered.
#[derive(Debug, Clone)]
pub struct Dialog {
    pub id: DialogId,
    /// Our party: the INVITE's To value plus our tag; the From of requests we send.
    local_party: String,
    /// The peer's party: the INVITE's From value (with its tag); the To of requests we send.
    remote_party: String,
    /// Where in-dialog requests go: the peer's Contact URI (updated by target refreshes).
    remote_target: String,
    /// Record-Route values in the order received (§12.1.1: the UAS keeps that order).
    route_set: Vec<String>,
    local_cseq: u32,
    remote_cseq: u32,
}

/// An in-dialog request with a CSeq lower than the last one (§12.2.2: answer 500).
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
#[error("CSeq {got} is lower than the dialog's last remote CSeq {last}")]
pub struct CSeqOutOfOrder {
    pub got: u32,
    pub last: u32,
}

impl Dialog {
    /// Builds the dialog state from a dialog-creating INVITE and our chosen tag (§12.1.1).
    pub fn from_invite(req: &Request, local_tag: &str) -> Result<Dialog, HeaderError> {
        let call_id = req
            .headers
            .get("Call-ID")
            .ok_or(HeaderError::Missing("Call-ID"))?;
        let from_value = req
            .headers
            .get("From")
            .ok_or(HeaderError::Missing("From"))?;
        let to_value = req.headers.get("To").ok_or(HeaderError::Missing("To"))?;
        let from = NameAddr::parse(from_value, "From")?;
        let remote_tag = from
            .tag()
            .ok_or(HeaderError::Missing("From tag"))?
            .to_string();
        let cseq = CSeq::parse(
            req.headers
                .get("CSeq")
                .ok_or(HeaderError::Missing("CSeq"))?,
        )?;
        let remote_target = match req.headers.get("Contact") {
            Some(c) => NameAddr::parse(split_list(c).next().unwrap_or(c), "Contact")?.uri,
            None => NameAddr::parse(from_value, "From")?.uri,
        };
        let route_set = req
            .headers
            .get_all("Record-Route")
            .flat_map(split_list)
            .map(str::to_string)
            .collect();
        Ok(Dialog {
            id: DialogId {
                call_id: call_id.to_string(),
                local_tag: local_tag.to_string(),
                remote_tag,
            },
            local_party: format!("{to_value};tag={local_tag}"),
            remote_party: from_value.to_string(),
            remote_target,
            route_set,
            // §8.1.1.5 / §12.1.1: our CSeq space starts independently; 1 is fine for a UAS.
            local_cseq: 1,
            remote_cseq: cseq.seq,
        })
    }

    /// Checks and records the CSeq of an in-dialog request (§12.2.2). ACK and CANCEL reuse the
    /// INVITE's number and are not checked here.
    pub fn accept_remote_cseq(&mut self, seq: u32) -> Result<(), CSeqOutOfOrder> {
        if seq < self.remote_cseq {
            return Err(CSeqOutOfOrder {
                got: seq,
                last: self.remote_cseq,
            });
        }
        self.remote_cseq = seq;
        Ok(())
    }

    /// A target refresh (re-INVITE, UPDATE) replaces the remote target with its Contact (§12.2.2).
    pub fn refresh_target(&mut self, req: &Request) {
        if let Some(contact) = req.headers.get("Contact") {
            if let Ok(na) =
                NameAddr::parse(split_list(contact).next().unwrap_or(contact), "Contact")
            {
                self.remote_target = na.uri;
            }
        }
    }

    /// The peer's current Contact URI.
    pub fn remote_target(&self) -> &str {
        &self.remote_target
    }

    /// The URI the request must be sent to (§8.1.2 / §12.2.1.1): the first route when the route
    /// set is loose-routing, else the Request-URI.
    pub fn next_hop_uri(&self) -> String {
        match self.route_set.first() {
            Some(first) => NameAddr::parse(first, "Route")
                .map(|n| n.uri)
                .unwrap_or_else(|_| self.remote_target.clone()),
            None => self.remote_target.clone(),
        }
    }

    /// Builds an in-dialog request (§12.2.1.1). `via` is our sent-by with transport (e.g.
    /// `SIP/2.0/UDP 192.0.2.1:5060`); `branch` a fresh RFC 3261 branch.
    pub fn build_request(
        &mut self,
        method: Method,
        via: &str,
        branch: &str,
        extra: &[(&str, String)],
        body: Option<(&str, &[u8])>,
    ) -> Vec<u8> {
        self.local_cseq += 1;
        let (request_uri, routes) = self.request_uri_and_routes();
        let mut out = String::with_capacity(512);
        let _ = write!(
            out,
            "{method} {request_uri} SIP/2.0\r\nVia: {via};branch={branch};rport\r\nMax-Forwards: 70\r\n"
        );
        for route in routes {
            let _ = write!(out, "Route: {route}\r\n");
        }
        let _ = write!(
            out,
            "From: {}\r\nTo: {}\r\nCall-ID: {}\r\nCSeq: {} {method}\r\nUser-Agent: {PRODUCT}\r\n",
            self.local_party, self.remote_party, self.id.call_id, self.local_cseq
        );
        for (name, value) in extra {
            let _ = write!(out, "{name}: {value}\r\n");
        }
        let mut bytes = out.into_bytes();
        match body {
            Some((ctype, b)) => {
                bytes.extend_from_slice(
                    format!(
                        "Content-Type: {ctype}\r\nContent-Length: {}\r\n\r\n",
                        b.len()
                    )
                    .as_bytes(),
                );
                bytes.extend_from_slice(b);
            }
            None => bytes.extend_from_slice(b"Content-Length: 0\r\n\r\n"),
        }
        bytes
    }

    /// §12.2.1.1: a loose first route (`;lr`) keeps the remote target as Request-URI and sends
    /// the whole route set as Route; a strict one takes the Request-URI and the remote target
    /// goes last in the Route list.
    fn request_uri_and_routes(&self) -> (String, Vec<String>) {
        let Some(first) = self.route_set.first() else {
            return (self.remote_target.clone(), Vec::new());
        };
        let first_uri = NameAddr::parse(first, "Route")
            .map(|n| n.uri)
            .unwrap_or_default();
        if crate::sip::header::param(&first_uri, "lr").is_some() || first_uri.is_empty() {
            return (self.remote_target.clone(), self.route_set.clone());
        }
        let mut routes: Vec<String> = self.route_set[1..].to_vec();
        routes.push(format!("<{}>", self.remote_target));
        (first_uri, routes)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::sip::message::{Message, parse};

    fn invite(extra: &str) -> Request {
        let text = format!(
            "INVITE sip:12345@ivr SIP/2.0\r\nVia: SIP/2.0/UDP 10.0.0.1;branch=z9hG4bK1\r\n\
             From: \"Caller\" <sip:+8613800000000@trunk>;tag=abc\r\nTo: <sip:12345@ivr>\r\n\
             Call-ID: c-1\r\nCSeq: 10 INVITE\r\nContact: <sip:trunk@10.0.0.1:5070>\r\n{extra}\r\n"
        );
        match parse(text.as_bytes()) {
            Ok(Message::Request(r)) => r,
            other => panic!("{other:?}"),
        }
    }

    #[test]
    fn bye_goes_to_the_contact_with_swapped_parties() {
        let mut d = Dialog::from_invite(&invite(""), "ivr-tag").expect("dialog");
        assert_eq!(d.id.remote_tag, "abc");
        let bye = d.build_request(
            Method::Bye,
            "SIP/2.0/UDP 127.0.0.1:5060",
            "z9hG4bKb1",
            &[],
            None,
        );
        let text = String::from_utf8(bye).expect("utf8");
        assert!(text.starts_with("BYE sip:trunk@10.0.0.1:5070 SIP/2.0\r\n"));
        assert!(text.contains("From: <sip:12345@ivr>;tag=ivr-tag\r\n"));
        assert!(text.contains("To: \"Caller\" <sip:+8613800000000@trunk>;tag=abc\r\n"));
        assert!(text.contains("CSeq: 2 BYE\r\n"));
        assert!(!text.contains("Route:"));
        assert!(
            matches!(parse(text.as_bytes()), Ok(Message::Request(r)) if r.method == Method::Bye)
        );
    }

    #[test]
    fn loose_and_strict_route_sets() {
        let d = Dialog::from_invite(&invite("Record-Route: <sip:p1;lr>, <sip:p2;lr>\r\n"), "t")
            .expect("dialog");
        assert_eq!(d.next_hop_uri(), "sip:p1;lr");
        let (ruri, routes) = d.request_uri_and_routes();
        assert_eq!(ruri, "sip:trunk@10.0.0.1:5070");
        assert_eq!(routes, ["<sip:p1;lr>", "<sip:p2;lr>"]);
        let strict =
            Dialog::from_invite(&invite("Record-Route: <sip:p1>\r\n"), "t").expect("dialog");
        let (ruri, routes) = strict.request_uri_and_routes();
        assert_eq!(ruri, "sip:p1");
        assert_eq!(routes, ["<sip:trunk@10.0.0.1:5070>"]);
    }

    #[test]
    fn remote_cseq_must_not_go_backwards() {
        let mut d = Dialog::from_invite(&invite(""), "t").expect("dialog");
        assert_eq!(
            d.accept_remote_cseq(9),
            Err(CSeqOutOfOrder { got: 9, last: 10 })
        );
        assert!(d.accept_remote_cseq(11).is_ok());
        assert!(
            d.accept_remote_cseq(11).is_ok(),
            "equal is a retransmission's business"
        );
    }

    #[test]
    fn missing_from_tag_cannot_make_a_dialog() {
        let mut req = invite("");
        let mut headers = crate::sip::message::Headers::default();
        for (n, v) in req.headers.iter() {
            headers.push(n, if n == "From" { "<sip:x@y>" } else { v });
        }
        req.headers = headers;
        assert_eq!(
            Dialog::from_invite(&req, "t").err(),
            Some(HeaderError::Missing("From tag"))
        );
    }
}
