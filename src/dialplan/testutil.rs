//! Test support: load plans from strings with an in-memory taxonomy, holiday file and prompt
//! catalogue, and drive engines with a fake clock.

use std::collections::BTreeMap;
use std::path::Path;
use std::sync::Arc;
use std::time::{Duration, Instant};

use crate::dialplan::DialplanError;
use crate::dialplan::calendar::{Date, WallClock};
use crate::dialplan::engine::{Action, CallStart, Engine, Event};
use crate::dialplan::load::{LoadContext, LoadedPlan, PromptCatalog, load_str};
use crate::media::digit::{Digit, DigitEvent, DtmfMethod};

pub const TAXONOMY: &str = r#"
name = "test"
version = "1"
[request_types]
C = { label = "咨询" }
P = { label = "投诉" }
E = { label = "紧急转接" }
[[domains]]
code = "06"
label = "文化旅游"
[[domains.children]]
code = "0601"
label = "旅游消费纠纷"
[[domains]]
code = "07"
label = "营商环境与企业服务"
[regions]
"460100" = "海口市"
"460200" = "三亚市"
"#;

pub const HOLIDAYS: &str = "holidays = [\"2026-10-01\"]\nworkdays = [\"2026-09-27\"]\n";

/// Every prompt exists in every language and lasts 2 s, except names starting with `missing`
/// and any name listed in `absent` as `lang/name`.
pub struct AllPrompts {
    pub absent: Vec<String>,
}

impl PromptCatalog for AllPrompts {
    fn duration(&self, language: &str, prompt: &str) -> Option<Duration> {
        let key = format!("{language}/{prompt}");
        if prompt.starts_with("missing") || self.absent.contains(&key) {
            return None;
        }
        Some(Duration::from_secs(2))
    }
}

/// Loads a plan text as `test.toml`, with `tax.toml` and `holidays.toml` available.
pub fn load(src: &str) -> Result<LoadedPlan, DialplanError> {
    let files: BTreeMap<&str, &str> = [("tax.toml", TAXONOMY), ("holidays.toml", HOLIDAYS)].into();
    let read = |p: &Path| {
        let name = p.file_name().and_then(|n| n.to_str()).unwrap_or("");
        files
            .get(name)
            .map(|s| s.to_string())
            .ok_or_else(|| std::io::Error::from(std::io::ErrorKind::NotFound))
    };
    let prompts = AllPrompts { absent: Vec::new() };
    load_str(
        Path::new("test.toml"),
        src,
        &LoadContext {
            read: &read,
            prompts: &prompts,
        },
    )
}

/// A Wednesday, 10:00 local.
pub fn weekday_morning() -> WallClock {
    WallClock {
        date: Date {
            year: 2026,
            month: 11,
            day: 25,
        },
        weekday: 3,
        minute_of_day: 600,
    }
}

/// An engine and a fake clock.
pub struct Call {
    pub e: Engine,
    pub t0: Instant,
    pub now: Instant,
}

impl Call {
    pub fn start(plan: &Arc<LoadedPlan>, called: &str, wall: WallClock) -> Call {
        let t0 = Instant::now();
        let start = CallStart {
            now: t0,
            caller: "13800000000".into(),
            called: called.into(),
            trunk: None,
            wall,
            case_id: Some("C1".into()),
            language: None,
        };
        Call {
            e: Engine::new(Arc::clone(plan), start),
            t0,
            now: t0,
        }
    }

    pub fn actions(&mut self) -> Vec<Action> {
        std::iter::from_fn(|| self.e.poll_action()).collect()
    }

    pub fn advance(&mut self, secs: f64) {
        self.now += Duration::from_secs_f64(secs);
    }

    pub fn send(&mut self, ev: Event) -> Vec<Action> {
        self.e.handle(self.now, ev);
        self.actions()
    }

    pub fn key(&mut self, c: char) -> Vec<Action> {
        let digit = Digit::from_char(c).unwrap();
        let ev = DigitEvent {
            digit,
            method: DtmfMethod::Inband,
            at: self.now,
        };
        self.send(Event::Digit(ev))
    }

    /// Jumps to the next deadline and fires it.
    pub fn fire_timeout(&mut self) -> Vec<Action> {
        let t = self.e.poll_timeout().expect("a timer is armed");
        assert!(t >= self.now, "deadline in the past");
        self.now = t;
        self.send(Event::Timeout)
    }

    pub fn elapsed(&self) -> Duration {
        self.now - self.t0
    }
}

/// The id and prompt names of the only `Play` in `actions`.
pub fn played(actions: &[Action]) -> (u64, Vec<String>) {
    let plays: Vec<_> = actions
        .iter()
        .filter_map(|a| match a {
            Action::Play { id, prompts, .. } => Some((
                *id,
                prompts.iter().map(|p| p.to_string()).collect::<Vec<_>>(),
            )),
            _ => None,
        })
        .collect();
    assert_eq!(plays.len(), 1, "expected one Play in {actions:?}");
    plays.into_iter().next().unwrap()
}
