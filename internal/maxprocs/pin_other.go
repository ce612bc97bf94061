//go:build !linux

package maxprocs

import (
	"errors"
	"time"
)

// threadCPUs would set the CPUs of the process's threads: only on Linux.
type threadCPUs struct{}

// currentThreadCPUs returns no CPUs: the governor pins nothing here.
func currentThreadCPUs() (threadCPUs, []int) { return threadCPUs{}, nil }

func (threadCPUs) pin(int) error { return errors.ErrUnsupported }
func (threadCPUs) unpin() error  { return nil }

// cpuIdle has no source here.
func cpuIdle(map[int]bool) map[int]time.Duration { return nil }
