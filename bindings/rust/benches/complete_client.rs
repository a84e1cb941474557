//! complete_client at 1, 100 and 1,000 devices: the typed API (`Engine::complete_client`: serde
//! encoding of the input, the call, decoding of the answer into `ClaimResponse`) and the typed
//! input with the answer left as JSON (`Engine::result_json`, what a homeserver sends on) against
//! the raw module call on the same engine (`Engine::invoke` on the input's bytes, answer left as
//! bytes). The three alternate call by call so that they see the same machine load. Each call is
//! timed in wall time and in the thread's CPU time (CLOCK_THREAD_CPUTIME_ID, Linux), which a
//! busy machine disturbs less; medians are printed as a Markdown table. Run: `make bench-rust`
//! (or `cargo bench --bench complete_client`).

use std::collections::BTreeMap;
use std::time::{Duration, Instant};

use keyclaim::{ClaimRequest, ClaimedKeys, CompleteClientInput, Config, Engine, Key, RemoteResult, MODULE};

/// A claim of `n` devices: half on this server (claimed from the store), half on a remote server
/// (its answer carries a signed key per device), ten devices per user.
pub fn input(n: usize) -> CompleteClientInput {
    let mut request = ClaimRequest::default();
    let mut local: ClaimedKeys = BTreeMap::new();
    let mut remote_keys = serde_json::Map::new();
    for i in 0..n {
        let remote = i % 2 == 1;
        let server = if remote { "remote.example" } else { "example.org" };
        let user = format!("@user{}:{server}", i / 10);
        let device = format!("DEVICE{i:05}");
        request = request.with(&user, &device, "signed_curve25519");
        let key_id = format!("signed_curve25519:AAAA{i:05}");
        let key = format!(
            r#"{{"key":"zKbLg+NrIjpnagy+pIY6uPL4ZwEG2v+8F9lmgs{i:05}","signatures":{{"{user}":{{"ed25519:{device}":"FLWxXqGbwrb8SM3Y795eB6OA8bwBcoMZFXBqnTn58AYWZSqiD45tlBVcDa2L7RwdKXebW/VzDlnfVJ+9jok1Bw"}}}}}}"#
        );
        if remote {
            let devices = remote_keys.entry(user).or_insert_with(|| serde_json::json!({}));
            devices[&device] =
                serde_json::json!({ key_id: serde_json::from_str::<serde_json::Value>(&key).unwrap() });
        } else {
            local
                .entry(user)
                .or_default()
                .entry(device)
                .or_default()
                .insert(key_id, Key::from_json(&key).unwrap());
        }
    }
    let body = serde_json::json!({ "one_time_keys": remote_keys }).to_string();
    CompleteClientInput {
        server_name: "example.org".into(),
        request,
        mode: None,
        local: Some(local),
        remote: Some(BTreeMap::from([("remote.example".to_owned(), RemoteResult::answer(200, body))])),
    }
}

/// The CPU time this thread has run, in nanoseconds: clock_gettime(CLOCK_THREAD_CPUTIME_ID) from
/// the C library std already links (Linux x86_64 and aarch64 layout of timespec).
fn cpu_ns() -> u64 {
    #[repr(C)]
    struct Timespec {
        sec: i64,
        nsec: i64,
    }
    extern "C" {
        fn clock_gettime(clock: i32, tp: *mut Timespec) -> i32;
    }
    const CLOCK_THREAD_CPUTIME_ID: i32 = 3;
    let mut t = Timespec { sec: 0, nsec: 0 };
    // SAFETY: t is a valid timespec for the call to fill.
    let rc = unsafe { clock_gettime(CLOCK_THREAD_CPUTIME_ID, &mut t) };
    assert_eq!(rc, 0, "clock_gettime");
    t.sec as u64 * 1_000_000_000 + t.nsec as u64
}

fn median(mut v: Vec<Duration>) -> Duration {
    v.sort();
    v[v.len() / 2]
}

fn fmt(d: Duration) -> String {
    let us = d.as_secs_f64() * 1e6;
    if us >= 1000.0 {
        format!("{:.2} ms", us / 1000.0)
    } else {
        format!("{us:.0} µs")
    }
}

fn main() {
    // One instance: both forms run on the same instance, one call at a time.
    let engine = Engine::with_config(MODULE, Config { max_instances: 1, ..Config::default() }).unwrap();
    println!("| devices | input | typed `complete_client` | typed input, JSON result (`result_json`) | raw `invoke` | typed / raw | `result_json` / raw | calls each |");
    println!("|---|---|---|---|---|---|---|---|");
    for (n, rounds) in [(1usize, 3000usize), (100, 600), (1000, 150)] {
        let input = input(n);
        let bytes = serde_json::to_vec(&input).unwrap();
        // the typed answer is the raw one, and every device is answered
        let typed = engine.complete_client(&input).unwrap();
        let raw = engine.invoke("complete_client", &bytes).unwrap();
        let json = engine.result_json("complete_client", &input).unwrap();
        assert_eq!(format!("{{\"result\":{}}}", serde_json::to_string(&typed).unwrap()).as_bytes(), &raw[..]);
        assert_eq!(format!("{{\"result\":{}}}", String::from_utf8(json).unwrap()).as_bytes(), &raw[..]);
        assert_eq!(typed.one_time_keys.values().map(|d| d.len()).sum::<usize>(), n);
        assert!(typed.failures.is_empty());
        for _ in 0..rounds / 10 {
            // warm-up
            engine.complete_client(&input).unwrap();
            engine.invoke("complete_client", &bytes).unwrap();
        }
        let mut wall: [Vec<Duration>; 3] = Default::default();
        let mut cpu: [Vec<Duration>; 3] = Default::default();
        for _ in 0..rounds {
            for (k, (w, c)) in wall.iter_mut().zip(cpu.iter_mut()).enumerate() {
                let (start, start_cpu) = (Instant::now(), cpu_ns());
                match k {
                    0 => drop(std::hint::black_box(
                        engine.complete_client(std::hint::black_box(&input)).unwrap(),
                    )),
                    1 => drop(std::hint::black_box(
                        engine.result_json("complete_client", std::hint::black_box(&input)).unwrap(),
                    )),
                    _ => drop(std::hint::black_box(
                        engine.invoke("complete_client", std::hint::black_box(&bytes)).unwrap(),
                    )),
                }
                c.push(Duration::from_nanos(cpu_ns() - start_cpu));
                w.push(start.elapsed());
            }
        }
        let w: Vec<Duration> = wall.into_iter().map(median).collect();
        let c: Vec<Duration> = cpu.into_iter().map(median).collect();
        let ratio = |a: Duration, b: Duration| a.as_secs_f64() / b.as_secs_f64();
        println!(
            "| {n} | {:.1} KB | {} (CPU {}) | {} (CPU {}) | {} (CPU {}) | {:.2}× (CPU {:.2}×) | {:.2}× (CPU {:.2}×) | {rounds} |",
            bytes.len() as f64 / 1000.0,
            fmt(w[0]), fmt(c[0]), fmt(w[1]), fmt(c[1]), fmt(w[2]), fmt(c[2]),
            ratio(w[0], w[2]), ratio(c[0], c[2]), ratio(w[1], w[2]), ratio(c[1], c[2]),
        );
    }
}
