package main

import (
	_ "maunium.net/go/mautrix/crypto"
)

func main() {}
