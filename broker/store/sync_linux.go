package store

import (
	"os"
	"syscall"
)

// fdatasync flushes f's data (and the metadata needed to read it back).
var fdatasync = func(f *os.File) error { // a var for fault-injection tests
	return syscall.Fdatasync(int(f.Fd()))
}
