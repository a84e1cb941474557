//! complete_client at 1, 100 and 1,000 devices: the typed API (`Engine::complete_client`: serde
//! encoding of the input, the call, decoding of the answer into `ClaimResponse`) against the raw
//! module call on the same engine (`Engine::invoke` on the input's bytes, answer left as bytes).
//! Calls alternate typed/raw so that both see the same machine load; medians are printed as a
//! Markdown table. Run: `make bench-rust` (or `cargo bench --bench complete_client`).

use std::collections::BTreeMap;
use std::time::{Duration, Instant};

use keyclaim::{ClaimRequest, ClaimedKeys, CompleteClientInput, Config, Engine, Key, RemoteResult, MODULE};

/// A claim of `n` devices: half on this server (claimed from the store), half on a remote server
/// (its answer carries a signed key per device), ten devices per user.
fn input(n: usize) -> CompleteClientInput {
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
            devices[&device] = serde_json::json!({ key_id: serde_json::from_str::<serde_json::Value>(&key).unwrap() });
        } else {
            local.entry(user).or_default().entry(device).or_default().insert(key_id, Key::from_json(&key).unwrap());
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
    println!("| devices | input | typed `complete_client` | raw `invoke` | typed / raw | calls each |");
    println!("|---|---|---|---|---|---|");
    for (n, rounds) in [(1usize, 3000usize), (100, 600), (1000, 120)] {
        let input = input(n);
        let bytes = serde_json::to_vec(&input).unwrap();
        // the typed answer is the raw one, and every device is answered
        let typed = engine.complete_client(&input).unwrap();
        let raw = engine.invoke("complete_client", &bytes).unwrap();
        assert_eq!(format!("{{\"result\":{}}}", serde_json::to_string(&typed).unwrap()).as_bytes(), &raw[..]);
        assert_eq!(typed.one_time_keys.values().map(|d| d.len()).sum::<usize>(), n);
        assert!(typed.failures.is_empty());
        for _ in 0..rounds / 10 {
            // warm-up
            engine.complete_client(&input).unwrap();
            engine.invoke("complete_client", &bytes).unwrap();
        }
        let (mut t, mut r) = (Vec::with_capacity(rounds), Vec::with_capacity(rounds));
        for _ in 0..rounds {
            let start = Instant::now();
            std::hint::black_box(engine.complete_client(std::hint::black_box(&input)).unwrap());
            t.push(start.elapsed());
            let start = Instant::now();
            std::hint::black_box(engine.invoke("complete_client", std::hint::black_box(&bytes)).unwrap());
            r.push(start.elapsed());
        }
        let (mt, mr) = (median(t), median(r));
        println!(
            "| {n} | {:.1} KB | {} | {} | {:.2}× | {rounds} |",
            bytes.len() as f64 / 1000.0,
            fmt(mt),
            fmt(mr),
            mt.as_secs_f64() / mr.as_secs_f64()
        );
    }
}
