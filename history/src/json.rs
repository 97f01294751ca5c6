//! Histories as JSON lines: one [`Event`] per line, as the crate doc
//! describes (fields, the byte encoding, the rules a line must follow).
//!
//! [`Event`] is `Serialize` and `Deserialize` through [`Line`], the line's
//! shape; the checks that no JSON schema can express (a put has a value, an
//! ok get has a result, a completed operation did not complete before it was
//! invoked) are made on both sides, so whatever [`write_event`] writes,
//! [`read_history`] reads back equal, and whatever [`read_history`] returns,
//! [`crate::check`] accepts without panicking.

use std::borrow::Cow;
use std::fmt;
use std::io::{self, BufRead, Read as _, Write};

use serde::de::{self, Deserializer, MapAccess, Visitor};
use serde::ser::{self, SerializeMap as _, Serializer};
use serde::{Deserialize, Serialize};

use crate::event::{Event, Op, Outcome};

/// Longest line [`read_history`] takes (its newline excluded); checked before the line is parsed. A line holds a
/// key (ringraft's are ≤ 64 KiB) and at most two values (≤ 4 MiB each, a raft entry's limit), each hex at worst
/// (twice its bytes): about 16.1 MiB, so twice that leaves room for the rest.
pub const LINE_BYTES_MAX: usize = 32 << 20;

/// Reading a history failed; `line` counts from 1.
#[derive(Debug, thiserror::Error)]
pub enum ReadError {
    #[error("history line {line}: reading: {source}")]
    Io {
        line: u64,
        #[source]
        source: io::Error,
    },
    #[error("history line {line}: longer than LINE_BYTES_MAX ({max} bytes)")]
    TooLong { line: u64, max: usize },
    /// Not JSON, not an object of the history's shape, or an operation that cannot be (a put without a value, an ok
    /// get without a result, a completion before the invocation).
    #[error("history line {line}, column {column}: {message}")]
    Malformed { line: u64, column: usize, message: String },
}

/// Writes `event` as one JSON line. Fails (with [`io::ErrorKind::InvalidData`]) on an event [`read_history`] would
/// reject: an outcome that does not answer its op, a completion before the invocation.
pub fn write_event<W: Write>(out: &mut W, event: &Event) -> io::Result<()> {
    serde_json::to_writer(&mut *out, event)?;
    out.write_all(b"\n")
}

/// Writes every event of `history`, one line each. `out` is written in small pieces: give it a `BufWriter`.
pub fn write_history<W: Write>(mut out: W, history: &[Event]) -> io::Result<()> {
    for event in history {
        write_event(&mut out, event)?;
    }
    out.flush()
}

/// Reads a history written by [`write_history`] (or anything that follows the format). Blank lines are skipped; the
/// last line may lack its newline. The first bad line is an error naming its number.
pub fn read_history<R: BufRead>(input: R) -> Result<Vec<Event>, ReadError> {
    read_history_with_line_bytes_max(input, LINE_BYTES_MAX)
}

fn read_history_with_line_bytes_max<R: BufRead>(mut input: R, line_bytes_max: usize) -> Result<Vec<Event>, ReadError> {
    let mut history = Vec::new();
    let mut buf = Vec::new();
    for line in 1u64.. {
        buf.clear();
        // one byte over the limit tells a line at the limit from one past it
        let read = (&mut input)
            .take(line_bytes_max as u64 + 1)
            .read_until(b'\n', &mut buf)
            .map_err(|source| ReadError::Io { line, source })?;
        if read == 0 {
            break;
        }
        if buf.last() == Some(&b'\n') {
            buf.pop();
        } else if buf.len() > line_bytes_max {
            return Err(ReadError::TooLong { line, max: line_bytes_max });
        }
        if buf.iter().all(u8::is_ascii_whitespace) {
            continue;
        }
        history.push(serde_json::from_slice(&buf).map_err(|e| malformed(line, &e))?);
    }
    Ok(history)
}

/// The parser's error without its position in the one-line document ("at line 1 column 17"): the column is kept
/// apart, and the line is the history's.
fn malformed(line: u64, e: &serde_json::Error) -> ReadError {
    let text = e.to_string();
    let position = format!(" at line {} column {}", e.line(), e.column());
    let message = text.strip_suffix(&position).unwrap_or(&text).to_string();
    ReadError::Malformed { line, column: e.column(), message }
}

impl Serialize for Event {
    fn serialize<S: Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        Line::of(self).map_err(ser::Error::custom)?.serialize(serializer)
    }
}

impl<'de> Deserialize<'de> for Event {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Event, D::Error> {
        Line::deserialize(deserializer)?.into_event().map_err(de::Error::custom)
    }
}

/// One line's shape. A field that does not apply to the op or outcome is left out (`None`); `Some(None)` is a JSON
/// `null`, the absent value. Fields not named here are ignored on reading.
#[derive(Serialize, Deserialize)]
struct Line<'a> {
    client: u64,
    op: OpName,
    key: Bytes<'a>,
    /// A put's value; a cas's new value (null: the cas deletes).
    #[serde(default, skip_serializing_if = "Option::is_none", deserialize_with = "present")]
    value: Option<Option<Bytes<'a>>>,
    /// A cas's expected value (null: expects the key absent).
    #[serde(default, skip_serializing_if = "Option::is_none", deserialize_with = "present")]
    expected: Option<Option<Bytes<'a>>>,
    invoke_us: u64,
    complete_us: u64,
    outcome: OutcomeName,
    /// An ok get's value read (null: absent), an ok cas's whether it matched.
    #[serde(default, skip_serializing_if = "Option::is_none", deserialize_with = "present")]
    result: Option<Answer<'a>>,
}

#[derive(Clone, Copy, Debug, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
enum OpName {
    Get,
    Put,
    Delete,
    Cas,
}

#[derive(Clone, Copy, Debug, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
enum OutcomeName {
    Ok,
    Fail,
    Unknown,
}

impl fmt::Display for OpName {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            OpName::Get => "get",
            OpName::Put => "put",
            OpName::Delete => "delete",
            OpName::Cas => "cas",
        })
    }
}

impl fmt::Display for OutcomeName {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            OutcomeName::Ok => "ok",
            OutcomeName::Fail => "fail",
            OutcomeName::Unknown => "unknown",
        })
    }
}

/// Reads a field that is present, even as `null`, as `Some`; with `#[serde(default)]` a missing one is `None`. So a
/// missing `result` (a writer's bug) is not taken for `"result": null` (read the key as absent).
fn present<'de, D: Deserializer<'de>, T: Deserialize<'de>>(deserializer: D) -> Result<Option<T>, D::Error> {
    T::deserialize(deserializer).map(Some)
}

impl<'a> Line<'a> {
    fn of(event: &'a Event) -> Result<Line<'a>, String> {
        let bytes = |v: &'a Vec<u8>| Bytes(Cow::Borrowed(v.as_slice()));
        let (op, value, expected) = match &event.op {
            Op::Get => (OpName::Get, None, None),
            Op::Put(value) => (OpName::Put, Some(Some(bytes(value))), None),
            Op::Delete => (OpName::Delete, None, None),
            Op::Cas { expect, new } => (OpName::Cas, Some(new.as_ref().map(bytes)), Some(expect.as_ref().map(bytes))),
        };
        let (outcome, result) = match (&event.op, &event.outcome) {
            (_, Outcome::Ambiguous) => (OutcomeName::Unknown, None),
            (_, Outcome::Failed) => (OutcomeName::Fail, None),
            (Op::Get, Outcome::Get(read)) => (OutcomeName::Ok, Some(Answer::Value(read.as_ref().map(bytes)))),
            (Op::Put(_), Outcome::Put) | (Op::Delete, Outcome::Delete) => (OutcomeName::Ok, None),
            (Op::Cas { .. }, Outcome::Cas(matched)) => (OutcomeName::Ok, Some(Answer::Matched(*matched))),
            (op, outcome) => {
                return Err(format!("client {}: outcome {outcome:?} does not answer {op:?}", event.client))
            }
        };
        let line = Line {
            client: event.client,
            op,
            key: bytes(&event.key),
            value,
            expected,
            invoke_us: event.call,
            complete_us: event.ret,
            outcome,
            result,
        };
        line.check_times()?;
        Ok(line)
    }

    fn into_event(self) -> Result<Event, String> {
        self.check_times()?;
        let Line { client, op: name, key, value, expected, invoke_us, complete_us, outcome, result } = self;
        let op = match (name, value, expected) {
            (OpName::Get, None, None) => Op::Get,
            (OpName::Delete, None, None) => Op::Delete,
            (OpName::Get | OpName::Delete, _, _) => return Err(format!("a {name} has no `value` or `expected`")),
            (OpName::Put, Some(Some(value)), None) => Op::Put(value.into_vec()),
            (OpName::Put, _, _) => {
                return Err("a put has a `value` (not null: a delete removes a key) and no `expected`".into())
            }
            (OpName::Cas, Some(new), Some(expect)) => {
                Op::Cas { expect: expect.map(Bytes::into_vec), new: new.map(Bytes::into_vec) }
            }
            (OpName::Cas, _, _) => {
                return Err("a cas has `expected` and `value` (each null for absent: expect none, delete)".into())
            }
        };
        let outcome = match (outcome, &op, result) {
            (OutcomeName::Unknown, _, None) => Outcome::Ambiguous,
            (OutcomeName::Fail, _, None) => Outcome::Failed,
            (OutcomeName::Unknown | OutcomeName::Fail, _, Some(_)) => {
                return Err(format!("an operation whose outcome is {outcome} has no `result`"))
            }
            (OutcomeName::Ok, Op::Get, Some(Answer::Value(read))) => Outcome::Get(read.map(Bytes::into_vec)),
            (OutcomeName::Ok, Op::Get, _) => {
                return Err("an ok get has a `result`: the value read, or null when the key was absent".into())
            }
            (OutcomeName::Ok, Op::Cas { .. }, Some(Answer::Matched(matched))) => Outcome::Cas(matched),
            (OutcomeName::Ok, Op::Cas { .. }, _) => {
                return Err("an ok cas has a `result`: true if it matched (and wrote), false if not".into())
            }
            (OutcomeName::Ok, Op::Put(_), None) => Outcome::Put,
            (OutcomeName::Ok, Op::Delete, None) => Outcome::Delete,
            (OutcomeName::Ok, _, Some(_)) => return Err(format!("an ok {name} has no `result`")),
        };
        Ok(Event { client, key: key.into_vec(), op, call: invoke_us, ret: complete_us, outcome })
    }

    /// The checker's own rule (it panics otherwise): an operation with a known outcome completed after its
    /// invocation. An unknown one's completion is when the client gave up; the checker ignores it.
    fn check_times(&self) -> Result<(), String> {
        if matches!(self.outcome, OutcomeName::Unknown) || self.complete_us >= self.invoke_us {
            return Ok(());
        }
        Err(format!("complete_us {} is before invoke_us {}", self.complete_us, self.invoke_us))
    }
}

/// A `result`: an ok cas's whether it matched, or an ok get's value read (None: absent).
enum Answer<'a> {
    Matched(bool),
    Value(Option<Bytes<'a>>),
}

impl Serialize for Answer<'_> {
    fn serialize<S: Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        match self {
            Answer::Matched(matched) => serializer.serialize_bool(*matched),
            Answer::Value(read) => read.serialize(serializer),
        }
    }
}

impl<'de> Deserialize<'de> for Answer<'_> {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        struct AnswerVisitor;
        impl<'de> Visitor<'de> for AnswerVisitor {
            type Value = Answer<'static>;
            fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                f.write_str("a cas's true or false, or a get's value read: a string, {\"hex\": \"…\"}, or null")
            }
            fn visit_bool<E: de::Error>(self, matched: bool) -> Result<Self::Value, E> {
                Ok(Answer::Matched(matched))
            }
            fn visit_unit<E: de::Error>(self) -> Result<Self::Value, E> {
                Ok(Answer::Value(None))
            }
            fn visit_none<E: de::Error>(self) -> Result<Self::Value, E> {
                Ok(Answer::Value(None))
            }
            fn visit_str<E: de::Error>(self, read: &str) -> Result<Self::Value, E> {
                Ok(Answer::Value(Some(Bytes(Cow::Owned(read.as_bytes().to_vec())))))
            }
            fn visit_map<A: MapAccess<'de>>(self, map: A) -> Result<Self::Value, A::Error> {
                Ok(Answer::Value(Some(Bytes(Cow::Owned(hex_from_map(map)?)))))
            }
        }
        deserializer.deserialize_any(AnswerVisitor)
    }
}

/// A key or value: a JSON string when the bytes are UTF-8, else `{"hex": "…"}` (lowercase; either case is read).
struct Bytes<'a>(Cow<'a, [u8]>);

impl Bytes<'_> {
    fn into_vec(self) -> Vec<u8> {
        self.0.into_owned()
    }
}

impl Serialize for Bytes<'_> {
    fn serialize<S: Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        match std::str::from_utf8(&self.0) {
            Ok(text) => serializer.serialize_str(text),
            Err(_) => {
                let mut map = serializer.serialize_map(Some(1))?;
                map.serialize_entry("hex", &to_hex(&self.0))?;
                map.end()
            }
        }
    }
}

impl<'de> Deserialize<'de> for Bytes<'_> {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        struct BytesVisitor;
        impl<'de> Visitor<'de> for BytesVisitor {
            type Value = Bytes<'static>;
            fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                f.write_str("a string, or {\"hex\": \"…\"} for bytes that are not UTF-8")
            }
            fn visit_str<E: de::Error>(self, text: &str) -> Result<Self::Value, E> {
                Ok(Bytes(Cow::Owned(text.as_bytes().to_vec())))
            }
            fn visit_map<A: MapAccess<'de>>(self, map: A) -> Result<Self::Value, A::Error> {
                Ok(Bytes(Cow::Owned(hex_from_map(map)?)))
            }
        }
        deserializer.deserialize_any(BytesVisitor)
    }
}

/// The bytes of `{"hex": "…"}`, the object's only field.
fn hex_from_map<'de, A: MapAccess<'de>>(mut map: A) -> Result<Vec<u8>, A::Error> {
    const FIELDS: &[&str] = &["hex"];
    match map.next_key::<String>()? {
        Some(field) if field == "hex" => {}
        Some(field) => return Err(de::Error::unknown_field(&field, FIELDS)),
        None => return Err(de::Error::missing_field("hex")),
    }
    let hex: String = map.next_value()?;
    if let Some(field) = map.next_key::<String>()? {
        return Err(de::Error::unknown_field(&field, &[]));
    }
    from_hex(&hex).map_err(de::Error::custom)
}

fn to_hex(bytes: &[u8]) -> String {
    const DIGITS: &[u8; 16] = b"0123456789abcdef";
    bytes.iter().flat_map(|b| [DIGITS[usize::from(b >> 4)] as char, DIGITS[usize::from(b & 0xf)] as char]).collect()
}

fn from_hex(hex: &str) -> Result<Vec<u8>, String> {
    if !hex.len().is_multiple_of(2) {
        return Err(format!("hex of odd length {}", hex.len()));
    }
    let digit = |c: u8| match c {
        b'0'..=b'9' => Ok(c - b'0'),
        b'a'..=b'f' => Ok(c - b'a' + 10),
        b'A'..=b'F' => Ok(c - b'A' + 10),
        _ => Err(format!("{:?} is not a hex digit", char::from(c))),
    };
    hex.as_bytes().chunks_exact(2).map(|pair| Ok(digit(pair[0])? << 4 | digit(pair[1])?)).collect()
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    fn event(key: &[u8], op: Op, call: u64, ret: u64, outcome: Outcome) -> Event {
        Event { client: 7, key: key.to_vec(), op, call, ret, outcome }
    }

    fn line_of(event: &Event) -> String {
        let mut out = Vec::new();
        write_event(&mut out, event).expect("a valid event is written");
        String::from_utf8(out).expect("JSON is UTF-8")
    }

    fn read(text: &str) -> Result<Vec<Event>, ReadError> {
        read_history(text.as_bytes())
    }

    /// The message of the error reading `line` (alone, as line 1).
    fn rejection(line: &str) -> String {
        match read(line) {
            Err(ReadError::Malformed { line: 1, message, .. }) => message,
            other => panic!("{line} was not rejected as malformed: {other:?}"),
        }
    }

    #[test]
    fn lines_hold_exactly_the_fields_of_their_op_and_outcome() {
        let put = event(b"k", Op::Put(b"v1".to_vec()), 10, 20, Outcome::Put);
        assert_eq!(
            line_of(&put),
            "{\"client\":7,\"op\":\"put\",\"key\":\"k\",\"value\":\"v1\",\"invoke_us\":10,\"complete_us\":20,\"outcome\":\"ok\"}\n"
        );
        let get = event(b"k", Op::Get, 10, 20, Outcome::Get(None));
        assert_eq!(
            line_of(&get),
            "{\"client\":7,\"op\":\"get\",\"key\":\"k\",\"invoke_us\":10,\"complete_us\":20,\"outcome\":\"ok\",\"result\":null}\n"
        );
        let cas = event(b"k", Op::Cas { expect: None, new: Some(b"v".to_vec()) }, 10, 20, Outcome::Cas(true));
        assert_eq!(
            line_of(&cas),
            "{\"client\":7,\"op\":\"cas\",\"key\":\"k\",\"value\":\"v\",\"expected\":null,\"invoke_us\":10,\"complete_us\":20,\"outcome\":\"ok\",\"result\":true}\n"
        );
        let delete = event(b"k", Op::Delete, 10, 5, Outcome::Ambiguous);
        assert_eq!(
            line_of(&delete),
            "{\"client\":7,\"op\":\"delete\",\"key\":\"k\",\"invoke_us\":10,\"complete_us\":5,\"outcome\":\"unknown\"}\n"
        );
    }

    #[test]
    fn every_op_and_outcome_round_trips_through_json_lines() {
        let value = |s: &str| Some(s.as_bytes().to_vec());
        let history = vec![
            event(b"a", Op::Get, 0, 1, Outcome::Get(value("x"))),
            event(b"a", Op::Get, 0, 1, Outcome::Get(None)),
            event(b"a", Op::Get, 0, 1, Outcome::Ambiguous),
            event(b"a", Op::Put(b"".to_vec()), 1, 1, Outcome::Put),
            event(b"a", Op::Put(b"x".to_vec()), 1, 2, Outcome::Failed),
            event(b"", Op::Delete, 2, 3, Outcome::Delete),
            event(b"a", Op::Cas { expect: value("x"), new: None }, 3, 4, Outcome::Cas(false)),
            event(b"a", Op::Cas { expect: None, new: value("\"quoted\"\n") }, 3, 0, Outcome::Ambiguous),
            event("ключ".as_bytes(), Op::Put("значение".as_bytes().to_vec()), u64::MAX, u64::MAX, Outcome::Put),
        ];
        let mut out = Vec::new();
        write_history(&mut out, &history).unwrap();
        assert_eq!(out.iter().filter(|&&b| b == b'\n').count(), history.len());
        assert_eq!(read_history(out.as_slice()).unwrap(), history);
    }

    #[test]
    fn bytes_that_are_not_utf8_are_written_as_hex_and_read_back() {
        let bad = vec![0xff, 0x00, b'a', 0xc3];
        let cas = event(&bad, Op::Cas { expect: Some(bad.clone()), new: Some(vec![0x80]) }, 1, 2, Outcome::Cas(true));
        let get = event(&bad, Op::Get, 3, 4, Outcome::Get(Some(vec![0xfe])));
        let text = line_of(&cas) + &line_of(&get);
        assert!(text.contains("\"key\":{\"hex\":\"ff0061c3\"}"), "{text}");
        assert!(text.contains("\"value\":{\"hex\":\"80\"}"), "{text}");
        assert!(text.contains("\"result\":{\"hex\":\"fe\"}"), "{text}");
        assert_eq!(read(&text).unwrap(), vec![cas, get.clone()]);
        // Upper case is read too, and hex of UTF-8 bytes is the same bytes as the string.
        let upper = text.replace("fe", "FE");
        assert_eq!(read(&upper).unwrap()[1], get);
        let hex_key = "{\"client\":1,\"op\":\"delete\",\"key\":{\"hex\":\"6b\"},\"invoke_us\":0,\"complete_us\":1,\"outcome\":\"ok\"}";
        assert_eq!(read(hex_key).unwrap()[0].key, b"k");
    }

    #[test]
    fn malformed_line_is_an_error_naming_its_line_number() {
        let good = line_of(&event(b"k", Op::Get, 0, 1, Outcome::Get(None)));
        let text = format!("{good}\n   \n{good}{{\"client\":1,\"op\":\"get\"\n{good}");
        let error = read(&text).unwrap_err();
        assert!(matches!(error, ReadError::Malformed { line: 5, .. }), "{error:?}");
        assert!(error.to_string().starts_with("history line 5, column "), "{error}");
        assert!(!error.to_string().contains("line 1 column"), "{error}");
        // Not even JSON, and not UTF-8.
        assert!(matches!(read(&format!("{good}garbage\n")), Err(ReadError::Malformed { line: 2, .. })));
        let mut not_utf8 = good.into_bytes();
        not_utf8.extend_from_slice(b"{\"client\":1,\"op\":\"get\",\"key\":\"\xff\"}\n");
        assert!(matches!(read_history(not_utf8.as_slice()), Err(ReadError::Malformed { line: 2, .. })));
    }

    #[test]
    fn lines_no_operation_could_have_produced_are_rejected_with_the_reason() {
        let line = |fields: &str| format!("{{\"client\":1,\"key\":\"k\",\"invoke_us\":5,\"complete_us\":9,{fields}}}");
        let cases = [
            ("\"op\":\"scan\",\"outcome\":\"ok\"", "unknown variant `scan`"),
            ("\"op\":\"get\",\"outcome\":\"maybe\"", "unknown variant `maybe`"),
            ("\"op\":\"get\",\"outcome\":\"ok\"", "an ok get has a `result`"),
            ("\"op\":\"get\",\"outcome\":\"ok\",\"result\":true", "an ok get has a `result`"),
            ("\"op\":\"get\",\"outcome\":\"fail\",\"result\":null", "outcome is fail has no `result`"),
            ("\"op\":\"get\",\"value\":\"v\",\"outcome\":\"ok\",\"result\":null", "a get has no `value`"),
            ("\"op\":\"put\",\"outcome\":\"ok\"", "a put has a `value`"),
            ("\"op\":\"put\",\"value\":null,\"outcome\":\"ok\"", "a put has a `value`"),
            ("\"op\":\"put\",\"value\":\"v\",\"outcome\":\"ok\",\"result\":true", "an ok put has no `result`"),
            ("\"op\":\"cas\",\"value\":\"v\",\"outcome\":\"ok\",\"result\":true", "a cas has `expected` and `value`"),
            ("\"op\":\"cas\",\"value\":\"v\",\"expected\":null,\"outcome\":\"ok\"", "an ok cas has a `result`"),
            ("\"op\":\"cas\",\"value\":\"v\",\"expected\":null,\"outcome\":\"ok\",\"result\":\"v\"", "an ok cas has"),
            ("\"op\":\"put\",\"value\":{\"hex\":\"abc\"},\"outcome\":\"ok\"", "hex of odd length 3"),
            ("\"op\":\"put\",\"value\":{\"hex\":\"zz\"},\"outcome\":\"ok\"", "'z' is not a hex digit"),
            ("\"op\":\"put\",\"value\":{\"base64\":\"AA==\"},\"outcome\":\"ok\"", "unknown field `base64`"),
            ("\"op\":\"put\",\"value\":7,\"outcome\":\"ok\"", "expected a string, or {\"hex\""),
        ];
        for (fields, reason) in cases {
            let message = rejection(&line(fields));
            assert!(message.contains(reason), "{fields}: {message}");
        }
        assert!(rejection("{\"client\":1,\"op\":\"get\",\"key\":\"k\",\"outcome\":\"ok\",\"result\":null}")
            .contains("missing field `invoke_us`"));
        let early =
            "{\"client\":1,\"op\":\"delete\",\"key\":\"k\",\"invoke_us\":9,\"complete_us\":5,\"outcome\":\"fail\"}";
        assert!(rejection(early).contains("complete_us 5 is before invoke_us 9"));
        // Fields the format does not name are ignored (a recorder may add its own).
        let extra = line("\"op\":\"delete\",\"outcome\":\"ok\",\"store\":3");
        assert_eq!(read(&extra).unwrap()[0].outcome, Outcome::Delete);
    }

    #[test]
    fn events_the_reader_would_reject_are_not_written() {
        let mut out = Vec::new();
        let wrong_answer = event(b"k", Op::Get, 0, 1, Outcome::Put);
        let error = write_event(&mut out, &wrong_answer).unwrap_err();
        assert_eq!(error.kind(), io::ErrorKind::InvalidData);
        assert!(error.to_string().contains("does not answer"), "{error}");
        let early = event(b"k", Op::Delete, 5, 4, Outcome::Delete);
        assert!(write_event(&mut out, &early).unwrap_err().to_string().contains("before invoke_us"));
        assert!(out.is_empty(), "{}", String::from_utf8_lossy(&out));
    }

    #[test]
    fn line_over_the_limit_is_refused_before_parsing() {
        let good = line_of(&event(b"k", Op::Get, 0, 1, Outcome::Get(None)));
        let max = good.len() - 1; // the line without its newline is exactly at the limit
        assert_eq!(read_history_with_line_bytes_max(good.as_bytes(), max).unwrap().len(), 1);
        let long = line_of(&event(b"kk", Op::Get, 0, 1, Outcome::Get(None)));
        let text = format!("{good}{long}");
        match read_history_with_line_bytes_max(text.as_bytes(), max) {
            Err(ReadError::TooLong { line: 2, max: m }) => assert_eq!(m, max),
            other => panic!("a line over the limit was read: {other:?}"),
        }
        // The last line may lack its newline.
        assert_eq!(read(good.trim_end()).unwrap().len(), 1);
    }

    fn any_bytes() -> impl Strategy<Value = Vec<u8>> {
        prop_oneof![proptest::collection::vec(any::<u8>(), 0..8), "[a-z\"\\\\é]{0,6}".prop_map(String::into_bytes)]
    }

    fn any_event() -> impl Strategy<Value = Event> {
        let op = prop_oneof![
            Just(Op::Get),
            any_bytes().prop_map(Op::Put),
            Just(Op::Delete),
            (proptest::option::of(any_bytes()), proptest::option::of(any_bytes()))
                .prop_map(|(expect, new)| Op::Cas { expect, new }),
        ];
        (
            any::<u64>(),
            any_bytes(),
            op,
            0u64..1000,
            0u64..1000,
            0u8..3,
            proptest::option::of(any_bytes()),
            any::<bool>(),
        )
            .prop_map(|(client, key, op, call, len, fate, read, matched)| {
                let outcome = match (fate, &op) {
                    (0, _) => Outcome::Ambiguous,
                    (1, _) => Outcome::Failed,
                    (_, Op::Get) => Outcome::Get(read),
                    (_, Op::Put(_)) => Outcome::Put,
                    (_, Op::Delete) => Outcome::Delete,
                    (_, Op::Cas { .. }) => Outcome::Cas(matched),
                };
                Event { client, key, op, call, ret: call + len, outcome }
            })
    }

    proptest! {
        #[test]
        fn any_history_round_trips_through_json_lines(history in proptest::collection::vec(any_event(), 0..20)) {
            let mut out = Vec::new();
            write_history(&mut out, &history).unwrap();
            prop_assert_eq!(read_history(out.as_slice()).unwrap(), history);
        }
    }
}
