// Package core is the claim engine of keyclaim: Matrix one-time-key claiming as proposed by
// MSC4072, where every requested (user, device) gets an answer.
//
// It implements, with the standard library only and without I/O, clocks or randomness:
//
//   - identifiers of the Matrix specification appendices (user IDs, server names, device IDs,
//     algorithms, key IDs), validated once when parsed;
//   - parsing and validation of claim requests for POST /_matrix/client/v3/keys/claim and
//     POST /_matrix/federation/v1/user/keys/claim ([ParseClaimRequest]);
//   - the federation fan-out plan ([PlanFanout]);
//   - claim selection over a device's keys ([SelectKey], [DeviceInventory.Claim]);
//   - completion of the client and federation responses, sanitising remote answers by walking
//     the request ([CompleteClient], [CompleteFederation]), in the modes [ModeMSC4072] and
//     [ModeLegacy];
//   - the client side: per-device classification of a claim response ([ClassifyClaim]) and a
//     bounded retry tracker with exponential backoff ([Tracker]);
//   - deterministic JSON output (canonical JSON: sorted keys, compact, minimal escaping; numbers
//     inside key objects keep their literal text), so that every runtime that embeds this
//     package, natively or as WebAssembly, answers byte for byte the same.
//
// Every operation is also reachable as JSON in, JSON out through [Invoke], which is what the
// WebAssembly module exports and what the shared test vectors in testdata/vectors exercise.
package core
