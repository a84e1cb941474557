//! The inputs and outputs of the operations (bindings/ABI.md section 8), as serde types.
//!
//! Maps are `BTreeMap`s, so their keys come out sorted by code point; struct fields are declared
//! in alphabetical order, so serialising an output with `serde_json` gives back the module's
//! canonical JSON byte for byte. Claimed keys are [`Key`]s, which keep their JSON text exactly.
//! Optional input members are `Option`s that are left out when `None`.

use std::collections::BTreeMap;
use std::fmt;

use serde::de::{self, Deserializer};
use serde::ser::Serializer;
use serde::{Deserialize, Serialize};
use serde_json::value::RawValue;

/// A claimed key value, kept as the exact JSON text it arrived in: a string
/// (`"j3fR3Hem..."`) or a signed key object (`{"key":"...","signatures":{...}}`, canonical, its
/// numbers keeping their literal text). The module drops anything that is not a key, so what it
/// answers is always one of those two.
#[derive(Clone, Serialize, Deserialize)]
#[serde(transparent)]
pub struct Key(Box<RawValue>);

impl Key {
    /// A key from its JSON text (e.g. `{"key":"..."}` or `"..."`); fails if it is not JSON.
    pub fn from_json(json: &str) -> Result<Key, serde_json::Error> {
        RawValue::from_string(json.to_owned()).map(Key)
    }

    /// An unsigned key: the JSON string of `key`.
    pub fn string(key: &str) -> Key {
        // Serialising a &str cannot fail.
        Key(RawValue::from_string(serde_json::to_string(key).unwrap_or_default()).unwrap())
    }

    /// The key's JSON text.
    pub fn as_json(&self) -> &str {
        self.0.get()
    }

    /// The key's value: the string itself for an unsigned key, the `key` member of a signed one.
    pub fn value(&self) -> Option<String> {
        #[derive(Deserialize)]
        #[serde(untagged)]
        enum Form {
            Plain(String),
            Signed { key: String },
        }
        match serde_json::from_str(self.0.get()).ok()? {
            Form::Plain(s) | Form::Signed { key: s } => Some(s),
        }
    }
}

impl PartialEq for Key {
    fn eq(&self, other: &Key) -> bool {
        self.0.get() == other.0.get()
    }
}

impl Eq for Key {}

impl fmt::Debug for Key {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "Key({})", self.0.get())
    }
}

impl fmt::Display for Key {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.0.get())
    }
}

/// The devices a claim asks for: user ID → device ID → algorithm.
pub type RequestedKeys = BTreeMap<String, BTreeMap<String, String>>;

/// Claimed keys: user ID → device ID → key ID (`algorithm:id`) → key. A device with no key maps
/// to an empty object.
pub type ClaimedKeys = BTreeMap<String, BTreeMap<String, BTreeMap<String, Key>>>;

/// A claim request as a client sends it (REQ): `{"one_time_keys": {...}, "timeout": ms}`.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct ClaimRequest {
    /// user ID → device ID → algorithm
    pub one_time_keys: RequestedKeys,
    /// milliseconds; absent means the default (10,000)
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub timeout: Option<i64>,
}

impl ClaimRequest {
    /// A request without a timeout.
    pub fn new(one_time_keys: RequestedKeys) -> ClaimRequest {
        ClaimRequest { one_time_keys, timeout: None }
    }

    /// Adds one device to the request.
    pub fn with(mut self, user_id: &str, device_id: &str, algorithm: &str) -> ClaimRequest {
        self.one_time_keys
            .entry(user_id.to_owned())
            .or_default()
            .insert(device_id.to_owned(), algorithm.to_owned());
        self
    }
}

/// An HTTP body inside an input (ABI section 7): its text, or its bytes in base64 when they are
/// not UTF-8. Serialised as the member `body` or `body_base64` of the input that holds it.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub enum Body {
    /// `"body"`: the body's text.
    #[serde(rename = "body")]
    Text(String),
    /// `"body_base64"`: the body's bytes in standard base64 with padding.
    #[serde(rename = "body_base64")]
    Base64(String),
}

impl Body {
    /// The body of `bytes`: as text when they are UTF-8, in base64 otherwise (so the module judges
    /// exactly the bytes received).
    pub fn from_bytes(bytes: &[u8]) -> Body {
        match std::str::from_utf8(bytes) {
            Ok(s) => Body::Text(s.to_owned()),
            Err(_) => Body::Base64(base64(bytes)),
        }
    }
}

impl From<&str> for Body {
    fn from(s: &str) -> Body {
        Body::Text(s.to_owned())
    }
}

impl From<String> for Body {
    fn from(s: String) -> Body {
        Body::Text(s)
    }
}

impl From<&[u8]> for Body {
    fn from(b: &[u8]) -> Body {
        Body::from_bytes(b)
    }
}

impl From<Vec<u8>> for Body {
    fn from(b: Vec<u8>) -> Body {
        match String::from_utf8(b) {
            Ok(s) => Body::Text(s),
            Err(e) => Body::Base64(base64(e.as_bytes())),
        }
    }
}

/// Standard base64 (RFC 4648) with padding.
fn base64(data: &[u8]) -> String {
    const ALPHABET: &[u8; 64] = b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/";
    let mut out = String::with_capacity(data.len().div_ceil(3) * 4);
    for chunk in data.chunks(3) {
        let b = [chunk[0], *chunk.get(1).unwrap_or(&0), *chunk.get(2).unwrap_or(&0)];
        let n = (u32::from(b[0]) << 16) | (u32::from(b[1]) << 8) | u32::from(b[2]);
        for i in 0..4 {
            if i <= chunk.len() {
                out.push(ALPHABET[(n >> (18 - 6 * i)) as usize & 63] as char);
            } else {
                out.push('=');
            }
        }
    }
    out
}

/// How incomplete answers are written (`mode`).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Mode {
    /// MSC4072 (the default): every requested device is answered, `{}` when it has no key.
    Msc4072,
    /// Spec v1.19: devices without a key are left out.
    Legacy,
}

/// Which endpoint a body was sent to (`flavour` of parse_claim).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Flavour {
    /// `POST /_matrix/client/v3/keys/claim` (the default)
    Client,
    /// `POST /_matrix/federation/v1/user/keys/claim`
    Federation,
}

/// The limits of parse_claim; 0 or `None` means the default.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct ParseLimits {
    /// default 10,000
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub default_timeout_ms: Option<i64>,
    /// default 4 MiB
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub max_body_bytes: Option<i64>,
    /// default 50,000 (user, device) pairs
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub max_pairs: Option<i64>,
    /// default 60,000
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub max_timeout_ms: Option<i64>,
}

/// Input of parse_claim (ABI 8.1). The result is the canonical [`ClaimRequest`].
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct ParseClaimInput {
    /// the HTTP body of the claim
    #[serde(flatten)]
    pub body: Body,
    /// client (default) or federation
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub flavour: Option<Flavour>,
    /// this server; required for the federation flavour
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub server_name: Option<String>,
    /// the raw `?timeout=` query parameter
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub query_timeout: Option<String>,
    /// size and timeout limits
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub limits: Option<ParseLimits>,
}

impl ParseClaimInput {
    /// A client claim body with the default limits.
    pub fn client(body: impl Into<Body>) -> ParseClaimInput {
        ParseClaimInput {
            body: body.into(),
            flavour: None,
            server_name: None,
            query_timeout: None,
            limits: None,
        }
    }
}

/// Input of plan_fanout (ABI 8.2).
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct PlanFanoutInput {
    /// this server
    pub server_name: String,
    /// the client's request
    pub request: ClaimRequest,
}

/// Result of plan_fanout: this server's part, and the body of the federation claim to send to
/// each remote server.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct FanoutPlan {
    /// the local users (no timeout)
    pub local: ClaimRequest,
    /// server name → the exact body of its federation claim
    pub remote: BTreeMap<String, ClaimRequest>,
}

/// One one-time key of an inventory.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct InventoryKey {
    /// upload order, non-negative
    pub batch: i64,
    /// the key
    pub key: Key,
    /// `algorithm:id`
    pub key_id: String,
}

/// A fallback key of an inventory.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct FallbackKey {
    /// the key
    pub key: Key,
    /// `algorithm:id`
    pub key_id: String,
    /// whether it was handed out (default false)
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub used: Option<bool>,
}

/// The keys of one device. The module's answer always has both arrays.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct DeviceInventory {
    /// at most one per algorithm
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub fallback_keys: Option<Vec<FallbackKey>>,
    /// one-time keys
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub one_time_keys: Option<Vec<InventoryKey>>,
}

/// user ID → device ID → keys
pub type Inventory = BTreeMap<String, BTreeMap<String, DeviceInventory>>;

/// Input of select_keys (ABI 8.3).
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct SelectKeysInput {
    /// the keys available
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub inventory: Option<Inventory>,
    /// the claims, applied in order
    pub requests: Vec<ClaimRequest>,
}

/// Result of select_keys: the inventory left and the keys each request claimed.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Selection {
    /// the inventory after all requests
    pub inventory: Inventory,
    /// per request, the keys claimed
    pub results: Vec<ClaimedKeys>,
}

/// A failed server: in a complete_client input, a failure the host met before any answer; in a
/// result, what a client is told.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Failure {
    /// a Matrix errcode, when known
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub errcode: Option<String>,
    /// for people
    pub message: String,
    /// the HTTP status (e.g. 504 for a timeout)
    pub status: u16,
}

/// What became of one federation claim (`remote` of complete_client).
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(untagged)]
pub enum RemoteResult {
    /// No answer: unreachable, timed out, backed off.
    Failure {
        /// what went wrong
        failure: Failure,
    },
    /// The remote server's HTTP answer.
    Answer {
        /// its HTTP status (100-599)
        status: u16,
        /// its body
        #[serde(flatten)]
        body: Body,
    },
}

impl RemoteResult {
    /// The remote server's HTTP answer.
    pub fn answer(status: u16, body: impl Into<Body>) -> RemoteResult {
        RemoteResult::Answer { status, body: body.into() }
    }

    /// A failure met before any answer.
    pub fn failure(status: u16, message: impl Into<String>) -> RemoteResult {
        RemoteResult::Failure { failure: Failure { errcode: None, message: message.into(), status } }
    }
}

/// Input of complete_client (ABI 8.4).
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct CompleteClientInput {
    /// this server
    pub server_name: String,
    /// the client's request
    pub request: ClaimRequest,
    /// msc4072 (default) or legacy
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub mode: Option<Mode>,
    /// the keys claimed from this server's store
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub local: Option<ClaimedKeys>,
    /// server name → what became of its federation claim
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub remote: Option<BTreeMap<String, RemoteResult>>,
}

/// The answer to a client's claim (complete_client, complete_upstream): serialise it with
/// `serde_json` to get the response body.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct ClaimResponse {
    /// server name → why it is not answered
    pub failures: BTreeMap<String, Failure>,
    /// the keys, every requested device of a server that did not fail
    pub one_time_keys: ClaimedKeys,
}

/// Input of complete_federation (ABI 8.5).
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct CompleteFederationInput {
    /// this server
    pub server_name: String,
    /// the remote server's request; every user must be on `server_name`
    pub request: ClaimRequest,
    /// msc4072 (default) or legacy
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub mode: Option<Mode>,
    /// the keys claimed from this server's store
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub local: Option<ClaimedKeys>,
}

/// The answer to another server's claim (complete_federation).
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct FederationResponse {
    /// the keys
    pub one_time_keys: ClaimedKeys,
}

/// Input of classify_claim (ABI 8.6).
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct ClassifyClaimInput {
    /// what the client asked
    pub request: ClaimRequest,
    /// the answer it got
    #[serde(flatten)]
    pub body: Body,
}

/// What a claim answer means for one device.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Outcome {
    /// A key was claimed.
    Claimed {
        /// the key
        key: Key,
        /// `algorithm:id`
        key_id: String,
    },
    /// The device has no key (`{}` or absent).
    NoKeys,
    /// Its server is in `failures`.
    ServerFailed,
}

#[derive(Serialize, Deserialize)]
#[serde(bound(serialize = "K: Serialize", deserialize = "K: Deserialize<'de>"))]
struct OutcomeRepr<K> {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    key: Option<K>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    key_id: Option<String>,
    outcome: String,
}

impl Serialize for Outcome {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        let (key, key_id, outcome) = match self {
            Outcome::Claimed { key, key_id } => (Some(key), Some(key_id.clone()), "claimed"),
            Outcome::NoKeys => (None, None, "no_keys"),
            Outcome::ServerFailed => (None, None, "server_failed"),
        };
        OutcomeRepr { key, key_id, outcome: outcome.to_owned() }.serialize(s)
    }
}

impl<'de> Deserialize<'de> for Outcome {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Outcome, D::Error> {
        let r = OutcomeRepr::<Key>::deserialize(d)?;
        match (r.outcome.as_str(), r.key, r.key_id) {
            ("claimed", Some(key), Some(key_id)) => Ok(Outcome::Claimed { key, key_id }),
            ("no_keys", None, None) => Ok(Outcome::NoKeys),
            ("server_failed", None, None) => Ok(Outcome::ServerFailed),
            (o, ..) => Err(de::Error::custom(format!("unexpected outcome {o:?} or members"))),
        }
    }
}

/// user ID → device ID → outcome
pub type Outcomes = BTreeMap<String, BTreeMap<String, Outcome>>;

/// Result of classify_claim.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Classification {
    /// every requested device
    pub outcomes: Outcomes,
}

/// A tracker's configuration (ABI section 9); every member optional.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct TrackerConfig {
    /// default 15,000
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub base_backoff_ms: Option<i64>,
    /// default 900,000
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub max_backoff_ms: Option<i64>,
    /// default 10,000 devices and servers remembered
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub max_entries: Option<i64>,
    /// the client's own server (its failures do not back it off)
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub server_name: Option<String>,
}

/// Input of a tracker's plan step.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct PlanInput {
    /// the time now, in milliseconds
    pub now_ms: i64,
    /// what the client wants to claim
    pub request: ClaimRequest,
}

/// Result of a plan step: the devices backed off, and the request to send for the others.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Plan {
    /// user ID → device ID → when it may be retried (ms)
    pub deferred: BTreeMap<String, BTreeMap<String, i64>>,
    /// the `one_time_keys` of the next claim request
    pub one_time_keys: RequestedKeys,
}

/// Input of a tracker's observe step.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct ObserveInput {
    /// the time now, in milliseconds
    pub now_ms: i64,
    /// the request that was sent
    pub request: ClaimRequest,
    /// the claim answer received
    #[serde(flatten)]
    pub body: Body,
}

/// Result of an observe step: classify_claim's outcomes and the tracker's size.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Observation {
    /// every requested device
    pub outcomes: Outcomes,
    /// the number of devices and servers remembered
    pub tracked: u64,
}

/// One step of tracker_run.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "op", content = "input", rename_all = "lowercase")]
pub enum TrackerStep {
    /// a plan step
    Plan(PlanInput),
    /// an observe step
    Observe(ObserveInput),
}

/// Input of tracker_run (ABI 8.7).
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct TrackerRunInput {
    /// the tracker's configuration
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub config: Option<TrackerConfig>,
    /// the steps, in order
    pub steps: Vec<TrackerStep>,
}

/// The result of one tracker step.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum StepResult {
    /// of a plan step
    Plan(Plan),
    /// of an observe step
    Observe(Observation),
}

impl Serialize for StepResult {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        match self {
            StepResult::Plan(p) => p.serialize(s),
            StepResult::Observe(o) => o.serialize(s),
        }
    }
}

impl<'de> Deserialize<'de> for StepResult {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<StepResult, D::Error> {
        // Keys must be read from the JSON text itself, so the step is buffered as text.
        let raw = Box::<RawValue>::deserialize(d)?;
        if let Ok(p) = serde_json::from_str(raw.get()) {
            return Ok(StepResult::Plan(p));
        }
        serde_json::from_str(raw.get()).map(StepResult::Observe).map_err(de::Error::custom)
    }
}

/// Input of complete_upstream (ABI 8.8). The result is a [`ClaimResponse`].
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct CompleteUpstreamInput {
    /// the proxied server
    pub server_name: String,
    /// the client's request
    pub request: ClaimRequest,
    /// msc4072 (default) or legacy
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub mode: Option<Mode>,
    /// the upstream server's answer
    #[serde(flatten)]
    pub body: Body,
}

/// The `{"handle": N}` of keyclaim_tracker_new.
#[derive(Deserialize)]
pub(crate) struct NewTracker {
    pub(crate) handle: u32,
}

/// The error envelope.
#[derive(Deserialize)]
pub(crate) struct ErrorEnvelope {
    pub(crate) errcode: String,
    pub(crate) error: String,
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn base64_pads() {
        assert_eq!(base64(b""), "");
        assert_eq!(base64(b"\xff"), "/w==");
        assert_eq!(base64(b"ab"), "YWI=");
        assert_eq!(base64(b"abc"), "YWJj");
        assert_eq!(base64(b"abcd"), "YWJjZA==");
        assert_eq!(Body::from_bytes(b"\xff\xfe"), Body::Base64("//4=".into()));
        assert_eq!(Body::from_bytes(b"{}"), Body::Text("{}".into()));
    }

    #[test]
    fn key_keeps_its_text() {
        let k = Key::from_json(r#"{"key":"abc","n":1.0e+02}"#).unwrap();
        assert_eq!(serde_json::to_string(&k).unwrap(), r#"{"key":"abc","n":1.0e+02}"#);
        assert_eq!(k.value().as_deref(), Some("abc"));
        assert_eq!(Key::string("x\"y").as_json(), r#""x\"y""#);
        assert_eq!(Key::string("x").value().as_deref(), Some("x"));
    }

    #[test]
    fn outcome_is_canonical() {
        let o = Outcome::Claimed { key: Key::string("k"), key_id: "a:b".into() };
        let s = serde_json::to_string(&o).unwrap();
        assert_eq!(s, r#"{"key":"k","key_id":"a:b","outcome":"claimed"}"#);
        assert_eq!(serde_json::from_str::<Outcome>(&s).unwrap(), o);
        assert_eq!(serde_json::to_string(&Outcome::NoKeys).unwrap(), r#"{"outcome":"no_keys"}"#);
        assert!(serde_json::from_str::<Outcome>(r#"{"outcome":"no_keys","key":"x"}"#).is_err());
    }
}
