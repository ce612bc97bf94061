package main

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"os"
	"strconv"
	"strings"
	"syscall"
	"time"
	"unsafe"
)

// clockTick is the unit of utime and stime in /proc/<pid>/stat (USER_HZ,
// 100 on every Linux the benchmark targets).
const clockTick = 10 * time.Millisecond

// procCPU returns the user plus system CPU time a process has used, all its
// threads (past and present) included.
func procCPU(pid int) (time.Duration, error) {
	b, err := os.ReadFile("/proc/" + strconv.Itoa(pid) + "/stat")
	if err != nil {
		return 0, err
	}
	return parseStatCPU(b)
}

// parseStatCPU reads utime and stime (fields 14 and 15) from the content of
// /proc/<pid>/stat. The command name (field 2) may contain spaces and
// parentheses, so fields are counted from the last ')'.
func parseStatCPU(b []byte) (time.Duration, error) {
	i := bytes.LastIndexByte(b, ')')
	if i < 0 {
		return 0, errors.New("malformed /proc stat: no ')'")
	}
	f := strings.Fields(string(b[i+1:]))
	// f[0] is field 3 (state): utime is field 14, stime field 15.
	if len(f) < 13 {
		return 0, errors.New("malformed /proc stat: too few fields")
	}
	ut, err1 := strconv.ParseUint(f[11], 10, 64)
	st, err2 := strconv.ParseUint(f[12], 10, 64)
	if err := errors.Join(err1, err2); err != nil {
		return 0, fmt.Errorf("malformed /proc stat: %w", err)
	}
	return time.Duration(ut+st) * clockTick, nil
}

// procHWM returns a process's peak resident set size (VmHWM), in bytes.
func procHWM(pid int) (int64, error) {
	b, err := os.ReadFile("/proc/" + strconv.Itoa(pid) + "/status")
	if err != nil {
		return 0, err
	}
	return parseStatusKB(b, "VmHWM")
}

// parseStatusKB reads a "Key:  123 kB" line of /proc/<pid>/status, in bytes.
func parseStatusKB(b []byte, key string) (int64, error) {
	for line := range strings.SplitSeq(string(b), "\n") {
		k, v, ok := strings.Cut(line, ":")
		if !ok || k != key {
			continue
		}
		f := strings.Fields(v)
		if len(f) != 2 || f[1] != "kB" {
			return 0, fmt.Errorf("malformed %s line %q", key, line)
		}
		n, err := strconv.ParseInt(f[0], 10, 64)
		if err != nil {
			return 0, fmt.Errorf("malformed %s line %q", key, line)
		}
		return n * 1024, nil
	}
	return 0, fmt.Errorf("no %s in /proc status", key)
}

// selfCPU returns the CPU time this process has used.
func selfCPU() time.Duration {
	var ru syscall.Rusage
	if err := syscall.Getrusage(syscall.RUSAGE_SELF, &ru); err != nil {
		return 0
	}
	return time.Duration(ru.Utime.Nano() + ru.Stime.Nano())
}

// threadCPU returns the CPU time of the calling OS thread (the caller locks
// its goroutine to the thread), to the nanosecond: clock_gettime with
// CLOCK_THREAD_CPUTIME_ID brings the running thread's time up to date, where
// getrusage(RUSAGE_THREAD) can lag by a scheduler tick.
func threadCPU() time.Duration {
	const clockThreadCPUTime = 3 // CLOCK_THREAD_CPUTIME_ID
	var ts syscall.Timespec
	if _, _, errno := syscall.Syscall(syscall.SYS_CLOCK_GETTIME, clockThreadCPUTime, uintptr(unsafe.Pointer(&ts)), 0); errno != 0 {
		return 0
	}
	return time.Duration(ts.Nano())
}

// machineCPU returns the busy and total CPU time of the whole machine, all
// cores, from the first line of /proc/stat.
func machineCPU() (busy, total time.Duration, err error) {
	b, err := os.ReadFile("/proc/stat")
	if err != nil {
		return 0, 0, err
	}
	return parseMachineCPU(b)
}

func parseMachineCPU(b []byte) (busy, total time.Duration, err error) {
	line, _, _ := strings.Cut(string(b), "\n")
	f := strings.Fields(line)
	if len(f) < 5 || f[0] != "cpu" {
		return 0, 0, errors.New("malformed /proc/stat")
	}
	var idle uint64
	var sum uint64
	for i, v := range f[1:] {
		n, err := strconv.ParseUint(v, 10, 64)
		if err != nil {
			return 0, 0, errors.New("malformed /proc/stat")
		}
		if i >= 8 { // guest and guest_nice are already in user and nice
			break
		}
		sum += n
		if i == 3 || i == 4 { // idle, iowait
			idle += n
		}
	}
	return time.Duration(sum-idle) * clockTick, time.Duration(sum) * clockTick, nil
}

// waitQuiet waits, up to limit, until the machine is nearly idle (less than
// 15% of a core busy over a quarter second), so that a run does not start
// while something else (a build, another test) still runs. It returns the
// busy fraction last seen, in cores.
func waitQuiet(ctx context.Context, limit time.Duration) float64 {
	deadline := time.Now().Add(limit)
	for {
		b0, _, err := machineCPU()
		if err != nil {
			return 0
		}
		start := time.Now()
		select {
		case <-ctx.Done():
			return 0
		case <-time.After(250 * time.Millisecond):
		}
		b1, _, _ := machineCPU()
		cores := float64(b1-b0) / float64(time.Since(start))
		if cores < 0.15 || time.Now().After(deadline) {
			return cores
		}
	}
}
