//! Maps a key path in a TOML document (`nodes.main.keys."1"`) to a line number, so a validation
//! problem found on the typed model can name the line ops must fix.
//!
//! Used by `load.rs` after serde has produced the typed plan; typed nodes are an internally tagged
//! enum, which cannot carry `toml::Spanned` fields, so the spans come from a second, untyped parse.

use toml::Spanned;
use toml::de::{DeTable, DeValue};

/// Line lookup over one TOML source.
pub struct SpanIndex<'a> {
    src: &'a str,
    root: Option<Spanned<DeTable<'a>>>,
}

impl<'a> SpanIndex<'a> {
    /// Indexes a source; a source that does not parse gives no lines (serde reports those errors).
    pub fn new(src: &'a str) -> SpanIndex<'a> {
        SpanIndex {
            src,
            root: DeTable::parse(src).ok(),
        }
    }

    /// 1-based line of the deepest element of `path` that exists; numeric segments index arrays.
    pub fn line_of(&self, path: &[String]) -> Option<usize> {
        let root = self.root.as_ref()?;
        let mut offset = None;
        let mut table = Some(root.get_ref());
        let mut array: Option<&[Spanned<DeValue<'a>>]> = None;
        for seg in path {
            let value = if let Some(t) = table {
                let Some((k, v)) = t.iter().find(|(k, _)| k.get_ref().as_ref() == seg.as_str())
                else {
                    break;
                };
                offset = Some(k.span().start);
                v
            } else if let Some(a) = array {
                let Some(v) = seg.parse::<usize>().ok().and_then(|i| a.get(i)) else {
                    break;
                };
                offset = Some(v.span().start);
                v
            } else {
                break;
            };
            table = None;
            array = None;
            match value.get_ref() {
                DeValue::Table(t) => table = Some(t),
                DeValue::Array(a) => array = Some(a),
                _ => {}
            }
        }
        offset.map(|o| line_at(self.src, o))
    }
}

/// 1-based line number of a byte offset.
pub fn line_at(src: &str, offset: usize) -> usize {
    src.as_bytes()[..offset.min(src.len())]
        .iter()
        .filter(|&&b| b == b'\n')
        .count()
        + 1
}

#[cfg(test)]
mod tests {
    use super::*;

    fn p(s: &[&str]) -> Vec<String> {
        s.iter().map(|s| s.to_string()).collect()
    }

    #[test]
    fn finds_nested_keys_and_array_items() {
        let src = "[plan]\nname = \"x\"\n\n[nodes.main]\nkind = \"menu\"\nkeys = { \"1\" = { goto = \"a\" } }\n\n[[nodes.b.rules]]\ngoto = \"x\"\n[[nodes.b.rules]]\ngoto = \"y\"\n";
        let s = SpanIndex::new(src);
        assert_eq!(s.line_of(&p(&["plan", "name"])), Some(2));
        assert_eq!(s.line_of(&p(&["nodes", "main"])), Some(4));
        assert_eq!(s.line_of(&p(&["nodes", "main", "keys", "1"])), Some(6));
        assert_eq!(
            s.line_of(&p(&["nodes", "b", "rules", "1", "goto"])),
            Some(11)
        );
        // A missing leaf falls back to the deepest existing parent.
        assert_eq!(s.line_of(&p(&["nodes", "main", "timeout"])), Some(4));
    }
}
