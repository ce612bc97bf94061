package main

import (
	"bufio"
	"bytes"
	"context"
	"errors"
	"fmt"
	"io"
	"os"
	"os/exec"
	"strconv"
	"strings"
	"sync"
	"syscall"
	"time"
	"unsafe"
)

// proc is a process the benchmark started: a child mode of this binary
// (nats, sim) or the service under test. Every proc is registered so that
// every exit path (a failed phase, Ctrl-C, a panic in main) can end it.
type proc struct {
	name    string
	cmd     *exec.Cmd
	stdin   io.WriteCloser // closing it tells a child mode to exit
	lines   chan string    // stdout lines after the first (those of a child that keeps reporting)
	logPath string
	done    chan struct{} // closed when the process has exited
	waitErr error
}

var live struct {
	sync.Mutex
	procs map[*proc]bool
}

// startProc starts path with args and env, its stderr (and, unless
// firstLine, its stdout) appended to logPath. With firstLine it returns the
// first line the process prints on stdout, waiting at most timeout for it.
// Children run in their own process group, so that a Ctrl-C at the terminal
// reaches only the benchmark, which then ends them in order; and they get
// SIGKILL if the benchmark dies without cleaning up.
func startProc(ctx context.Context, name, path string, args, env []string, logPath string, firstLine bool, timeout time.Duration) (*proc, string, error) {
	logf, err := os.OpenFile(logPath, os.O_CREATE|os.O_WRONLY|os.O_APPEND, 0o600)
	if err != nil {
		return nil, "", err
	}
	defer logf.Close() // the child holds its own descriptor
	cmd := exec.Command(path, args...)
	cmd.Env = env
	cmd.Stderr = logf
	cmd.SysProcAttr = &syscall.SysProcAttr{Setpgid: true, Pdeathsig: syscall.SIGKILL}
	stdin, err := cmd.StdinPipe()
	if err != nil {
		return nil, "", err
	}
	var stdout io.ReadCloser
	if firstLine {
		if stdout, err = cmd.StdoutPipe(); err != nil {
			return nil, "", err
		}
	} else {
		cmd.Stdout = logf
	}
	p := &proc{name: name, cmd: cmd, stdin: stdin, logPath: logPath, done: make(chan struct{}), lines: make(chan string, 1024)}
	live.Lock()
	if live.procs == nil {
		live.procs = map[*proc]bool{}
	}
	if err := cmd.Start(); err != nil {
		live.Unlock()
		return nil, "", fmt.Errorf("starting %s: %w", name, err)
	}
	live.procs[p] = true
	live.Unlock()
	go func() {
		p.waitErr = cmd.Wait()
		live.Lock()
		delete(live.procs, p)
		live.Unlock()
		close(p.done)
	}()
	if !firstLine {
		return p, "", nil
	}
	lines := make(chan string, 1)
	go func() {
		r := bufio.NewScanner(stdout)
		first := true
		for r.Scan() {
			if first {
				lines <- strings.TrimSpace(r.Text())
				first = false
				continue
			}
			select {
			case p.lines <- r.Text():
			default: // nobody reads: drop
			}
		}
		if first {
			lines <- ""
		}
		close(p.lines)
	}()
	t := time.NewTimer(timeout)
	defer t.Stop()
	select {
	case line := <-lines:
		if line == "" {
			p.stop(2 * time.Second)
			return nil, "", fmt.Errorf("%s exited without reporting its address: %s", name, tail(logPath, 10))
		}
		return p, line, nil
	case <-t.C:
		p.stop(2 * time.Second)
		return nil, "", fmt.Errorf("%s did not start within %s: %s", name, timeout, tail(logPath, 10))
	case <-ctx.Done():
		p.stop(2 * time.Second)
		return nil, "", ctx.Err()
	}
}

func (p *proc) pid() int { return p.cmd.Process.Pid }

func (p *proc) exited() bool {
	select {
	case <-p.done:
		return true
	default:
		return false
	}
}

// stop asks the process to end (stdin closed, SIGTERM) and kills it after
// grace. It returns the process's exit error, if any.
func (p *proc) stop(grace time.Duration) error {
	if p == nil {
		return nil
	}
	_ = p.stdin.Close()
	if !p.exited() {
		_ = p.cmd.Process.Signal(syscall.SIGTERM)
	}
	t := time.NewTimer(grace)
	defer t.Stop()
	select {
	case <-p.done:
	case <-t.C:
		_ = p.cmd.Process.Kill()
		<-p.done
		return fmt.Errorf("%s did not stop within %s: killed", p.name, grace)
	}
	var ee *exec.ExitError
	if errors.As(p.waitErr, &ee) && ee.ExitCode() == -1 {
		return nil // ended by our signal
	}
	return p.waitErr
}

// stopAll ends every process still running, for the exit paths.
func stopAll() {
	live.Lock()
	ps := make([]*proc, 0, len(live.procs))
	for p := range live.procs {
		ps = append(ps, p)
	}
	live.Unlock()
	var wg sync.WaitGroup
	for _, p := range ps {
		wg.Add(1)
		go func() { defer wg.Done(); _ = p.stop(5 * time.Second) }()
	}
	wg.Wait()
}

// tail returns the last n lines of a log file, for error messages.
func tail(path string, n int) string {
	b, err := os.ReadFile(path)
	if err != nil {
		return "(no log)"
	}
	lines := strings.Split(strings.TrimRight(string(b), "\n"), "\n")
	if len(lines) > n {
		lines = lines[len(lines)-n:]
	}
	return "\n    " + strings.Join(lines, "\n    ")
}

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

// childEnv is the benchmark's environment without the variables that would
// change what a child or the service does, plus extra.
func childEnv(extra ...string) []string {
	var env []string
	for _, kv := range os.Environ() {
		k, _, _ := strings.Cut(kv, "=")
		if strings.HasPrefix(k, "WXCANCEL_") || strings.HasPrefix(k, "WXPAY_") || strings.HasPrefix(k, "NATS_") ||
			k == "GOMAXPROCS" || k == benchChildEnv {
			continue
		}
		env = append(env, kv)
	}
	return append(env, extra...)
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
