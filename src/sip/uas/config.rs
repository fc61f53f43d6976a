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
    /// Codec preference for answers, first wins.
    pub codecs: Vec<AudioCodec>,
    /// Ring (180) this long before answering; zero answers at once.
    pub answer_delay: Duration,
    /// Seconds in the Retry-After of overload and drain 503s.
    pub retry_after_secs: u32,
    /// User part of our Contact URI.
    pub contact_user: String,
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
            codecs: vec![AudioCodec::Pcmu, AudioCodec::Pcma],
            answer_delay: Duration::ZERO,
            retry_after_secs: 30,
            contact_user: "ivrd".to_string(),
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

/// The RTP port pool, owned by the driver (which binds the sockets). The UAS core reserves a port
/// before it answers, so a call is only answered when its media socket exists.
pub trait RtpPortSource {
    /// Reserves an even RTP port (RTCP on the next odd one) for a call, or `None` when exhausted.
    fn reserve(&mut self) -> Option<u16>;
    /// Returns a port to the pool.
    fn release(&mut self, port: u16);
}
