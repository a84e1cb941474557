// Package embedded carries the keyclaim WebAssembly module inside the Go bindings, so that
// programs using package keyclaimwasm need no file at run time.
//
// keyclaim.wasm in this directory is generated and gitignored: `make wasm` builds
// dist/keyclaim.wasm from ./wasm and copies it here. Until then the package still compiles (so
// that go build, go vet and everything importing the bindings keep working on a fresh checkout)
// and [Wasm] reports the module missing.
package embedded

import "embed"

// files holds this directory. The pattern is "*" rather than "keyclaim.wasm" because a pattern
// that matches no file is a compile error: "*" always matches this source file, and matches
// keyclaim.wasm once the build has copied it here.
//
//go:embed *
var files embed.FS

// Name is the file name of the embedded module.
const Name = "keyclaim.wasm"

// Wasm returns the embedded module, or ok false when the build has not copied it here (run
// `make wasm`).
func Wasm() (wasm []byte, ok bool) {
	b, err := files.ReadFile(Name)
	if err != nil || len(b) == 0 {
		return nil, false
	}
	return b, true
}
