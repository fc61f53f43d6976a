//! The request classification a plan refers to, loaded from a data file so a province can ship its
//! own standard without code changes (DOMAIN.md: Hainan's code table is not public).
//!
//! `load.rs` checks every code a plan sets against it; the engine and the journal use it to turn
//! codes into the `{code, label}` pairs a case carries.

use std::collections::BTreeMap;

use serde::Deserialize;

/// Deepest domain level a path may have (the Hainan standard has five).
pub const MAX_DOMAIN_DEPTH: usize = 5;

/// One labelled code.
#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Label {
    /// Label in the plan's default language (Chinese for 12345).
    pub label: String,
    /// English label, for English-speaking staff and logs.
    pub en: Option<String>,
}

/// A domain node and its sub-levels.
#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Domain {
    pub code: String,
    pub label: String,
    pub en: Option<String>,
    #[serde(default)]
    pub children: Vec<Domain>,
}

/// A taxonomy file: request types, the domain tree and regions.
#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Taxonomy {
    pub name: String,
    pub version: String,
    pub request_types: BTreeMap<String, Label>,
    pub domains: Vec<Domain>,
    /// Region code (GB/T 2260) → name.
    pub regions: BTreeMap<String, String>,
}

/// A code resolved to its label, as cases carry it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CodeLabel {
    pub code: String,
    pub label: String,
}

impl Taxonomy {
    /// Label of a request type code.
    pub fn request_type(&self, code: &str) -> Option<CodeLabel> {
        self.request_types.get(code).map(|l| CodeLabel {
            code: code.to_owned(),
            label: l.label.clone(),
        })
    }

    /// Labels of a domain path, level 1 first; `None` if any level is not a child of the one above
    /// or the path is empty or deeper than [`MAX_DOMAIN_DEPTH`].
    pub fn domain_path(&self, path: &[String]) -> Option<Vec<CodeLabel>> {
        if path.is_empty() || path.len() > MAX_DOMAIN_DEPTH {
            return None;
        }
        let mut level = &self.domains;
        let mut out = Vec::with_capacity(path.len());
        for code in path {
            let d = level.iter().find(|d| &d.code == code)?;
            out.push(CodeLabel {
                code: d.code.clone(),
                label: d.label.clone(),
            });
            level = &d.children;
        }
        Some(out)
    }

    /// Label of a region code.
    pub fn region(&self, code: &str) -> Option<CodeLabel> {
        self.regions.get(code).map(|l| CodeLabel {
            code: code.to_owned(),
            label: l.clone(),
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const SRC: &str = r#"
name = "t"
version = "1"
[request_types]
P = { label = "投诉", en = "complaint" }
[[domains]]
code = "06"
label = "文化旅游"
[[domains.children]]
code = "0601"
label = "旅游消费纠纷"
[regions]
"460200" = "三亚市"
"#;

    #[test]
    fn resolves_codes_and_refuses_wrong_paths() {
        let t: Taxonomy = toml::from_str(SRC).unwrap();
        assert_eq!(t.request_type("P").unwrap().label, "投诉");
        assert!(t.request_type("Q").is_none());
        let p = t.domain_path(&["06".into(), "0601".into()]).unwrap();
        assert_eq!(p[1].label, "旅游消费纠纷");
        assert!(t.domain_path(&["0601".into()]).is_none());
        assert!(t.domain_path(&[]).is_none());
        assert_eq!(t.region("460200").unwrap().label, "三亚市");
    }
}
