//! SIP request methods (RFC 3261 §7.1): the name on a request line, as one type shared by the
//! parser, the transactions, the UAS core and the per-method metrics.
//!
//! Apart from [`crate::sip::message`] because a method has rules of its own that framing does not
//! need (a fixed order for metric slots, a bounded metric label), and the metrics count by method
//! without ever holding a message.

use std::fmt;

/// A SIP method. Unknown extension methods are kept by name so they can be answered `501`.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub enum Method {
    Invite,
    Ack,
    Bye,
    Cancel,
    Options,
    Info,
    Update,
    Refer,
    Notify,
    Prack,
    Register,
    Subscribe,
    Message,
    Publish,
    Other(String),
}

impl Method {
    /// Every method defined by an RFC that ivrd knows by name, in a fixed order (metrics keep
    /// per-method counts in slots of this order).
    pub const KNOWN: [Method; 14] = [
        Method::Invite,
        Method::Ack,
        Method::Bye,
        Method::Cancel,
        Method::Options,
        Method::Info,
        Method::Update,
        Method::Refer,
        Method::Notify,
        Method::Prack,
        Method::Register,
        Method::Subscribe,
        Method::Message,
        Method::Publish,
    ];

    /// Parses a method token. Case-sensitive: RFC 3261 §7.1 says method names are.
    pub fn from_token(token: &str) -> Method {
        Self::KNOWN
            .iter()
            .find(|m| m.known_name() == Some(token))
            .cloned()
            .unwrap_or_else(|| Method::Other(token.to_string()))
    }

    /// The method's wire name.
    pub fn as_str(&self) -> &str {
        match self {
            Method::Other(name) => name,
            known => known.known_name().unwrap_or_default(),
        }
    }

    /// A bounded label for metrics: extension methods collapse into `other`.
    pub fn metric_label(&self) -> &'static str {
        self.known_name().unwrap_or("other")
    }

    /// Where the method is in [`Method::KNOWN`]; `None` for extensions.
    pub fn known_index(&self) -> Option<usize> {
        Self::KNOWN.iter().position(|m| m == self)
    }

    /// The wire name of a method defined by an RFC; `None` for extensions.
    fn known_name(&self) -> Option<&'static str> {
        Some(match self {
            Method::Invite => "INVITE",
            Method::Ack => "ACK",
            Method::Bye => "BYE",
            Method::Cancel => "CANCEL",
            Method::Options => "OPTIONS",
            Method::Info => "INFO",
            Method::Update => "UPDATE",
            Method::Refer => "REFER",
            Method::Notify => "NOTIFY",
            Method::Prack => "PRACK",
            Method::Register => "REGISTER",
            Method::Subscribe => "SUBSCRIBE",
            Method::Message => "MESSAGE",
            Method::Publish => "PUBLISH",
            Method::Other(_) => return None,
        })
    }
}

impl fmt::Display for Method {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}
