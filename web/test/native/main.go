// Command native runs engine calls through the native Go core (core.Invoke), for the
// playground's end-to-end test: it reads a JSON array of {"op", "input"} (input a string: the
// exact bytes the page gave the WebAssembly module) on standard input and writes a JSON array of
// the envelopes core.Invoke answers, as strings, in the same order. The test then compares them
// byte for byte with what the module answered in Chromium.
package main

import (
	"encoding/json"
	"fmt"
	"os"

	"github.com/keyclaim/keyclaim/core"
)

type call struct {
	Op    string `json:"op"`
	Input string `json:"input"`
}

func main() {
	var calls []call
	if err := json.NewDecoder(os.Stdin).Decode(&calls); err != nil {
		fmt.Fprintf(os.Stderr, "native: reading the calls: %v\n", err)
		os.Exit(1)
	}
	out := make([]string, len(calls))
	for i, c := range calls {
		out[i] = string(core.Invoke(c.Op, []byte(c.Input)))
	}
	if err := json.NewEncoder(os.Stdout).Encode(out); err != nil {
		fmt.Fprintf(os.Stderr, "native: %v\n", err)
		os.Exit(1)
	}
}
