//go:build unix

package bench

import "syscall"

// flushDirty writes the machine's dirty pages out (sync(2)).
func flushDirty() { syscall.Sync() }
