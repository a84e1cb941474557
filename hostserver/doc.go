// Package hostserver implements the keyclaim keys server: a deployable HTTP service on
// labstack/echo v4 that serves the end-to-end encryption key endpoints of the Matrix
// client-server API (v1.19, "End-to-End Encryption": POST /_matrix/client/v3/keys/upload,
// /keys/query and /keys/claim, and their r0 paths) and of the server-server API ("End-to-End
// Encryption": POST /_matrix/federation/v1/user/keys/claim and /user/keys/query), with the
// complete claim answers of MSC4072 (BRIEF sections 2 to 6).
//
// The claim logic is core's, run natively or through the WebAssembly module ([Engine]); keys
// live in a [store.Store] (SQLite or PostgreSQL). Access tokens are checked by an
// [Authenticator]: a static token file reloaded on SIGHUP ([TokenFileAuth]) or the whoami
// endpoint of the homeserver beside which keyclaim runs ([WhoamiAuth]).
//
// Federation (package federation): the server has an ed25519 signing key, created on first
// start, and serves it at GET /_matrix/key/v2/server. Inbound federation requests must carry a
// valid X-Matrix authorization ([FederationAuthenticator], a federation.Verifier), else they are
// answered 401 M_UNAUTHORIZED. Remote users of the client endpoints are reached through
// [Federation], a federation.Client: one signed request per remote server, all in parallel,
// bounded by the request's timeout, answers size-limited and never trusted (the core walks the
// request, not the answer), failing servers backed off. --federation=false turns it all off.
//
// Every error is a Matrix error {"errcode", "error"}; the mapping from errcode to HTTP status
// lives in one function. The server also answers GET /_matrix/client/versions, /healthz,
// /readyz and /metrics (Prometheus), and the CORS preflight of the client-server API.
//
// Build a server with [New] from a [Config] ([LoadConfig] reads flags, KEYCLAIM_* environment
// variables and a config file), serve it with [Server.Start] and stop it with
// [Server.Shutdown].
package hostserver
