//! Per-method request and per-(method, code) response counts kept by the sans-IO endpoint for
//! the metrics layer (`ivrd_sip_requests_received_total`, `ivrd_sip_responses_sent_total`).
//!
//! Both live in fixed arrays so [`super::SipCounters`] stays a plain value the driver can copy
//! after every batch of work without allocating. Bounded: methods collapse into
//! [`Method::metric_label`]'s 15 values; response keys are the (method, code) pairs this core
//! actually sends (a few dozen at most). Should more distinct pairs ever appear than there are
//! slots, the excess is counted as method `other`, code 0, never dropped.

use crate::sip::method::Method;

/// Method slots: `other` (extension methods) first, then [`Method::KNOWN`] in its order.
const METHOD_SLOTS: usize = Method::KNOWN.len() + 1;

/// The metric label of a method slot.
fn slot_label(slot: usize) -> &'static str {
    slot.checked_sub(1)
        .and_then(|i| Method::KNOWN.get(i))
        .map_or("other", Method::metric_label)
}

/// Distinct (method, code) pairs tracked before the overflow slot is used.
const RESPONSE_SLOTS: usize = 48;

fn slot(method: &Method) -> usize {
    method.known_index().map_or(0, |i| i + 1)
}

/// Requests received, by method.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct RequestTally {
    by_method: [u64; METHOD_SLOTS],
}

impl RequestTally {
    /// Counts one request of `method`.
    pub fn add(&mut self, method: &Method) {
        self.by_method[slot(method)] += 1;
    }

    /// The count for one method label ([`Method::metric_label`]); 0 for an unknown label.
    pub fn get(&self, label: &str) -> u64 {
        self.iter().find(|(l, _)| *l == label).map_or(0, |(_, n)| n)
    }

    /// `(method label, count)` for every method, zeros included.
    pub fn iter(&self) -> impl Iterator<Item = (&'static str, u64)> + '_ {
        self.by_method
            .iter()
            .enumerate()
            .map(|(slot, &n)| (slot_label(slot), n))
    }
}

/// One response key and its count.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
struct ResponseSlot {
    method: u8,
    code: u16,
    count: u64,
}

/// Responses sent, by request method and status code. Keys only ever get appended, so slot `i`
/// names the same pair for the life of the endpoint (the metrics layer relies on it to diff).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ResponseTally {
    slots: [ResponseSlot; RESPONSE_SLOTS],
    used: usize,
    overflow: u64,
}

impl Default for ResponseTally {
    fn default() -> Self {
        ResponseTally {
            slots: [ResponseSlot::default(); RESPONSE_SLOTS],
            used: 0,
            overflow: 0,
        }
    }
}

impl ResponseTally {
    /// Counts one response with `code` to a request of `method`.
    pub fn add(&mut self, method: &Method, code: u16) {
        let method = u8::try_from(slot(method)).unwrap_or(0);
        if let Some(s) = self.slots[..self.used]
            .iter_mut()
            .find(|s| s.method == method && s.code == code)
        {
            s.count += 1;
        } else if self.used < RESPONSE_SLOTS {
            self.slots[self.used] = ResponseSlot {
                method,
                code,
                count: 1,
            };
            self.used += 1;
        } else {
            self.overflow += 1;
        }
    }

    /// The count for one (method label, code) pair.
    pub fn get(&self, label: &str, code: u16) -> u64 {
        self.iter()
            .filter(|(l, c, _)| *l == label && *c == code)
            .map(|(_, _, n)| n)
            .sum()
    }

    /// `(method label, code, count)` per slot in slot order, then the overflow as
    /// `("other", 0, n)`. Positions are stable: entry `i` keeps its key as counts grow.
    pub fn iter(&self) -> impl Iterator<Item = (&'static str, u16, u64)> + '_ {
        let label = |m: u8| slot_label(usize::from(m));
        self.slots[..self.used]
            .iter()
            .map(move |s| (label(s.method), s.code, s.count))
            .chain(std::iter::once(("other", 0, self.overflow)))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_method_label_has_its_own_slot() {
        let methods = [
            "INVITE",
            "ACK",
            "BYE",
            "CANCEL",
            "OPTIONS",
            "INFO",
            "UPDATE",
            "REFER",
            "NOTIFY",
            "PRACK",
            "REGISTER",
            "SUBSCRIBE",
            "MESSAGE",
            "PUBLISH",
            "FOO",
        ];
        let mut t = RequestTally::default();
        for m in methods {
            t.add(&Method::from_token(m));
        }
        assert!(t.iter().all(|(_, n)| n == 1), "{t:?}");
        let labels: std::collections::HashSet<_> = t.iter().map(|(l, _)| l).collect();
        assert_eq!(labels.len(), methods.len(), "one label per slot");
        assert!(methods[..14].iter().all(|m| labels.contains(m)));
        assert_eq!(t.get("other"), 1);
        assert_eq!(t.get("INVITE"), 1);
    }

    #[test]
    fn responses_keep_their_slot_and_overflow_is_counted() {
        let mut t = ResponseTally::default();
        t.add(&Method::Invite, 100);
        t.add(&Method::Invite, 200);
        t.add(&Method::Invite, 100);
        let first: Vec<_> = t.iter().collect();
        assert_eq!(
            first,
            [("INVITE", 100, 2), ("INVITE", 200, 1), ("other", 0, 0)]
        );
        for code in 300..(300 + RESPONSE_SLOTS as u16) {
            t.add(&Method::Bye, code);
        }
        assert_eq!(t.get("INVITE", 100), 2, "old slots keep their key");
        assert_eq!(t.get("other", 0), 2, "the two pairs beyond the table");
        let total: u64 = t.iter().map(|(_, _, n)| n).sum();
        assert_eq!(total, 3 + RESPONSE_SLOTS as u64);
    }
}
