//go:build !unix

package bench

func flushDirty() {}
