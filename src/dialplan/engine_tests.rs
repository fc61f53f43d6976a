//! Engine scenarios with a fake clock: timeouts, retries, invalid keys, type-ahead, barge-in,
//! global keys, silence → person, max IVR time, collect/confirm, recording, transfer, branches.

use std::sync::Arc;
use std::time::Duration;

use crate::dialplan::engine::{Action, Event, TransferResult};
use crate::dialplan::journal::{Confidence, Outcome, StepKind};
use crate::dialplan::load::LoadedPlan;
use crate::dialplan::testutil::*;
use crate::media::digit::{Digit, DtmfMethod};

const PLAN: &str = r##"
[plan]
name = "t"
version = "7"
entry = "region"
languages = ["zh-CN", "en"]
default_language = "zh-CN"
fallback_language = "zh-CN"
person = "agent"
silence_seconds = 5
max_ivr_seconds = 120
taxonomy = "tax.toml"
holidays = "holidays.toml"
[plan.global_keys]
"0" = { goto = "agent" }
"*" = "repeat"

[nodes.region]
kind = "set"
region_by_called = { "1234502" = "460200" }
next = "welcome"

[nodes.welcome]
kind = "play"
prompts = ["welcome"]
next = "main"

[nodes.main]
kind = "menu"
prompts = ["main"]
max_attempts = 2
invalid_prompt = "invalid"
timeout_prompt = "noinput"
[nodes.main.keys]
"1" = { goto = "agent", set = { request_type = "P", domain = ["06", "0601"] } }
"2" = { goto = "main", set = { language = "en" } }
"31" = { goto = "callback" }
"4" = { goto = "message" }
"5" = { goto = "hours" }

[nodes.callback]
kind = "collect"
prompts = ["enter_number"]
field = "callback"
min_digits = 11
max_digits = 11
terminator = "#"
patterns = ["1XXXXXXXXXX"]
confirm = { before = ["you_entered"], after = ["confirm_or_retry"] }
next = "agent"

[nodes.message]
kind = "record"
prompts = ["leave_message"]
max_seconds = 60
min_seconds = 3
silence_end_seconds = 4
end_key = "#"
field = "message"
next = "bye"

[nodes.hours]
kind = "branch"
rules = [
  { day_off = true, goto = "message" },
  { weekdays = [1, 2, 3, 4, 5], time = "08:30-18:00", goto = "agent" },
]
default = "message"

[nodes.agent]
kind = "transfer"
target = "sip:queue@agents.example"
by_request_type = { P = "sip:complaints@agents.example" }
on_failure = "message"

[nodes.bye]
kind = "hangup"
prompts = ["goodbye"]
"##;

fn plan() -> Arc<LoadedPlan> {
    Arc::new(load(PLAN).unwrap())
}

fn call() -> Call {
    Call::start(&plan(), "12345", weekday_morning())
}

/// Plays the welcome to its end and the main prompt; returns the main prompt's play id.
fn to_main_menu(c: &mut Call) -> u64 {
    let (id, p) = played(&c.actions());
    assert_eq!(p, ["zh-CN/welcome"]);
    c.advance(2.0);
    let (main, p) = played(&c.send(Event::PromptFinished { id }));
    assert_eq!(p, ["zh-CN/main"]);
    main
}

fn transfer_target(actions: &[Action]) -> Option<String> {
    actions.iter().find_map(|a| match a {
        Action::Transfer { target, .. } => Some(target.clone()),
        _ => None,
    })
}

#[test]
fn silent_caller_reaches_a_person_after_the_attempts() {
    let mut c = call();
    let main = to_main_menu(&mut c);
    c.advance(2.0);
    assert!(c.send(Event::PromptFinished { id: main }).is_empty());
    // The first wait is the plan's silence_seconds.
    let (id, p) = played(&c.fire_timeout());
    assert_eq!(c.elapsed(), Duration::from_secs(9));
    assert_eq!(p, ["zh-CN/noinput", "zh-CN/main"]);
    c.advance(4.0);
    c.send(Event::PromptFinished { id });
    let a = c.fire_timeout();
    assert_eq!(
        transfer_target(&a).as_deref(),
        Some("sip:queue@agents.example")
    );
    assert_eq!(c.e.journal().confidence, Confidence::Timeout);
    assert_eq!(c.e.journal().timeouts, 2);
    c.send(Event::Transfer(TransferResult::Accepted));
    let target = "sip:queue@agents.example".to_string();
    assert_eq!(c.e.journal().outcome, Some(Outcome::Transferred { target }));
    assert!(c.e.is_done() && c.e.poll_timeout().is_none());
}

#[test]
fn key_after_prompt_classifies_and_routes_by_request_type() {
    let mut c = call();
    let main = to_main_menu(&mut c);
    c.send(Event::PromptFinished { id: main });
    c.advance(1.0);
    let a = c.key('1');
    assert_eq!(
        transfer_target(&a).as_deref(),
        Some("sip:complaints@agents.example")
    );
    let j = c.e.journal();
    assert_eq!(j.request_type.as_ref().unwrap().label, "投诉");
    let dom: Vec<&str> = j.domain.iter().map(|d| d.code.as_str()).collect();
    assert_eq!(dom, ["06", "0601"]);
    assert_eq!(j.confidence, Confidence::CallerSelected);
    let Some(Action::Transfer {
        headers,
        user_to_user,
        ..
    }) = a.iter().find(|a| matches!(a, Action::Transfer { .. }))
    else {
        unreachable!()
    };
    assert_eq!(headers, &[("X-Case-Id".to_string(), "C1".to_string())]);
    assert_eq!(user_to_user, "case=C1;type=P;domain=06/0601;lang=zh-CN");
    let path = j.ivr_path();
    let key = path.iter().find(|p| p.key.is_some()).unwrap();
    assert_eq!(
        (key.key, key.method),
        (Some(Digit::D1), Some(DtmfMethod::Inband))
    );
    assert_eq!(key.node.as_str(), "main");
}

#[test]
fn type_ahead_during_welcome_stops_it_and_skips_the_menu_prompt() {
    let mut c = call();
    let (welcome, _) = played(&c.actions());
    c.advance(0.5);
    let a = c.key('4');
    assert_eq!(a[0], Action::StopPlayback { id: welcome });
    // Straight from welcome to the record node's prompt: the main prompt never played.
    let (_, p) = played(&a);
    assert_eq!(p, ["zh-CN/leave_message", "zh-CN/beep"]);
    assert!(
        !c.e.journal()
            .prompts_played()
            .iter()
            .any(|p| p.name.as_str() == "main")
    );
    // A late PromptFinished for the stopped welcome changes nothing.
    assert!(c.send(Event::PromptFinished { id: welcome }).is_empty());
    assert_eq!(c.e.node().as_str(), "message");
}

#[test]
fn multi_key_choice_typed_ahead_is_matched_whole() {
    let mut c = call();
    let main = to_main_menu(&mut c);
    let a = c.key('3');
    assert_eq!(a, [Action::StopPlayback { id: main }]);
    let (_, p) = played(&c.key('1'));
    assert_eq!(p, ["zh-CN/enter_number"]);
}

#[test]
fn partial_multi_key_times_out_as_invalid() {
    let mut c = call();
    let main = to_main_menu(&mut c);
    c.send(Event::PromptFinished { id: main });
    c.key('3');
    // The inter-digit timer (3 s) is what fires, not the 5 s silence timer.
    let (_, p) = played(&c.fire_timeout());
    assert_eq!(c.elapsed(), Duration::from_secs(5));
    assert_eq!(p, ["zh-CN/invalid", "zh-CN/main"]);
    let invalid = c.e.journal().steps.iter().any(|s| {
        s.kind
            == StepKind::Invalid {
                input: "3".into(),
                attempt: 1,
            }
    });
    assert!(invalid);
}

#[test]
fn invalid_keys_exhaust_to_the_person() {
    let mut c = call();
    let main = to_main_menu(&mut c);
    c.send(Event::PromptFinished { id: main });
    let (id, p) = played(&c.key('8'));
    assert_eq!(p, ["zh-CN/invalid", "zh-CN/main"]);
    c.send(Event::PromptFinished { id });
    let a = c.key('8');
    assert_eq!(
        transfer_target(&a).as_deref(),
        Some("sip:queue@agents.example")
    );
    // Invalid keys are not silence: the classification stays "default".
    assert_eq!(c.e.journal().confidence, Confidence::Default);
}

#[test]
fn global_zero_and_star_work_in_a_menu() {
    let mut c = call();
    let main = to_main_menu(&mut c);
    let a = c.key('*');
    assert_eq!(a[0], Action::StopPlayback { id: main });
    let (_, p) = played(&a);
    assert_eq!(p, ["zh-CN/main"]);
    let a = c.key('0');
    assert_eq!(
        transfer_target(&a).as_deref(),
        Some("sip:queue@agents.example")
    );
}

#[test]
fn language_choice_changes_prompts() {
    let mut c = call();
    let main = to_main_menu(&mut c);
    c.send(Event::PromptFinished { id: main });
    let (_, p) = played(&c.key('2'));
    assert_eq!(p, ["en/main"]);
    assert_eq!(c.e.journal().language, "en");
}

#[test]
fn max_ivr_time_sends_the_caller_to_a_person() {
    let mut c = call();
    let main = to_main_menu(&mut c);
    c.send(Event::PromptFinished { id: main });
    // Keep the menu alive with repeats so only the 120 s limit can end it.
    while c.e.poll_timeout().unwrap() > c.now + Duration::from_secs(4) {
        c.advance(4.0);
        let (id, _) = played(&c.key('*'));
        c.send(Event::PromptFinished { id });
    }
    let a = c.fire_timeout();
    assert_eq!(c.elapsed(), Duration::from_secs(120));
    assert_eq!(
        transfer_target(&a).as_deref(),
        Some("sip:queue@agents.example")
    );
    assert!(
        c.e.journal()
            .steps
            .iter()
            .any(|s| s.kind == StepKind::MaxIvrTime)
    );
}

/// Enters the callback collect node with the prompt finished.
fn to_callback(c: &mut Call) {
    let main = to_main_menu(c);
    c.send(Event::PromptFinished { id: main });
    c.key('3');
    let (id, _) = played(&c.key('1'));
    c.send(Event::PromptFinished { id });
}

#[test]
fn collect_reads_back_and_stores_on_confirm() {
    let mut c = call();
    to_callback(&mut c);
    // Zero is data here, not the global key.
    for d in "1380013800".chars() {
        assert!(c.key(d).is_empty());
    }
    let (id, p) = played(&c.key('0'));
    let digits: Vec<String> = "13800138000"
        .chars()
        .map(|d| format!("zh-CN/digit-{d}"))
        .collect();
    let mut want = vec!["zh-CN/you_entered".to_string()];
    want.extend(digits);
    want.push("zh-CN/confirm_or_retry".into());
    assert_eq!(p, want);
    c.send(Event::PromptFinished { id });
    let a = c.key('1');
    assert!(transfer_target(&a).is_some());
    assert_eq!(c.e.journal().fields["callback"], "13800138000");
}

#[test]
fn collect_refuses_a_number_off_pattern_and_retry_key_restarts() {
    let mut c = call();
    to_callback(&mut c);
    for d in "2380".chars() {
        c.key(d);
    }
    // Terminator with too few digits that also miss the pattern: invalid, asked again.
    let (id, p) = played(&c.key('#'));
    assert_eq!(p, ["zh-CN/enter_number"]);
    c.send(Event::PromptFinished { id });
    for d in "13800138000".chars() {
        c.key(d);
    }
    // At the confirm prompt `2` means "enter it again": a second attempt, nothing stored.
    let (_, p) = played(&c.key('2'));
    assert_eq!(p, ["zh-CN/enter_number"]);
    assert_eq!(c.e.journal().retries, 2);
    assert!(!c.e.journal().fields.contains_key("callback"));
}

fn to_recording(c: &mut Call) -> u64 {
    let main = to_main_menu(c);
    c.send(Event::PromptFinished { id: main });
    let (id, _) = played(&c.key('4'));
    let a = c.send(Event::PromptFinished { id });
    match a.as_slice() {
        [
            Action::StartRecording {
                id,
                field,
                max,
                silence_end,
            },
        ] => {
            assert_eq!(field, "message");
            assert_eq!(*max, Duration::from_secs(60));
            assert_eq!(*silence_end, Some(Duration::from_secs(4)));
            *id
        }
        other => panic!("{other:?}"),
    }
}

#[test]
fn end_key_stops_recording_and_message_is_kept() {
    let mut c = call();
    let rec = to_recording(&mut c);
    c.advance(10.0);
    assert_eq!(c.key('#'), [Action::StopRecording { id: rec }]);
    let duration = Duration::from_secs(10);
    let (id, p) = played(&c.send(Event::RecordingDone { id: rec, duration }));
    assert_eq!(p, ["zh-CN/goodbye"]);
    let a = c.send(Event::PromptFinished { id });
    assert_eq!(
        a,
        [Action::HangUp {
            outcome: Outcome::MessageLeft
        }]
    );
    assert_eq!(c.e.journal().recordings[0].duration, duration);
}

#[test]
fn hanging_up_after_a_kept_message_is_still_a_message_left() {
    let mut c = call();
    let rec = to_recording(&mut c);
    c.advance(10.0);
    c.key('#');
    let (_, p) = played(&c.send(Event::RecordingDone {
        id: rec,
        duration: Duration::from_secs(10),
    }));
    assert_eq!(p, ["zh-CN/goodbye"]);
    // The caller hangs up during the goodbye prompt.
    c.send(Event::HangUp);
    assert_eq!(c.e.journal().outcome, Some(Outcome::MessageLeft));
}

#[test]
fn too_short_message_is_asked_again_then_moves_on() {
    let mut c = call();
    let rec = to_recording(&mut c);
    let short = Duration::from_secs(1);
    let (id, p) = played(&c.send(Event::RecordingDone {
        id: rec,
        duration: short,
    }));
    assert_eq!(p, ["zh-CN/leave_message", "zh-CN/beep"]);
    let a = c.send(Event::PromptFinished { id });
    let Some(Action::StartRecording { id: rec2, .. }) = a.first().cloned() else {
        panic!("{a:?}")
    };
    let (id, _) = played(&c.send(Event::RecordingDone {
        id: rec2,
        duration: short,
    }));
    let a = c.send(Event::PromptFinished { id });
    assert_eq!(
        a,
        [Action::HangUp {
            outcome: Outcome::Completed
        }]
    );
    assert!(c.e.journal().recordings.is_empty());
}

#[test]
fn hanging_up_ends_a_message_or_abandons_a_menu() {
    let mut c = call();
    let rec = to_recording(&mut c);
    c.advance(8.0);
    c.send(Event::HangUp);
    assert_eq!(c.e.journal().outcome, Some(Outcome::MessageLeft));
    c.send(Event::RecordingDone {
        id: rec,
        duration: Duration::from_secs(8),
    });
    assert_eq!(c.e.journal().recordings.len(), 1);

    let mut c = call();
    to_main_menu(&mut c);
    c.send(Event::HangUp);
    let node = crate::dialplan::NodeId("main".into());
    assert_eq!(c.e.journal().outcome, Some(Outcome::Abandoned { node }));
    assert!(c.e.poll_timeout().is_none());
}

#[test]
fn failed_transfer_falls_back_to_a_message() {
    let mut c = call();
    let main = to_main_menu(&mut c);
    c.send(Event::PromptFinished { id: main });
    c.key('0');
    let (_, p) = played(&c.send(Event::Transfer(TransferResult::Failed { code: Some(486) })));
    assert_eq!(p, ["zh-CN/leave_message", "zh-CN/beep"]);
    let note = c.e.journal().transfer.clone().unwrap();
    assert_eq!(note.result, Some(Err(Some(486))));
}

#[test]
fn branch_on_hours_and_holidays_and_region_from_called_number() {
    let p = plan();
    let go = |wall| {
        let mut c = Call::start(&p, "1234502", wall);
        let main = to_main_menu(&mut c);
        c.send(Event::PromptFinished { id: main });
        let a = c.key('5');
        (transfer_target(&a).is_some(), c.e.journal().region.clone())
    };
    let (to_agent, region) = go(weekday_morning());
    assert!(to_agent);
    assert_eq!(region.unwrap().label, "三亚市");
    let mut evening = weekday_morning();
    evening.minute_of_day = 19 * 60;
    assert!(!go(evening).0);
    let mut national_day = weekday_morning();
    national_day.date = crate::dialplan::calendar::Date::parse("2026-10-01").unwrap();
    national_day.weekday = 4;
    assert!(!go(national_day).0);
    // An adjusted Sunday workday counts as a workday, but weekdays=[1..5] still excludes it.
    let mut adjusted = weekday_morning();
    adjusted.date = crate::dialplan::calendar::Date::parse("2026-09-27").unwrap();
    adjusted.weekday = 7;
    assert!(!go(adjusted).0);
}

#[test]
fn without_barge_in_keys_wait_for_the_prompt_end() {
    let src = PLAN.replace(
        "[nodes.main]\nkind = \"menu\"\n",
        "[nodes.main]\nkind = \"menu\"\nbarge_in = false\n",
    );
    let mut c = Call::start(&Arc::new(load(&src).unwrap()), "12345", weekday_morning());
    let main = to_main_menu(&mut c);
    // The key is kept, the prompt goes on.
    assert!(c.key('1').is_empty());
    c.advance(2.0);
    let a = c.send(Event::PromptFinished { id: main });
    assert_eq!(
        transfer_target(&a).as_deref(),
        Some("sip:complaints@agents.example")
    );
}

#[test]
fn zero_during_the_message_prompt_reaches_a_person() {
    let mut c = call();
    let main = to_main_menu(&mut c);
    c.send(Event::PromptFinished { id: main });
    let (id, _) = played(&c.key('4'));
    let a = c.key('0');
    assert_eq!(a[0], Action::StopPlayback { id });
    assert!(transfer_target(&a).is_some());
}

#[test]
fn digits_while_transferring_or_after_the_end_are_ignored() {
    let mut c = call();
    let main = to_main_menu(&mut c);
    c.send(Event::PromptFinished { id: main });
    c.key('0');
    assert!(c.key('1').is_empty());
    c.send(Event::Transfer(TransferResult::Accepted));
    assert!(c.key('0').is_empty());
    assert!(c.send(Event::HangUp).is_empty());
    assert_eq!(
        c.e.journal().outcome.as_ref().map(|o| o.as_str()),
        Some("transferred")
    );
}
