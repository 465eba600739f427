//go:build !linux

package store

import "os"

var fdatasync = func(f *os.File) error { return f.Sync() }
