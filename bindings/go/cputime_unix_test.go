//go:build unix

package keyclaimwasm

import (
	"syscall"
	"time"
)

// cpuTime returns the CPU time (user and system) the process has used so far. On a busy machine
// it measures the work done, where wall time also counts the wait for a CPU.
func cpuTime() (time.Duration, bool) {
	var ru syscall.Rusage
	if err := syscall.Getrusage(syscall.RUSAGE_SELF, &ru); err != nil {
		return 0, false
	}
	return time.Duration(ru.Utime.Nano() + ru.Stime.Nano()), true
}
