// Package federation is keyclaim's side of the Matrix server-server API: the server's signing
// identity, X-Matrix request signing and verification, server discovery and the outgoing
// federation client with per-destination backoff.
//
// It implements, from the Matrix specification (v1.19):
//
//   - appendices, "Signing JSON", "Canonical JSON" and "Unpadded Base64": [SigningKey.SignJSON]
//     and [VerifyJSON], checked against the appendix's "Cryptographic Test Vectors";
//   - server-server API, "Retrieving server keys" (keys_server.yaml): a persistent ed25519
//     signing key ([LoadOrCreateSigningKey]) and the signed GET /_matrix/key/v2/server answer
//     ([SigningKey.KeyServerResponse], [KeyServerHandler]); fetching and checking another
//     server's keys ([ParseServerKeys], [Client.FetchServerKeys]);
//   - server-server API, "Request Authentication": the X-Matrix Authorization header
//     ([SignRequest], [ParseXMatrix]) and the verification of incoming requests ([Verifier]),
//     with keys cached no longer than their valid_until_ts (capped at 7 days);
//   - server-server API, "Resolving server names" and "TLS": IP literals, explicit ports,
//     /.well-known/matrix/server delegation with its caching rules, SRV records
//     _matrix-fed._tcp and the deprecated _matrix._tcp, port 8448, certificates checked against
//     the name the spec says ([Resolver]); plus static routes for private federations and tests
//     ([StaticRoutes]), the only way to reach a server over plain HTTP;
//   - the client of POST /_matrix/federation/v1/user/keys/claim and /user/keys/query
//     (user_keys.yaml) that the claim fan-out of BRIEF section 4 uses ([Client], [FanOut]):
//     answers are size-limited (by a bound that grows with the devices asked) and returned as
//     they came, to be judged by the core; failures before an answer become core.Failure
//     values; a destination that keeps failing is backed off exponentially and fails fast with
//     "Not ready for retry", as Synapse does.
//
// Nothing here trusts a remote answer: the client returns status and body, and the core walks
// the request, not the answer. FEDERATION-NOTES.md says why this package is written here rather
// than taken from a library.
package federation
