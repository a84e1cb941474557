// Command jumpthread rewrites the jumps of a WebAssembly module built by Go's wasm backend so
// that they run faster, without changing what the module does: `jumpthread in.wasm out.wasm`.
// `make wasm` runs it over dist/keyclaim.wasm; see thread.go for the rewrites and DESIGN.md
// ("Why does make wasm rewrite the module's jumps?") for the measurements.
package main

import (
	"fmt"
	"os"
)

func main() {
	if len(os.Args) != 3 {
		fmt.Fprintln(os.Stderr, "usage: jumpthread IN.wasm OUT.wasm (OUT may be IN)")
		os.Exit(2)
	}
	in, err := os.ReadFile(os.Args[1])
	if err != nil {
		fmt.Fprintln(os.Stderr, "jumpthread:", err)
		os.Exit(1)
	}
	out, st, err := Thread(in)
	if err != nil {
		fmt.Fprintf(os.Stderr, "jumpthread: %s: %v\n", os.Args[1], err)
		os.Exit(1)
	}
	if err := os.WriteFile(os.Args[2], out, 0o644); err != nil {
		fmt.Fprintln(os.Stderr, "jumpthread:", err)
		os.Exit(1)
	}
	fmt.Printf("jumpthread: %d of %d functions in Go's dispatch shape; %d of %d jumps made direct, %d entries given the shortcut (%d had it)\n",
		st.Dispatched, st.Functions, st.Forward, st.Jumps, st.Entries, st.Already)
}
