//! Daemon configuration: TOML with every key defaulted (DESIGN.md "Contracts"), unknown keys
//! refused, and errors that name the file, line and key.

use crate::sip::sdp::AudioCodec;
use crate::sip::transaction::TimerConfig;
use crate::sip::uas::EndpointConfig;
use ipnet::IpNet;
use serde::{Deserialize, Serialize};
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::time::Duration;

/// A configuration file that could not be used.
#[derive(Debug, thiserror::Error)]
pub enum ConfigError {
    #[error("{file}: cannot read: {source}")]
    Read {
        file: PathBuf,
        source: std::io::Error,
    },
    #[error("{file}:{line}: {reason}")]
    Invalid {
        file: PathBuf,
        line: usize,
        reason: String,
    },
}

/// The whole configuration.
#[derive(Debug, Clone, Default, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct Config {
    pub sip: SipSection,
    pub media: MediaSection,
    pub dialplan: DialplanSection,
    pub prompts: PromptsSection,
    pub storage: StorageSection,
    pub intake: IntakeSection,
    pub metrics: MetricsSection,
}

/// `[sip]`: where to listen, who may call, limits and RFC 3261 timers.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct SipSection {
    /// Addresses to listen on, each over UDP and TCP (IPv4 or `[IPv6]`).
    pub listen: Vec<SocketAddr>,
    /// Sources allowed to place calls (CIDR).
    pub trusted: Vec<IpNet>,
    /// Concurrent calls before INVITEs get 503 + Retry-After.
    pub max_calls: usize,
    /// Concurrent calls one source address may hold; more get 503 + Retry-After. Lower it
    /// when several trunks share ivrd, so one runaway trunk cannot take every line.
    pub max_calls_per_source: usize,
    /// New INVITEs per second one trusted source may send, sustained; more get a stateless
    /// 503 + Retry-After.
    pub invites_per_sec_per_source: u32,
    /// New INVITEs one trusted source may send at once above that rate.
    pub invite_burst_per_source: u32,
    /// Out-of-dialog requests other than INVITE (OPTIONS, REGISTER, MESSAGE…) one trusted
    /// source may send per second, sustained; more get a stateless 503 + Retry-After. Far above
    /// a trunk's OPTIONS keep-alives (one every few seconds at most).
    pub other_requests_per_sec_per_source: u32,
    /// Such requests one trusted source may send at once above that rate.
    pub other_request_burst_per_source: u32,
    /// Ring this long (180) before answering, in milliseconds.
    pub answer_delay_ms: u64,
    /// Retry-After seconds on 503.
    pub retry_after_secs: u32,
    /// On SIGTERM/SIGINT, calls may finish for this long before ivrd hangs up on them.
    pub drain_secs: u64,
    /// RFC 3261 T1, T2, T4 in milliseconds.
    pub t1_ms: u64,
    pub t2_ms: u64,
    pub t4_ms: u64,
    /// Idle TCP connections are closed after this many seconds.
    pub tcp_idle_secs: u64,
    /// Numbers served (prefixes of the dialled number); others get 404. Empty serves all.
    pub service_numbers: Vec<String>,
    /// TCP connections accepted at once; more are closed at accept.
    pub max_tcp_connections: usize,
    /// A message started on a TCP connection must be complete within this many seconds.
    pub tcp_message_secs: u64,
}

impl Default for SipSection {
    fn default() -> Self {
        SipSection {
            listen: vec!["0.0.0.0:5060".parse().expect("literal address")],
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
            answer_delay_ms: 0,
            retry_after_secs: 30,
            drain_secs: 30,
            t1_ms: 500,
            t2_ms: 4000,
            t4_ms: 5000,
            tcp_idle_secs: 300,
            service_numbers: vec!["12345".into()],
            max_tcp_connections: 1024,
            tcp_message_secs: 10,
        }
    }
}

/// `[media]`: RTP port range and codec preference.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct MediaSection {
    /// Even RTP ports (RTCP on the odd one above), as "low-high".
    pub rtp_ports: String,
    /// Codec preference for answers.
    pub codecs: Vec<AudioCodec>,
    /// No RTP from the caller for this long ends the call.
    pub media_timeout_secs: u64,
    /// Threads of the shared 20 ms media clock; 0 means one per core.
    pub clock_threads: usize,
    /// Real-time (`SCHED_RR`) priority of the media clock threads, 1–99; 0 leaves them at
    /// normal priority. Needs CAP_SYS_NICE or an RTPRIO limit; without either the threads
    /// run at normal priority and the daemon says so at start-up.
    pub clock_priority: u8,
}

impl MediaSection {
    /// How many media clock threads to start.
    pub fn clock_threads(&self) -> usize {
        match self.clock_threads {
            0 => std::thread::available_parallelism().map_or(1, |n| n.get()),
            n => n,
        }
    }
}

impl Default for MediaSection {
    fn default() -> Self {
        MediaSection {
            rtp_ports: "20000-29999".into(),
            codecs: vec![AudioCodec::Pcmu, AudioCodec::Pcma],
            media_timeout_secs: 30,
            clock_threads: 0,
            clock_priority: 10,
        }
    }
}

/// `[dialplan]`.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct DialplanSection {
    pub path: PathBuf,
}

impl Default for DialplanSection {
    fn default() -> Self {
        DialplanSection {
            path: "dialplans/12345.toml".into(),
        }
    }
}

/// `[prompts]`.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct PromptsSection {
    pub dir: PathBuf,
}

impl Default for PromptsSection {
    fn default() -> Self {
        PromptsSection {
            dir: "prompts".into(),
        }
    }
}

/// `[storage]`: recordings and the case spool live below `dir`.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct StorageSection {
    pub dir: PathBuf,
}

impl Default for StorageSection {
    fn default() -> Self {
        StorageSection { dir: "var".into() }
    }
}

/// `[intake]`: where cases are delivered (empty `url`: cases stay in the spool).
#[derive(Debug, Clone, Default, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct IntakeSection {
    pub url: String,
    pub secret: String,
}

/// `[metrics]`.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct MetricsSection {
    pub listen: SocketAddr,
}

impl Default for MetricsSection {
    fn default() -> Self {
        MetricsSection {
            listen: "127.0.0.1:9464".parse().expect("literal address"),
        }
    }
}

impl Config {
    /// Reads and validates a configuration file.
    pub fn load(path: &Path) -> Result<Config, ConfigError> {
        let text = std::fs::read_to_string(path).map_err(|source| ConfigError::Read {
            file: path.into(),
            source,
        })?;
        Config::from_toml(&text, path)
    }

    /// Parses and validates configuration text; `file` names it in errors.
    pub fn from_toml(text: &str, file: &Path) -> Result<Config, ConfigError> {
        let config: Config = toml::from_str(text).map_err(|e| {
            let line = e.span().map_or(1, |s| {
                text[..s.start.min(text.len())].matches('\n').count() + 1
            });
            ConfigError::Invalid {
                file: file.into(),
                line,
                reason: e.message().trim().to_string(),
            }
        })?;
        config.validate(text, file)?;
        Ok(config)
    }

    fn validate(&self, text: &str, file: &Path) -> Result<(), ConfigError> {
        let invalid = |key: &str, reason: String| {
            let line = text
                .lines()
                .position(|l| l.trim_start().starts_with(key))
                .map_or(1, |i| i + 1);
            ConfigError::Invalid {
                file: file.into(),
                line,
                reason: format!("{key}: {reason}"),
            }
        };
        if self.sip.listen.is_empty() {
            return Err(invalid("listen", "at least one address is needed".into()));
        }
        let at_least_one = [
            ("max_calls", self.sip.max_calls as u64),
            ("max_calls_per_source", self.sip.max_calls_per_source as u64),
            (
                "invites_per_sec_per_source",
                u64::from(self.sip.invites_per_sec_per_source),
            ),
            (
                "invite_burst_per_source",
                u64::from(self.sip.invite_burst_per_source),
            ),
            (
                "other_requests_per_sec_per_source",
                u64::from(self.sip.other_requests_per_sec_per_source),
            ),
            (
                "other_request_burst_per_source",
                u64::from(self.sip.other_request_burst_per_source),
            ),
        ];
        if let Some((key, _)) = at_least_one.iter().find(|(_, v)| *v == 0) {
            return Err(invalid(key, "must be at least 1".into()));
        }
        if self.sip.t1_ms == 0 || self.sip.t2_ms < self.sip.t1_ms {
            return Err(invalid(
                "t2_ms",
                "T1 must be > 0 and T2 >= T1 (RFC 3261 §17.1.2.2)".into(),
            ));
        }
        if self.media.clock_priority > 99 {
            return Err(invalid(
                "clock_priority",
                "real-time priorities are 1 to 99 (0 = normal priority)".into(),
            ));
        }
        if self.media.codecs.is_empty() {
            return Err(invalid("codecs", "at least one codec is needed".into()));
        }
        self.rtp_port_range().map_err(|r| invalid("rtp_ports", r))?;
        Ok(())
    }

    /// The RTP port range as (first even port, last port).
    pub fn rtp_port_range(&self) -> Result<(u16, u16), String> {
        let (lo, hi) = self
            .media
            .rtp_ports
            .split_once('-')
            .ok_or("expected \"low-high\"")?;
        let lo: u16 = lo
            .trim()
            .parse()
            .map_err(|_| format!("{lo:?} is not a port"))?;
        let hi: u16 = hi
            .trim()
            .parse()
            .map_err(|_| format!("{hi:?} is not a port"))?;
        if lo < 1024 || hi <= lo {
            return Err(format!("{lo}-{hi} must be ascending and above 1023"));
        }
        Ok((lo + lo % 2, hi))
    }

    /// The effective configuration as TOML (`ivrd run --print-config`).
    pub fn to_toml(&self) -> String {
        toml::to_string_pretty(self)
            .unwrap_or_else(|e| format!("# cannot print configuration: {e}\n"))
    }

    /// The UAS core's settings.
    pub fn endpoint(&self) -> EndpointConfig {
        EndpointConfig {
            timers: TimerConfig {
                t1: Duration::from_millis(self.sip.t1_ms),
                t2: Duration::from_millis(self.sip.t2_ms),
                t4: Duration::from_millis(self.sip.t4_ms),
            },
            trusted: self.sip.trusted.clone(),
            max_calls: self.sip.max_calls,
            max_calls_per_source: self.sip.max_calls_per_source,
            invites_per_sec_per_source: self.sip.invites_per_sec_per_source,
            invite_burst_per_source: self.sip.invite_burst_per_source,
            other_requests_per_sec_per_source: self.sip.other_requests_per_sec_per_source,
            other_request_burst_per_source: self.sip.other_request_burst_per_source,
            codecs: self.media.codecs.clone(),
            answer_delay: Duration::from_millis(self.sip.answer_delay_ms),
            retry_after_secs: self.sip.retry_after_secs,
            contact_user: "ivrd".into(),
            service_numbers: self.sip.service_numbers.clone(),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn empty_file_gives_the_embedded_defaults() {
        let c = Config::from_toml("", Path::new("x.toml")).expect("defaults");
        assert_eq!(
            c.sip.listen,
            ["0.0.0.0:5060".parse::<SocketAddr>().expect("addr")]
        );
        assert_eq!(c.rtp_port_range(), Ok((20000, 29999)));
        assert_eq!(c.metrics.listen.to_string(), "127.0.0.1:9464");
        assert!(c.endpoint().is_trusted("127.0.0.1".parse().expect("ip")));
        assert!(!c.endpoint().is_trusted("10.0.0.1".parse().expect("ip")));
        // What --print-config shows loads back to the same thing.
        let again = Config::from_toml(&c.to_toml(), Path::new("x.toml")).expect("round trip");
        assert_eq!(again.to_toml(), c.to_toml());
    }

    #[test]
    fn errors_name_file_line_and_key() {
        let err = Config::from_toml(
            "[sip]\nmax_calls = 10\nlisten_on = 1\n",
            Path::new("ivrd.toml"),
        )
        .expect_err("unknown key");
        let text = err.to_string();
        assert!(text.starts_with("ivrd.toml:3: "), "{text}");
        assert!(text.contains("listen_on"), "{text}");
        let err = Config::from_toml(
            "[media]\nrtp_ports = \"30000-20000\"\n",
            Path::new("c.toml"),
        )
        .expect_err("range");
        assert!(
            err.to_string().starts_with("c.toml:2: rtp_ports: "),
            "{err}"
        );
        let err = Config::from_toml("[sip]\ntrusted = [\"10.0.0.0/33\"]\n", Path::new("c.toml"))
            .expect_err("cidr");
        assert!(err.to_string().starts_with("c.toml:2: "), "{err}");
        let err = Config::from_toml("[media]\ncodecs = [\"G729\"]\n", Path::new("c.toml"))
            .expect_err("codec");
        assert!(err.to_string().contains("G729"), "{err}");
        let err = Config::from_toml(
            "[media]\nclock_threads = 2\nclock_priority = 120\n",
            Path::new("c.toml"),
        )
        .expect_err("priority");
        assert!(
            err.to_string().starts_with("c.toml:3: clock_priority: "),
            "{err}"
        );
    }

    #[test]
    fn per_source_limits_are_read_validated_and_passed_on() {
        let c = Config::from_toml(
            "[sip]\nmax_calls_per_source = 30\ninvites_per_sec_per_source = 7\ninvite_burst_per_source = 9\n\
             other_requests_per_sec_per_source = 3\nother_request_burst_per_source = 4\n",
            Path::new("c.toml"),
        )
        .expect("valid");
        let e = c.endpoint();
        assert_eq!(
            (
                e.max_calls_per_source,
                e.invites_per_sec_per_source,
                e.invite_burst_per_source,
                e.other_requests_per_sec_per_source,
                e.other_request_burst_per_source
            ),
            (30, 7, 9, 3, 4)
        );
        let defaults = Config::default();
        assert!(
            defaults
                .to_toml()
                .contains("invites_per_sec_per_source = 500")
        );
        assert!(
            defaults
                .to_toml()
                .contains("other_requests_per_sec_per_source = 50")
        );
        for key in [
            "max_calls_per_source",
            "invites_per_sec_per_source",
            "invite_burst_per_source",
            "other_requests_per_sec_per_source",
            "other_request_burst_per_source",
        ] {
            let err = Config::from_toml(&format!("[sip]\n{key} = 0\n"), Path::new("c.toml"))
                .expect_err("zero");
            assert!(
                err.to_string().starts_with(&format!("c.toml:2: {key}: ")),
                "{err}"
            );
        }
    }
}
