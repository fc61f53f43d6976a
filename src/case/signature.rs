//! The `X-Ivrd-Signature` header that lets the intake backend check a case really came from ivrd.
//!
//! Value: `sha256=` followed by the lower-case hex HMAC-SHA256 (RFC 2104 with SHA-256) of the exact
//! request body, keyed with `[intake] secret`. The receiver recomputes it over the bytes it received
//! and compares in constant time. Pure: the delivery worker calls it once per attempt.

use hmac::{Hmac, KeyInit, Mac};
use sha2::Sha256;
use std::fmt::Write;

/// The name of the signature header.
pub const SIGNATURE_HEADER: &str = "X-Ivrd-Signature";

/// Computes the header value `sha256=<64 hex digits>` for `body` under `secret`.
pub fn signature_header_value(secret: &[u8], body: &[u8]) -> String {
    // HMAC accepts keys of any length (RFC 2104 §2: longer keys are hashed first), so this cannot fail.
    let mut mac = match Hmac::<Sha256>::new_from_slice(secret) {
        Ok(mac) => mac,
        Err(_) => unreachable!("HMAC takes keys of any length"),
    };
    mac.update(body);
    let digest = mac.finalize().into_bytes();
    let mut out = String::with_capacity(7 + 64);
    out.push_str("sha256=");
    for byte in digest.iter() {
        // Writing to a String cannot fail.
        let _ = write!(out, "{byte:02x}");
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn rfc4231_test_case_2() {
        // RFC 4231 §4.3: key "Jefe", data "what do ya want for nothing?".
        assert_eq!(
            signature_header_value(b"Jefe", b"what do ya want for nothing?"),
            "sha256=5bdcc146bf60754e6a042426089575c75a003f089d2739839dec58b964ec3843"
        );
    }

    #[test]
    fn rfc4231_test_case_6_long_key() {
        // RFC 4231 §4.7: a 131-byte key of 0xaa, longer than the SHA-256 block.
        let key = [0xaa_u8; 131];
        assert_eq!(
            signature_header_value(
                &key,
                b"Test Using Larger Than Block-Size Key - Hash Key First"
            ),
            "sha256=60e431591ee0b67f0d8a26aacbf5b77f8e0bc6213728c5140546040f0ee37f54"
        );
    }
}
