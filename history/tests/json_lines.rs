//! Histories as a real client run would hand them over: JSON lines, read
//! back and judged by the checker.

use history::{check, read_history, write_history, Event, Op, Outcome, Verdict};

fn verdict(lines: &str) -> Verdict {
    check(&read_history(lines.as_bytes()).expect("the history reads"))
}

#[test]
fn overlapping_writes_and_reads_read_from_json_lines_are_linearizable() {
    // The get overlaps the put of v2 and may see either value; the cas then finds v2.
    let lines = r#"
{"client":1,"op":"put","key":"k","value":"v1","invoke_us":0,"complete_us":10,"outcome":"ok"}
{"client":1,"op":"put","key":"k","value":"v2","invoke_us":20,"complete_us":40,"outcome":"ok"}
{"client":2,"op":"get","key":"k","invoke_us":25,"complete_us":30,"outcome":"ok","result":"v1"}
{"client":2,"op":"cas","key":"k","value":null,"expected":"v2","invoke_us":50,"complete_us":60,"outcome":"ok","result":true}
{"client":3,"op":"get","key":"k","invoke_us":70,"complete_us":80,"outcome":"ok","result":null}
"#;
    assert_eq!(verdict(lines), Verdict::Linearizable);
}

#[test]
fn stale_read_read_from_json_lines_is_not_linearizable_and_names_its_key() {
    // v2 was acknowledged at 40; a get invoked at 50 still sees v1. The key is not UTF-8, so it is hex.
    let lines = r#"
{"client":1,"op":"put","key":{"hex":"ff01"},"value":"v1","invoke_us":0,"complete_us":10,"outcome":"ok"}
{"client":1,"op":"put","key":{"hex":"ff01"},"value":"v2","invoke_us":20,"complete_us":40,"outcome":"ok"}
{"client":2,"op":"get","key":{"hex":"ff01"},"invoke_us":50,"complete_us":60,"outcome":"ok","result":"v1"}
{"client":3,"op":"get","key":"other","invoke_us":50,"complete_us":60,"outcome":"ok","result":null}
"#;
    match verdict(lines) {
        Verdict::NotLinearizable { key, explanation } => {
            assert_eq!(key, [0xff, 0x01]);
            assert!(explanation.contains("client 2 get returned \"v1\" [call 50, ret 60]"), "{explanation}");
        }
        other => panic!("a stale read passed: {other:?}"),
    }
}

#[test]
fn unknown_write_may_have_taken_effect_but_a_failed_one_did_not() {
    let seen_after = |outcome: &str| {
        format!(
            r#"{{"client":1,"op":"put","key":"k","value":"v1","invoke_us":0,"complete_us":10,"outcome":"ok"}}
{{"client":2,"op":"put","key":"k","value":"v2","invoke_us":20,"complete_us":1020,"outcome":"{outcome}"}}
{{"client":3,"op":"get","key":"k","invoke_us":2000,"complete_us":2010,"outcome":"ok","result":"v2"}}
"#
        )
    };
    assert_eq!(verdict(&seen_after("unknown")), Verdict::Linearizable);
    assert!(matches!(verdict(&seen_after("fail")), Verdict::NotLinearizable { .. }));
    // And an unknown write may equally never have happened.
    let never = r#"{"client":1,"op":"put","key":"k","value":"v1","invoke_us":0,"complete_us":10,"outcome":"ok"}
{"client":2,"op":"delete","key":"k","invoke_us":20,"complete_us":1020,"outcome":"unknown"}
{"client":3,"op":"get","key":"k","invoke_us":2000,"complete_us":2010,"outcome":"ok","result":"v1"}"#;
    assert_eq!(verdict(never), Verdict::Linearizable);
}

#[test]
fn a_history_written_then_read_gets_the_verdict_of_the_original() {
    let event = |client, op, call, ret, outcome| Event { client, key: vec![0, 0xc0], op, call, ret, outcome };
    let mut history = vec![
        event(1, Op::Put(vec![0x80]), 0, 10, Outcome::Put),
        event(2, Op::Cas { expect: Some(vec![0x80]), new: Some(vec![1]) }, 5, 15, Outcome::Ambiguous),
        event(3, Op::Get, 20, 30, Outcome::Get(Some(vec![1]))),
    ];
    let judged = |history: &[Event]| {
        let mut lines = Vec::new();
        write_history(&mut lines, history).unwrap();
        check(&read_history(lines.as_slice()).unwrap())
    };
    assert_eq!(judged(&history), Verdict::Linearizable);
    history.push(event(3, Op::Get, 40, 50, Outcome::Get(Some(vec![0x80]))));
    assert_eq!(check(&history), judged(&history));
    assert!(matches!(judged(&history), Verdict::NotLinearizable { .. }));
}
