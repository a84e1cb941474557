//! The host's own behaviour: threads and the pool, traps, recycling, ABI checks, trackers, limits.

use std::collections::BTreeMap;
use std::sync::{Arc, Barrier, OnceLock};

use keyclaim::*;

fn engine() -> &'static Engine {
    static ENGINE: OnceLock<Engine> = OnceLock::new();
    ENGINE.get_or_init(|| Engine::new().expect("loading the embedded module"))
}

const PARSE_IN: &[u8] = br#"{"body":"{\"one_time_keys\":{\"@alice:example.org\":{\"ALICEDEV\":\"signed_curve25519\"},\"@bob:remote.example\":{\"BOBDEV\":\"signed_curve25519\"}},\"timeout\":5000}"}"#;
const PARSE_OUT: &[u8] = br#"{"result":{"one_time_keys":{"@alice:example.org":{"ALICEDEV":"signed_curve25519"},"@bob:remote.example":{"BOBDEV":"signed_curve25519"}},"timeout":5000}}"#;

#[test]
fn engine_and_tracker_are_send_and_sync() {
    fn send_sync<T: Send + Sync>() {}
    fn send<T: Send>() {}
    send_sync::<Engine>();
    send_sync::<Error>();
    send::<Tracker>();
}

/// A module of this crate's ABI (section 8.1's example, answered byte for byte).
#[test]
fn invoke_answers_the_abi_example() {
    assert_eq!(engine().invoke("parse_claim", PARSE_IN).unwrap(), PARSE_OUT);
}

/// One engine called from many threads at once: every answer right (each thread's request is its
/// own, so crossed answers would show), the pool bounded by max_instances, instances reused
/// rather than created per call, and calls running side by side (the requests are large enough,
/// a few milliseconds each, that threads overlap).
#[test]
fn one_engine_many_threads() {
    let engine = Engine::with_config(MODULE, Config { max_instances: 3, ..Config::default() }).unwrap();
    let threads = 8;
    let calls = 12;
    let barrier = Arc::new(Barrier::new(threads));
    let handles: Vec<_> = (0..threads)
        .map(|t| {
            let engine = engine.clone();
            let barrier = barrier.clone();
            std::thread::spawn(move || {
                barrier.wait();
                for i in 0..calls {
                    let mut req = ClaimRequest::default();
                    for d in 0..2000 {
                        let server = if d % 2 == 0 { "example.org" } else { "remote.example" };
                        req = req.with(
                            &format!("@u{t}x{i}y{}:{server}", d / 20),
                            &format!("D{d}"),
                            "signed_curve25519",
                        );
                    }
                    let plan = engine
                        .plan_fanout(&PlanFanoutInput {
                            server_name: "example.org".into(),
                            request: req.clone(),
                        })
                        .unwrap();
                    let mut together = plan.local.one_time_keys.clone();
                    together.extend(plan.remote["remote.example"].one_time_keys.clone());
                    assert_eq!(together, req.one_time_keys);
                    assert_eq!(plan.local.one_time_keys.len(), 100);
                    assert_eq!(engine.invoke("parse_claim", PARSE_IN).unwrap(), PARSE_OUT);
                }
            })
        })
        .collect();
    for h in handles {
        h.join().unwrap();
    }
    let stats = engine.stats();
    assert!(stats.instances <= 3, "{stats:?}");
    assert!(stats.created <= 3, "instances were created per call: {stats:?}");
    assert!(stats.created >= 2, "the calls never overlapped: {stats:?}");
    assert_eq!(stats.discarded, 0, "{stats:?}");
}

/// An instance that hits its memory cap traps; the error says so, the instance is discarded and
/// the next call on the same engine gets a fresh one and succeeds.
#[test]
fn trap_discards_the_instance_and_the_next_call_succeeds() {
    let engine = Engine::with_config(
        MODULE,
        Config { max_memory_bytes: 16 << 20, max_instances: 1, ..Config::default() },
    )
    .unwrap();
    let before = engine.stats();
    // A 24 MiB input cannot be allocated inside 16 MiB: keyclaim_alloc traps growing memory.
    let big = vec![b' '; 24 << 20];
    match engine.invoke("parse_claim", &big) {
        Err(Error::Trap { export, message }) => {
            assert_eq!(export, "keyclaim_alloc");
            assert!(!message.is_empty());
        }
        other => panic!("want a trap, got {other:?}"),
    }
    let after_trap = engine.stats();
    assert_eq!(after_trap.discarded, before.discarded + 1, "{after_trap:?}");
    assert_eq!(after_trap.instances, 0, "the broken instance left the pool: {after_trap:?}");
    assert_eq!(engine.invoke("parse_claim", PARSE_IN).unwrap(), PARSE_OUT);
    let after = engine.stats();
    assert_eq!(after.created, before.created + 1, "{after:?}");
    assert_eq!(after.instances, 1);
}

/// A trap inside an operation (not the allocator): a complete_client of 200,000 devices (a 7 MB
/// input, which fits) needs more than a 24 MiB cap.
#[test]
fn trap_inside_an_operation() {
    let engine = Engine::with_config(
        MODULE,
        Config { max_memory_bytes: 24 << 20, max_instances: 1, ..Config::default() },
    )
    .unwrap();
    let mut devices = BTreeMap::new();
    for i in 0..200_000 {
        devices.insert(format!("DEV{i:06}"), "signed_curve25519".to_owned());
    }
    let request = ClaimRequest::new(BTreeMap::from([("@alice:example.org".to_owned(), devices)]));
    let input = CompleteClientInput { server_name: "example.org".into(), request, ..Default::default() };
    match engine.complete_client(&input) {
        Err(Error::Trap { export, .. }) => assert_eq!(export, "keyclaim_complete_client"),
        other => panic!("want a trap, got {:?}", other.map(|r| r.one_time_keys.len())),
    }
    assert_eq!(engine.stats().discarded, 1);
    assert_eq!(engine.invoke("parse_claim", PARSE_IN).unwrap(), PARSE_OUT);
}

/// An instance that grew past recycle_memory_bytes is dropped after its call (which succeeded);
/// the next call gets a fresh one.
#[test]
fn grown_instance_is_recycled() {
    let engine = Engine::with_config(
        MODULE,
        Config { recycle_memory_bytes: 12 << 20, max_instances: 1, ..Config::default() },
    )
    .unwrap();
    let created = engine.stats().created;
    assert_eq!(engine.invoke("parse_claim", PARSE_IN).unwrap(), PARSE_OUT);
    assert_eq!(engine.stats().discarded, 0, "a small call must not recycle");
    // A 16 MiB body (over parse_claim's 4 MiB default limit, answered M_TOO_LARGE) grows memory.
    let body = "x".repeat(16 << 20);
    let input = serde_json::to_vec(&serde_json::json!({ "body": body })).unwrap();
    let out = engine.invoke("parse_claim", &input).unwrap();
    assert!(out.starts_with(br#"{"errcode":"M_TOO_LARGE""#), "{}", String::from_utf8_lossy(&out));
    let s = engine.stats();
    assert_eq!(s.discarded, 1, "{s:?}");
    assert_eq!(s.instances, 0, "{s:?}");
    assert_eq!(engine.invoke("parse_claim", PARSE_IN).unwrap(), PARSE_OUT);
    assert_eq!(engine.stats().created, created + 1);
}

/// A minimal module with the right exports' names but ABI version 2, encoded by hand.
fn module_with_abi_version(version: u8) -> Vec<u8> {
    fn section(id: u8, content: Vec<u8>) -> Vec<u8> {
        let mut s = vec![id, content.len() as u8];
        s.extend(content);
        s
    }
    fn name(s: &str) -> Vec<u8> {
        let mut v = vec![s.len() as u8];
        v.extend(s.as_bytes());
        v
    }
    let mut m = b"\0asm\x01\0\0\0".to_vec();
    m.extend(section(1, vec![2, 0x60, 0, 0, 0x60, 0, 1, 0x7f])); // types: ()->(), ()->i32
    m.extend(section(3, vec![2, 0, 1])); // functions
    m.extend(section(5, vec![1, 0, 1])); // memory: 1 page
    let mut exports = vec![3];
    exports.extend(name("memory"));
    exports.extend([2, 0]);
    exports.extend(name("_initialize"));
    exports.extend([0, 0]);
    exports.extend(name("keyclaim_abi_version"));
    exports.extend([0, 1]);
    m.extend(section(7, exports));
    m.extend(section(10, vec![2, 2, 0, 0x0b, 4, 0, 0x41, version, 0x0b])); // code
    m
}

#[test]
fn refuses_another_abi_version() {
    match Engine::from_bytes(&module_with_abi_version(2)) {
        Err(e @ Error::AbiVersion { found: 2, expected: 1 }) => {
            assert!(e.to_string().contains("ABI version 2"), "{e}");
        }
        Err(e) => panic!("want an ABI version error, got {e}"),
        Ok(_) => panic!("a module of ABI version 2 was accepted"),
    }
    // Version 1 with none of the other exports is refused too, naming what is missing.
    match Engine::from_bytes(&module_with_abi_version(1)) {
        Err(Error::Abi(m)) => assert!(m.contains("keyclaim_"), "{m}"),
        Err(e) => panic!("want an ABI error, got {e}"),
        Ok(_) => panic!("a module without the operations was accepted"),
    }
}

#[test]
fn refuses_what_is_not_a_module() {
    assert!(matches!(Engine::from_bytes(b"not wasm"), Err(Error::Instantiate(_))));
    assert!(matches!(Engine::from_file("/nonexistent/keyclaim.wasm"), Err(Error::Io(_))));
}

#[test]
fn from_file_loads_the_repository_module() {
    let path = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("../../dist/keyclaim.wasm");
    if !path.exists() {
        // a packaged crate outside the repository: the embedded module is all there is
        return;
    }
    let engine = Engine::from_file(&path).unwrap();
    assert_eq!(engine.invoke("parse_claim", PARSE_IN).unwrap(), PARSE_OUT);
}

#[test]
fn errors_carry_the_errcode() {
    let e = engine();
    let err = e.parse_claim(&ParseClaimInput::client("{not json")).unwrap_err();
    assert_eq!(err.errcode(), "M_NOT_JSON");
    assert_eq!(err.status(), 400);
    let body: serde_json::Value = serde_json::from_str(&err.to_matrix_json()).unwrap();
    assert_eq!(body["errcode"], "M_NOT_JSON");
    // the raw envelope of the same call is the module's, unchanged
    let raw = e.invoke("parse_claim", br#"{"body":"{not json"}"#).unwrap();
    assert!(raw.starts_with(br#"{"errcode":"M_NOT_JSON","error":""#));
    match envelope_result(&raw) {
        Err(Error::Module { errcode, message }) => {
            assert_eq!(errcode, "M_NOT_JSON");
            assert!(!message.is_empty());
        }
        other => panic!("{other:?}"),
    }
    // host-side errors
    assert!(matches!(e.invoke("no_such_op", b"{}"), Err(Error::UnknownOperation(_))));
    let huge = vec![b' '; MAX_INPUT_BYTES + 1];
    let err = e.invoke("parse_claim", &huge).unwrap_err();
    assert!(matches!(err, Error::TooLarge { .. }));
    assert_eq!(err.errcode(), "M_TOO_LARGE");
    assert_eq!(err.status(), 413);
}

#[test]
fn bodies_that_are_not_utf8_go_as_base64() {
    let req = ClaimRequest::default().with("@alice:example.org", "ALICEDEV", "signed_curve25519");
    let err = engine()
        .classify_claim(&ClassifyClaimInput { request: req, body: Body::from_bytes(b"\xff") })
        .unwrap_err();
    assert_eq!(err.errcode(), "M_NOT_JSON");
    // a remote answer that is not UTF-8 is that server's failure (502), not an error
    let req = ClaimRequest::default().with("@bob:remote.example", "BOBDEV", "signed_curve25519");
    let remote = BTreeMap::from([("remote.example".to_owned(), RemoteResult::answer(200, &b"\xff\xfe"[..]))]);
    let answer = engine()
        .complete_client(&CompleteClientInput {
            server_name: "example.org".into(),
            request: req,
            remote: Some(remote),
            ..Default::default()
        })
        .unwrap();
    assert_eq!(answer.failures["remote.example"].status, 502);
    assert!(answer.one_time_keys.is_empty());
}

#[test]
fn empty_input_is_passed_as_empty() {
    let out = engine().invoke("parse_claim", b"").unwrap();
    assert!(out.starts_with(br#"{"errcode":"M_NOT_JSON""#), "{}", String::from_utf8_lossy(&out));
}

/// A tracker keeps its state across calls, another tracker does not see it, and dropping it frees
/// the handle and gives the instance back.
#[test]
fn tracker_keeps_state_and_is_freed_on_drop() {
    let engine = Engine::with_config(MODULE, Config { max_instances: 1, ..Config::default() }).unwrap();
    let want = ClaimRequest::default().with("@dan:example.org", "DANDEV", "signed_curve25519");
    let answer = r#"{"one_time_keys":{"@dan:example.org":{"DANDEV":{}}}}"#;
    let mut t = engine
        .tracker(&TrackerConfig { server_name: Some("example.org".into()), ..Default::default() })
        .unwrap();
    let handle = t.handle();
    assert!(handle >= 1);
    assert_eq!(engine.stats().instances, 0, "the tracker's instance left the pool");
    // the pool serves other calls while the tracker holds its instance
    assert_eq!(engine.invoke("parse_claim", PARSE_IN).unwrap(), PARSE_OUT);
    let seen = t.observe(&ObserveInput { now_ms: 0, request: want.clone(), body: answer.into() }).unwrap();
    assert_eq!(seen.outcomes["@dan:example.org"]["DANDEV"], Outcome::NoKeys);
    assert_eq!(seen.tracked, 1);
    let plan = t.plan(&PlanInput { now_ms: 1, request: want.clone() }).unwrap();
    assert!(plan.one_time_keys.is_empty());
    assert_eq!(plan.deferred["@dan:example.org"]["DANDEV"], 15_000);
    let mut other = engine.tracker(&TrackerConfig::default()).unwrap();
    assert_eq!(
        other.plan(&PlanInput { now_ms: 1, request: want.clone() }).unwrap().one_time_keys,
        want.one_time_keys
    );
    drop(other);
    drop(t);
    let s = engine.stats();
    assert_eq!((s.instances, s.idle), (1, 1), "{s:?}");
    // a new tracker on a recycled instance starts fresh
    let mut t2 = engine.tracker_raw(b"").unwrap();
    let out = t2
        .plan_raw(format!(r#"{{"now_ms":2,"request":{}}}"#, serde_json::to_string(&want).unwrap()).as_bytes())
        .unwrap();
    assert!(out.starts_with(br#"{"result":{"deferred":{},"#), "{}", String::from_utf8_lossy(&out));
}

#[test]
fn tracker_config_errors_are_module_errors() {
    let err = engine().tracker(&TrackerConfig { max_entries: Some(-1), ..Default::default() }).unwrap_err();
    assert_eq!(err.errcode(), "M_INVALID_PARAM");
    let err = engine().tracker_raw(b"{\"bogus\":1}").unwrap_err();
    assert_eq!(err.errcode(), "M_BAD_JSON");
}

/// Calls into the kept input buffer and past it: small, then large, then small inputs on one
/// instance give the right answers (ABI section 5's buffer reuse).
#[test]
fn input_buffer_reuse() {
    let engine = Engine::with_config(MODULE, Config { max_instances: 1, ..Config::default() }).unwrap();
    let mut devices = BTreeMap::new();
    for i in 0..20_000 {
        devices.insert(format!("DEV{i:06}"), "signed_curve25519".to_owned());
    }
    let big = ClaimRequest::new(BTreeMap::from([("@alice:example.org".to_owned(), devices)]));
    for round in 0..3 {
        assert_eq!(engine.invoke("parse_claim", PARSE_IN).unwrap(), PARSE_OUT, "round {round}");
        let plan = engine
            .plan_fanout(&PlanFanoutInput { server_name: "example.org".into(), request: big.clone() })
            .unwrap();
        assert_eq!(plan.local.one_time_keys, big.one_time_keys);
    }
    assert_eq!(engine.stats().created, 1);
}

/// result_json: a typed input, the result's JSON text as the module wrote it; errors as for the
/// typed methods.
#[test]
fn result_json_is_the_envelopes_result() {
    let input = ParseClaimInput::client(
        r#"{"one_time_keys":{"@alice:example.org":{"ALICEDEV":"signed_curve25519"}}}"#,
    );
    let json = engine().result_json("parse_claim", &input).unwrap();
    assert_eq!(
        json,
        br#"{"one_time_keys":{"@alice:example.org":{"ALICEDEV":"signed_curve25519"}},"timeout":10000}"#
    );
    let raw = engine().invoke("parse_claim", &serde_json::to_vec(&input).unwrap()).unwrap();
    assert_eq!(envelope_result(&raw).unwrap(), &json[..]);
    let err = engine().result_json("parse_claim", &ParseClaimInput::client("[]")).unwrap_err();
    assert_eq!(err.errcode(), "M_BAD_JSON");
    assert!(matches!(engine().result_json("nope", &input), Err(Error::UnknownOperation(_))));
}

/// Every buffer is freed: thousands of calls with 20 KB inputs leave the instance's memory where
/// it was after a warm-up (a leak of the input or output buffers would add 20 KB or more a call,
/// over 60 MB in all).
#[test]
fn buffers_are_freed() {
    let engine = Engine::with_config(MODULE, Config { max_instances: 1, ..Config::default() }).unwrap();
    let mut req = ClaimRequest::default();
    for d in 0..500 {
        req = req.with("@alice:example.org", &format!("DEVICE{d:04}"), "signed_curve25519");
    }
    let input =
        serde_json::to_vec(&PlanFanoutInput { server_name: "example.org".into(), request: req }).unwrap();
    assert!(input.len() > 15_000, "{}", input.len());
    for _ in 0..300 {
        engine.invoke("plan_fanout", &input).unwrap();
    }
    let warm = engine.stats().idle_memory_bytes;
    for _ in 0..3000 {
        let out = engine.invoke("plan_fanout", &input).unwrap();
        assert!(out.starts_with(b"{\"result\":"));
    }
    let after = engine.stats();
    assert_eq!(after.created, 1, "{after:?}");
    assert!(
        after.idle_memory_bytes <= warm + (4 << 20),
        "memory grew from {warm} to {} bytes over 3,000 calls",
        after.idle_memory_bytes
    );
}
