// The inputs and results of the module's operations: the shapes of bindings/ABI.md section 8
// (and section 9 for trackers), member names exactly as the module reads and writes them.

/** A Matrix user ID, e.g. `@alice:example.org`. */
export type UserId = string;
/** A device ID, e.g. `ALICEDEV`. */
export type DeviceId = string;
/** A key algorithm, e.g. `signed_curve25519`. */
export type Algorithm = string;
/** A key ID, `algorithm:id`, e.g. `signed_curve25519:AAAAHg`. */
export type KeyId = string;
/** A server name, e.g. `example.org`. */
export type ServerName = string;

/**
 * A claimed key value (ABI section 8, KEY): a string, or a signed key object with a string `key`.
 * Numbers inside a signed key keep their literal text in the module's output; JSON.parse reads
 * them as JavaScript numbers (use `invoke` for the exact bytes).
 */
export type Key = string | { key: string; signatures?: Record<string, Record<string, string>>; [member: string]: unknown };

/** A claim request as a client sends it (REQ): `timeout` in milliseconds, default 10000. */
export interface ClaimRequest {
  one_time_keys: Record<UserId, Record<DeviceId, Algorithm>>;
  timeout?: number;
}

/** Claimed keys: `{user: {device: {key_id: KEY}}}` (a device with no key: `{}`). */
export type ClaimedKeys = Record<UserId, Record<DeviceId, Record<KeyId, Key>>>;

/** A JSON value given as an object body, serialised with JSON.stringify. */
export type JsonBody = { [member: string]: unknown } | unknown[];

/**
 * An HTTP body (ABI section 7): its text, its bytes (sent as text when they are valid UTF-8,
 * otherwise as `body_base64`, so the module judges the exact bytes), or a JSON value that is
 * serialised with JSON.stringify.
 */
export type Body = string | Uint8Array | ArrayBuffer | JsonBody;

/** Exactly one of `body` (any Body) and `body_base64` (standard base64 of the bytes). */
export type BodyField = { body: Body; body_base64?: never } | { body_base64: string; body?: never };

/** `"msc4072"` (default: every requested device answered) or `"legacy"` (spec v1.19). */
export type Mode = 'msc4072' | 'legacy';

/** parse_claim limits (ABI 8.1). */
export interface Limits {
  max_body_bytes?: number;
  max_pairs?: number;
  default_timeout_ms?: number;
  max_timeout_ms?: number;
}

/** Input of parse_claim (ABI 8.1). */
export type ParseClaimInput = BodyField & {
  flavour?: 'client' | 'federation';
  server_name?: ServerName;
  query_timeout?: string;
  limits?: Limits;
};
/** Result of parse_claim: the canonical request (no `timeout` for the federation flavour). */
export type ParseClaimResult = ClaimRequest;

/** Input of plan_fanout (ABI 8.2). */
export interface PlanFanoutInput {
  server_name: ServerName;
  request: ClaimRequest;
}
/** Result of plan_fanout: the local part and one federation claim body per remote server. */
export interface PlanFanoutResult {
  local: { one_time_keys: Record<UserId, Record<DeviceId, Algorithm>> };
  remote: Record<ServerName, { one_time_keys: Record<UserId, Record<DeviceId, Algorithm>> }>;
}

/** One one-time key of an inventory device (ABI 8.3). */
export interface InventoryOneTimeKey {
  key_id: KeyId;
  batch: number;
  key: Key;
}
/** One fallback key of an inventory device (ABI 8.3); `used` defaults to false on input. */
export interface InventoryFallbackKey {
  key_id: KeyId;
  key: Key;
  used?: boolean;
}
/** An in-memory key inventory (ABI 8.3). */
export type Inventory = Record<UserId, Record<DeviceId, {
  one_time_keys?: InventoryOneTimeKey[];
  fallback_keys?: InventoryFallbackKey[];
}>>;
/** The inventory as select_keys answers it: every device with both arrays, every `used` set. */
export type InventoryResult = Record<UserId, Record<DeviceId, {
  one_time_keys: InventoryOneTimeKey[];
  fallback_keys: Required<InventoryFallbackKey>[];
}>>;

/** Input of select_keys (ABI 8.3). */
export interface SelectKeysInput {
  inventory?: Inventory;
  requests: ClaimRequest[];
}
/** Result of select_keys: the inventory after all requests, and the keys each request claimed. */
export interface SelectKeysResult {
  inventory: InventoryResult;
  results: ClaimedKeys[];
}

/** A failure the host met before any answer (unreachable, timed out, backed off). */
export interface HostFailure {
  status: number;
  errcode?: string;
  message: string;
}

/** What became of one federation claim (ABI 8.4): the HTTP answer, or a failure. */
export type RemoteAnswer = ({ status: number } & BodyField) | { failure: HostFailure };

/** A failure as the module reports it: `errcode` only when it is a valid one. */
export interface Failure {
  errcode?: string;
  message: string;
  status: number;
}

/** Input of complete_client (ABI 8.4). */
export interface CompleteClientInput {
  server_name: ServerName;
  request: ClaimRequest;
  mode?: Mode;
  local?: ClaimedKeys;
  remote?: Record<ServerName, RemoteAnswer>;
}
/** Result of complete_client and complete_upstream: both members always present. */
export interface CompleteClientResult {
  failures: Record<ServerName, Failure>;
  one_time_keys: ClaimedKeys;
}

/** Input of complete_federation (ABI 8.5): every requested user must be on `server_name`. */
export interface CompleteFederationInput {
  server_name: ServerName;
  request: ClaimRequest;
  mode?: Mode;
  local?: ClaimedKeys;
}
/** Result of complete_federation. */
export interface CompleteFederationResult {
  one_time_keys: ClaimedKeys;
}

/** What a claim answer means for one device (ABI 8.6). */
export type Outcome =
  | { outcome: 'claimed'; key: Key; key_id: KeyId }
  | { outcome: 'no_keys' }
  | { outcome: 'server_failed' };
/** Outcomes of every requested device. */
export type Outcomes = Record<UserId, Record<DeviceId, Outcome>>;

/** Input of classify_claim (ABI 8.6): what the client asked and the answer it got. */
export type ClassifyClaimInput = BodyField & { request: ClaimRequest };
/** Result of classify_claim. */
export interface ClassifyClaimResult {
  outcomes: Outcomes;
}

/** A tracker configuration (ABI 9); every member optional, none negative. */
export interface TrackerConfig {
  server_name?: ServerName;
  max_entries?: number;
  base_backoff_ms?: number;
  max_backoff_ms?: number;
}
/** Input of a tracker's plan step. */
export interface TrackerPlanInput {
  now_ms: number;
  request: ClaimRequest;
}
/** Result of plan: devices backed off (with when to retry) and the next request's keys. */
export interface TrackerPlanResult {
  deferred: Record<UserId, Record<DeviceId, number>>;
  one_time_keys: Record<UserId, Record<DeviceId, Algorithm>>;
}
/** Input of a tracker's observe step: the claim answer received at `now_ms`. */
export type TrackerObserveInput = BodyField & { now_ms: number; request: ClaimRequest };
/** Result of observe: classify_claim's outcomes plus the number of entries remembered. */
export interface TrackerObserveResult {
  outcomes: Outcomes;
  tracked: number;
}

/** One step of tracker_run. */
export type TrackerStep =
  | { op: 'plan'; input: TrackerPlanInput }
  | { op: 'observe'; input: TrackerObserveInput };
/** Input of tracker_run (ABI 8.7). */
export interface TrackerRunInput {
  config?: TrackerConfig;
  steps: TrackerStep[];
}
/** Result of tracker_run: each step's result, in order. */
export type TrackerRunResult = (TrackerPlanResult | TrackerObserveResult)[];

/** Input of complete_upstream (ABI 8.8): the upstream homeserver's answer to complete. */
export type CompleteUpstreamInput = BodyField & {
  server_name: ServerName;
  request: ClaimRequest;
  mode?: Mode;
};
/** Result of complete_upstream: as complete_client. */
export type CompleteUpstreamResult = CompleteClientResult;

/** The module's operations (exports `keyclaim_<op>`). */
export type Operation =
  | 'parse_claim'
  | 'plan_fanout'
  | 'select_keys'
  | 'complete_client'
  | 'complete_federation'
  | 'classify_claim'
  | 'tracker_run'
  | 'complete_upstream';

/** Raw JSON input: a JSON text or its UTF-8 bytes, passed to the module unchanged. */
export type RawInput = string | Uint8Array;
