//! What the UAS core is configured with, and the one capability it borrows from its driver.

use crate::sip::sdp::AudioCodec;
use crate::sip::transaction::TimerConfig;
use ipnet::IpNet;
use std::net::IpAddr;
use std::time::Duration;

/// Policy and protocol settings of the UAS core.
#[derive(Debug, Clone)]
pub struct EndpointConfig {
    pub timers: TimerConfig,
    /// Sources allowed to place calls (INVITE); everyone else gets 403.
    pub trusted: Vec<IpNet>,
    /// Calls (ringing or answered) beyond which INVITEs get 503 + Retry-After.
    pub max_calls: usize,
    /// Calls one source address may hold at once; more get 503 + Retry-After.
    pub max_calls_per_source: usize,
    /// New INVITEs (not retransmissions, not re-INVITEs) one trusted source may send per
    /// second, sustained; more get a stateless 503 + Retry-After.
    pub invites_per_sec_per_source: u32,
    /// New INVITEs one trusted source may send at once, above the sustained rate.
    pub invite_burst_per_source: u32,
    /// Out-of-dialog requests other than INVITE and ACK (OPTIONS, REGISTER, a BYE for no
    /// dialog…) one trusted source may send per second, sustained; more get a stateless 503 +
    /// Retry-After. Retransmissions and in-dialog requests are not charged.
    pub other_requests_per_sec_per_source: u32,
    /// Such requests one trusted source may send at once, above the sustained rate.
    pub other_request_burst_per_source: u32,
    /// Codec preference for answers, first wins.
    pub codecs: Vec<AudioCodec>,
    /// Ring (180) this long before answering; zero answers at once.
    pub answer_delay: Duration,
    /// Seconds in the Retry-After of overload and drain 503s.
    pub retry_after_secs: u32,
    /// User part of our Contact URI.
    pub contact_user: String,
    /// Numbers ivrd serves, as prefixes of the dialled number (`12345` also covers the per-city
    /// `1234501`…); anything else gets 404, so ivrd is never an open relay. Empty serves all.
    pub service_numbers: Vec<String>,
}

impl Default for EndpointConfig {
    fn default() -> Self {
        EndpointConfig {
            timers: TimerConfig::default(),
            trusted: vec![
                "127.0.0.0/8".parse().expect("literal CIDR"),
                "::1/128".parse().expect("literal CIDR"),
            ],
            max_calls: 4000,
            max_calls_per_source: 4000,
            invites_per_sec_per_source: 500,
            invite_burst_per_source: 1000,
            other_requests_per_sec_per_source: 50,
            other_request_burst_per_source: 200,
            codecs: vec![AudioCodec::Pcmu, AudioCodec::Pcma],
            answer_delay: Duration::ZERO,
            retry_after_secs: 30,
            contact_user: "ivrd".to_string(),
            service_numbers: vec!["12345".to_string()],
        }
    }
}

impl EndpointConfig {
    /// Whether `ip` may place calls.
    pub fn is_trusted(&self, ip: IpAddr) -> bool {
        let ip = match ip {
            IpAddr::V6(v6) => v6.to_ipv4_mapped().map(IpAddr::V4).unwrap_or(ip),
            v4 => v4,
        };
        self.trusted.iter().any(|net| net.contains(&ip))
    }
}

impl EndpointConfig {
    /// Whether ivrd answers calls to `number` (digits of the Request-URI user part or tel
    /// number). A leading `+86` or `0086` country code is ignored.
    pub fn serves(&self, number: &str) -> bool {
        if self.service_numbers.is_empty() {
            return true;
        }
        let digits: String = number
            .chars()
            .filter(|c| c.is_ascii_digit() || *c == '+')
            .collect();
        let national = digits
            .strip_prefix("+86")
            .or_else(|| digits.strip_prefix("0086"))
            .unwrap_or(digits.trim_start_matches('+'));
        self.service_numbers
            .iter()
            .any(|prefix| !prefix.is_empty() && national.starts_with(prefix.as_str()))
    }
}

/// The RTP port pool, owned by the driver (which binds the sockets). The UAS core reserves a port
/// before it answers, so a call is only answered when its media socket exists.
pub trait RtpPortSource {
    /// Reserves an even RTP port (RTCP on the next odd one) for a call, or `None` when exhausted.
    fn reserve(&mut self) -> Option<u16>;
    /// Returns a port to the pool.
    fn release(&mut self, port: u16);
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn service_numbers_match_by_prefix_after_the_country_code() {
        let cfg = EndpointConfig::default();
        for ok in ["12345", "1234501", "+8612345", "008612345", "+86-12345"] {
            assert!(cfg.serves(ok), "{ok}");
        }
        for no in ["110", "13800000000", "+8613800000000", "", "2345"] {
            assert!(!cfg.serves(no), "{no}");
        }
        let open = EndpointConfig {
            service_numbers: vec![],
            ..Default::default()
        };
        assert!(open.serves("999"));
    }
}
