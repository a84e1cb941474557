//! The shared vectors (core/testdata/vectors) through the module on wasmtime: every answer must be
//! byte for byte what the vector expects (the vectors README, "Comparison rules"), as on native Go,
//! wazero and V8. A vector goes through the typed API when its input fits the types exactly
//! (the typed input serialises back to the same JSON), and through `invoke` always; tracker_run
//! vectors also go step by step through a `Tracker`.

use std::collections::{BTreeMap, HashSet};
use std::path::PathBuf;
use std::sync::OnceLock;

use keyclaim::*;
use serde::de::DeserializeOwned;
use serde::{Deserialize, Serialize};
use serde_json::value::RawValue;
use serde_json::Value;

fn engine() -> &'static Engine {
    static ENGINE: OnceLock<Engine> = OnceLock::new();
    ENGINE.get_or_init(|| Engine::new().expect("loading the embedded module"))
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct VectorFile {
    schema: i64,
    #[allow(dead_code)]
    description: String,
    vectors: Vec<Vector>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct Vector {
    id: String,
    #[allow(dead_code)]
    description: String,
    #[allow(dead_code)]
    source: String,
    op: String,
    input: Box<RawValue>,
    expect: Option<Value>,
    expect_error: Option<String>,
}

/// Matrix canonical JSON (spec appendices): members sorted by code point, no white space, only
/// `"`, `\` and U+0000-U+001F escaped, integers only. Written here, not borrowed from serde_json,
/// so that the comparison does not depend on the library under test.
fn canonical(v: &Value, out: &mut String) {
    match v {
        Value::Null => out.push_str("null"),
        Value::Bool(b) => out.push_str(if *b { "true" } else { "false" }),
        Value::Number(n) => {
            assert!(n.is_i64() || n.is_u64(), "vectors hold integers only: {n}");
            out.push_str(&n.to_string());
        }
        Value::String(s) => {
            out.push('"');
            for c in s.chars() {
                match c {
                    '"' => out.push_str("\\\""),
                    '\\' => out.push_str("\\\\"),
                    '\u{8}' => out.push_str("\\b"),
                    '\u{c}' => out.push_str("\\f"),
                    '\n' => out.push_str("\\n"),
                    '\r' => out.push_str("\\r"),
                    '\t' => out.push_str("\\t"),
                    c if (c as u32) < 0x20 => out.push_str(&format!("\\u{:04x}", c as u32)),
                    c => out.push(c),
                }
            }
            out.push('"');
        }
        Value::Array(a) => {
            out.push('[');
            for (i, x) in a.iter().enumerate() {
                if i > 0 {
                    out.push(',');
                }
                canonical(x, out);
            }
            out.push(']');
        }
        Value::Object(o) => {
            let mut keys: Vec<&String> = o.keys().collect();
            keys.sort_by(|a, b| a.as_bytes().cmp(b.as_bytes())); // UTF-8 byte order = code point order
            out.push('{');
            for (i, k) in keys.iter().enumerate() {
                if i > 0 {
                    out.push(',');
                }
                canonical(&Value::String((*k).clone()), out);
                out.push(':');
                canonical(&o[k.as_str()], out);
            }
            out.push('}');
        }
    }
}

fn want_result(expect: &Value) -> String {
    let mut s = String::from("{\"result\":");
    canonical(expect, &mut s);
    s.push('}');
    s
}

/// Checks an error envelope: exactly errcode and a non-empty error.
fn check_error_envelope(out: &[u8], code: &str) -> Result<(), String> {
    let v: Value = serde_json::from_slice(out).map_err(|e| format!("not JSON: {e}"))?;
    let o = v.as_object().ok_or("not an object")?;
    let ok = o.len() == 2
        && o.get("errcode").and_then(Value::as_str) == Some(code)
        && o.get("error").and_then(Value::as_str).is_some_and(|s| !s.is_empty());
    if ok {
        Ok(())
    } else {
        Err(format!("want an {code} error envelope, got {}", String::from_utf8_lossy(out)))
    }
}

/// The typed input of a vector, when its JSON fits the type exactly: it deserialises and
/// serialises back to the same JSON value.
fn fit<I: Serialize + DeserializeOwned>(raw: &str) -> Option<I> {
    let typed: I = serde_json::from_str(raw).ok()?;
    let back: Value = serde_json::to_value(&typed).ok()?;
    let orig: Value = serde_json::from_str(raw).ok()?;
    (back == orig).then_some(typed)
}

/// Runs a typed call and compares its answer, serialised again, with the expected envelope.
fn check_typed<O: Serialize>(v: &Vector, got: Result<O, Error>) -> Result<(), String> {
    match (got, &v.expect, &v.expect_error) {
        (Ok(o), Some(expect), _) => {
            let s = format!("{{\"result\":{}}}", serde_json::to_string(&o).map_err(|e| e.to_string())?);
            if s == want_result(expect) {
                Ok(())
            } else {
                Err(format!("typed: got  {s}\n       want {}", want_result(expect)))
            }
        }
        (Err(Error::Module { errcode, message }), _, Some(code)) => {
            if errcode == *code && !message.is_empty() {
                Ok(())
            } else {
                Err(format!("typed: want {code}, got {errcode}: {message}"))
            }
        }
        (Ok(o), None, Some(code)) => {
            Err(format!("typed: want {code}, got {}", serde_json::to_string(&o).unwrap_or_default()))
        }
        (Err(e), _, _) => Err(format!("typed: {e}")),
        (Ok(_), None, None) => unreachable!("checked: one of expect and expect_error"),
    }
}

/// The typed form of a vector, if one fits: Some(result of the comparison).
fn run_typed(v: &Vector) -> Option<Result<(), String>> {
    let e = engine();
    let raw = v.input.get();
    Some(match v.op.as_str() {
        "parse_claim" => check_typed(v, e.parse_claim(&fit(raw)?)),
        "plan_fanout" => check_typed(v, e.plan_fanout(&fit(raw)?)),
        "select_keys" => check_typed(v, e.select_keys(&fit(raw)?)),
        "complete_client" => check_typed(v, e.complete_client(&fit(raw)?)),
        "complete_federation" => check_typed(v, e.complete_federation(&fit(raw)?)),
        "classify_claim" => check_typed(v, e.classify_claim(&fit(raw)?)),
        "tracker_run" => check_typed(v, e.tracker_run(&fit(raw)?)),
        "complete_upstream" => check_typed(v, e.complete_upstream(&fit(raw)?)),
        op => Err(format!("unknown op {op}")),
    })
}

fn run_raw(v: &Vector) -> Result<(), String> {
    let out = engine().invoke(&v.op, v.input.get().as_bytes()).map_err(|e| format!("invoke: {e}"))?;
    match (&v.expect, &v.expect_error) {
        (Some(expect), _) => {
            let want = want_result(expect);
            if out == want.as_bytes() {
                Ok(())
            } else {
                Err(format!("invoke: got  {}\n        want {want}", String::from_utf8_lossy(&out)))
            }
        }
        (None, Some(code)) => check_error_envelope(&out, code).map_err(|e| format!("invoke: {e}")),
        (None, None) => unreachable!(),
    }
}

/// The steps of a tracker_run vector through a tracker handle (vectors README, "tracker_run
/// vectors"): typed when the whole input fits, raw otherwise. Some(true) if it went typed.
fn run_tracker_steps(v: &Vector) -> Result<bool, String> {
    #[derive(Deserialize)]
    struct RawRun {
        config: Option<Box<RawValue>>,
        steps: Vec<RawStep>,
    }
    #[derive(Deserialize)]
    struct RawStep {
        op: String,
        input: Box<RawValue>,
    }
    let e = engine();
    let typed: Option<TrackerRunInput> = fit(v.input.get());
    let run: RawRun = match serde_json::from_str(v.input.get()) {
        Ok(r) => r,
        Err(_) => return Ok(false), // not of that shape at all: the whole-run comparison covers it
    };
    let config = run.config.as_ref().map_or("", |c| c.get());
    let created = match &typed {
        Some(t) => e.tracker(&t.config.clone().unwrap_or_default()),
        None => e.tracker_raw(config.as_bytes()),
    };
    let mut tracker = match created {
        Ok(t) => t,
        Err(Error::Module { errcode, .. }) => {
            return match &v.expect_error {
                Some(code) if *code == errcode && run.steps.is_empty() => Ok(typed.is_some()),
                _ => Err(format!("tracker: refused with {errcode}")),
            };
        }
        Err(err) => return Err(format!("tracker: {err}")),
    };
    if v.expect_error.is_some() && run.steps.is_empty() {
        return Err("tracker: created, yet the vector expects an error and has no step".into());
    }
    let n = run.steps.len();
    for (i, step) in run.steps.iter().enumerate() {
        let out: Vec<u8> = match (&typed, step.op.as_str()) {
            (Some(t), _) => {
                let result = match &t.steps[i] {
                    TrackerStep::Plan(p) => tracker.plan(p).map(StepResult::Plan),
                    TrackerStep::Observe(o) => tracker.observe(o).map(StepResult::Observe),
                };
                match result {
                    Ok(r) => format!("{{\"result\":{}}}", serde_json::to_string(&r).unwrap()).into_bytes(),
                    Err(Error::Module { errcode, message }) => {
                        serde_json::json!({"errcode": errcode, "error": message}).to_string().into_bytes()
                    }
                    Err(err) => return Err(format!("step {i}: {err}")),
                }
            }
            (None, "plan") => tracker.plan_raw(step.input.get().as_bytes()).map_err(|e| e.to_string())?,
            (None, "observe") => {
                tracker.observe_raw(step.input.get().as_bytes()).map_err(|e| e.to_string())?
            }
            (None, _) => return Ok(false), // an unknown step op: the whole run fails, compared above
        };
        match (&v.expect, &v.expect_error) {
            (Some(Value::Array(items)), _) => {
                let want = want_result(&items[i]);
                if out != want.as_bytes() {
                    return Err(format!("step {i}: got {}\n want {want}", String::from_utf8_lossy(&out)));
                }
            }
            (_, Some(code)) if i == n - 1 => {
                check_error_envelope(&out, code).map_err(|e| format!("step {i}: {e}"))?
            }
            (_, Some(_)) => {
                if !out.starts_with(b"{\"result\":") {
                    return Err(format!(
                        "step {i} failed before the last: {}",
                        String::from_utf8_lossy(&out)
                    ));
                }
            }
            _ => return Err("tracker_run expect is not an array".into()),
        }
    }
    Ok(typed.is_some())
}

#[test]
fn every_vector_byte_identical() {
    let dir = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../../core/testdata/vectors");
    let mut files: Vec<PathBuf> = std::fs::read_dir(&dir)
        .unwrap_or_else(|e| panic!("{}: {e}", dir.display()))
        .map(|d| d.unwrap().path())
        .filter(|p| p.extension().is_some_and(|x| x == "json"))
        .filter(|p| p.file_name().is_some_and(|n| n != "pending_bugs.json"))
        .collect();
    files.sort();
    assert!(files.len() >= 9, "only {} vector files in {}", files.len(), dir.display());

    let mut ids = HashSet::new();
    let mut failures = Vec::new();
    let (mut total, mut typed, mut raw_only, mut steps_typed) = (0, 0, 0, 0);
    let mut per_op: BTreeMap<String, (usize, usize)> = BTreeMap::new();
    for file in &files {
        let name = file.file_name().unwrap().to_string_lossy().to_string();
        let text = std::fs::read_to_string(file).unwrap();
        let doc: VectorFile = serde_json::from_str(&text).unwrap_or_else(|e| panic!("{name}: {e}"));
        assert_eq!(doc.schema, 1, "{name}: schema");
        for v in &doc.vectors {
            total += 1;
            assert!(ids.insert(v.id.clone()), "duplicate id {}", v.id);
            assert!(OPERATIONS.contains(&v.op.as_str()), "{}: unknown op {}", v.id, v.op);
            assert!(
                v.expect.is_some() != v.expect_error.is_some(),
                "{}: exactly one of expect and expect_error",
                v.id
            );
            let mut fail = |what: String| failures.push(format!("{} ({name}): {what}", v.id));
            if let Err(e) = run_raw(v) {
                fail(e);
            }
            let entry = per_op.entry(v.op.clone()).or_default();
            match run_typed(v) {
                Some(Ok(())) => {
                    typed += 1;
                    entry.0 += 1;
                }
                Some(Err(e)) => fail(e),
                None => {
                    raw_only += 1;
                    entry.1 += 1;
                }
            }
            if v.op == "tracker_run" {
                match run_tracker_steps(v) {
                    Ok(true) => steps_typed += 1,
                    Ok(false) => {}
                    Err(e) => fail(format!("tracker steps: {e}")),
                }
            }
        }
    }
    eprintln!(
        "{total} vectors: every one through invoke; {typed} also through the typed API, {raw_only} whose input \
         the types cannot express (malformed on purpose) through invoke only; {steps_typed} tracker \
         runs also step by step through a typed Tracker"
    );
    for (op, (t, r)) in &per_op {
        eprintln!("  {op}: {t} typed, {r} invoke only");
    }
    assert!(failures.is_empty(), "{} of {total} vectors failed:\n{}", failures.len(), failures.join("\n"));
    assert!(total >= 250, "only {total} vectors");
    // Every operation's well-formed vectors fit the types: each op has typed vectors.
    for op in OPERATIONS {
        assert!(per_op.get(op).is_some_and(|(t, _)| *t > 0), "no vector of {op} went through the typed API");
    }
}
