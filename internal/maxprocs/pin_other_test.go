//go:build !linux

package maxprocs

import "testing"

// onOneCPU: threads are never held on one CPU here.
func onOneCPU(*testing.T) bool { return false }
