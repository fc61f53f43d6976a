//! Key strings and digit patterns as plans write them (`"31"`, `"#"`, `"1XXXXXXXXXX"`).
//!
//! Used by `validate.rs` to check a plan and by the engine (`keys.rs`) to match what a caller
//! typed; one definition so the checker and the engine cannot disagree.

use crate::media::digit::Digit;

/// Parses a key string (`"1"`, `"#"`, `"12"`) into keypad digits.
pub fn parse_key(key: &str) -> Result<Vec<Digit>, &'static str> {
    if key.is_empty() {
        return Err("empty key");
    }
    key.chars()
        .map(|c| Digit::from_char(c).ok_or("not a keypad key (0-9, *, #, A-D)"))
        .collect()
}

/// Whether `digits` matches a collect pattern (syntax in [`crate::dialplan::model::CollectNode::patterns`]).
pub fn pattern_matches(pattern: &str, digits: &str) -> bool {
    let (body, more) = match pattern.strip_suffix('.') {
        Some(b) => (b, true),
        None => (pattern, false),
    };
    let n = body.chars().count();
    let len = digits.chars().count();
    if len < n || (!more && len != n) || (more && len == n) {
        return false;
    }
    let fixed_ok = body.chars().zip(digits.chars()).all(|(p, d)| match p {
        'X' => d.is_ascii_digit(),
        'N' => ('2'..='9').contains(&d),
        'Z' => ('1'..='9').contains(&d),
        _ => p == d,
    });
    fixed_ok && digits.chars().all(|d| d.is_ascii_digit())
}

/// Whether a collect pattern uses only the documented syntax.
pub fn pattern_valid(p: &str) -> bool {
    let body = p.strip_suffix('.').unwrap_or(p);
    !body.is_empty()
        && body
            .chars()
            .all(|c| c.is_ascii_digit() || "XNZ".contains(c))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn digit_patterns() {
        assert!(pattern_matches("1XXXXXXXXXX", "13812345678"));
        assert!(!pattern_matches("1XXXXXXXXXX", "1381234567"));
        assert!(pattern_matches("0898NXXXXXXX", "089866668888"));
        assert!(!pattern_matches("0898NXXXXXXX", "089816668888"));
        assert!(pattern_matches("0Z.", "0101"));
        assert!(!pattern_matches("0Z.", "01"));
        assert!(pattern_valid("0Z.") && !pattern_valid("1[0-9]") && !pattern_valid("."));
        assert_eq!(parse_key("1#").unwrap(), vec![Digit::D1, Digit::Pound]);
        assert!(parse_key("x").is_err() && parse_key("").is_err());
    }
}
