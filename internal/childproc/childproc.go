// Package childproc starts, stops and kills the processes of wxcancel's
// benchmark and chaos programs (nats-server, the simulator, the service)
// and makes sure none outlives its parent; and, on the child's side, runs
// the programs' nats-server child mode.
package childproc

import (
	"bufio"
	"context"
	"errors"
	"fmt"
	"io"
	"net"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"sync"
	"syscall"
	"time"
)

// Proc is a process the program started: a child mode of the program
// itself (nats, sim) or the service under test. Every proc is registered so that
// every exit path (a failed phase, Ctrl-C, a panic in main) can end it.
type Proc struct {
	name  string
	cmd   *exec.Cmd
	stdin io.WriteCloser // closing it tells a child mode to exit
	// Lines has the stdout lines after the first (of a child that keeps
	// reporting), until it closes.
	Lines   chan string
	logPath string
	done    chan struct{} // closed when the process has exited
	waitErr error
}

var live struct {
	sync.Mutex
	procs map[*Proc]bool
}

// Start starts path with args and env, its stderr (and, unless
// firstLine, its stdout) appended to logPath. With firstLine it returns the
// first line the process prints on stdout, waiting at most timeout for it.
// Children run in their own process group, so that a Ctrl-C at the terminal
// reaches only the program, which then ends them in order; and they get
// SIGKILL if the program dies without cleaning up.
func Start(ctx context.Context, name, path string, args, env []string, logPath string, firstLine bool, timeout time.Duration) (*Proc, string, error) {
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
	p := &Proc{name: name, cmd: cmd, stdin: stdin, logPath: logPath, done: make(chan struct{}), Lines: make(chan string, 1024)}
	live.Lock()
	if live.procs == nil {
		live.procs = map[*Proc]bool{}
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
			case p.Lines <- r.Text():
			default: // nobody reads: drop
			}
		}
		if first {
			lines <- ""
		}
		close(p.Lines)
	}()
	t := time.NewTimer(timeout)
	defer t.Stop()
	select {
	case line := <-lines:
		if line == "" {
			p.Stop(2 * time.Second)
			return nil, "", fmt.Errorf("%s exited without reporting its address: %s", name, Tail(logPath, 10))
		}
		return p, line, nil
	case <-t.C:
		p.Stop(2 * time.Second)
		return nil, "", fmt.Errorf("%s did not start within %s: %s", name, timeout, Tail(logPath, 10))
	case <-ctx.Done():
		p.Stop(2 * time.Second)
		return nil, "", ctx.Err()
	}
}

// PID is the process's id.
func (p *Proc) PID() int { return p.cmd.Process.Pid }

// Done is closed once the process has exited.
func (p *Proc) Done() <-chan struct{} { return p.done }

// Kill ends the process at once with SIGKILL, as kill -9 does, and waits
// for it to be gone.
func (p *Proc) Kill() {
	_ = p.cmd.Process.Kill()
	<-p.done
}

// Exited reports whether the process has exited.
func (p *Proc) Exited() bool {
	select {
	case <-p.done:
		return true
	default:
		return false
	}
}

// Stop asks the process to end (stdin closed, SIGTERM) and kills it after
// grace. It returns the process's exit error, if any.
func (p *Proc) Stop(grace time.Duration) error {
	if p == nil {
		return nil
	}
	_ = p.stdin.Close()
	if !p.Exited() {
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

// StopAll ends every process still running, for the exit paths.
func StopAll() {
	live.Lock()
	ps := make([]*Proc, 0, len(live.procs))
	for p := range live.procs {
		ps = append(ps, p)
	}
	live.Unlock()
	var wg sync.WaitGroup
	for _, p := range ps {
		wg.Add(1)
		go func() { defer wg.Done(); _ = p.Stop(5 * time.Second) }()
	}
	wg.Wait()
}

// Tail returns the last n lines of a log file, for error messages.
func Tail(path string, n int) string {
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

// Running is the number of processes started and not yet exited.
func Running() int {
	live.Lock()
	defer live.Unlock()
	return len(live.procs)
}

// AwaitOK waits until GET url answers 200 (a child's readiness), at most
// limit; it fails at once when the process exits first.
func (p *Proc) AwaitOK(ctx context.Context, url string, limit time.Duration) error {
	deadline := time.Now().Add(limit)
	client := &http.Client{Timeout: time.Second}
	for {
		resp, err := client.Get(url)
		if err == nil {
			resp.Body.Close()
			if resp.StatusCode == http.StatusOK {
				return nil
			}
		}
		switch {
		case p.Exited():
			return fmt.Errorf("%s exited before it was ready:%s", p.name, Tail(p.logPath, 8))
		case time.Now().After(deadline):
			return fmt.Errorf("%s was not ready within %s:%s", p.name, limit, Tail(p.logPath, 8))
		}
		select {
		case <-ctx.Done():
			return ctx.Err()
		case <-time.After(50 * time.Millisecond):
		}
	}
}

// FreeAddr returns a loopback address whose port is free now, for a child
// to listen on.
func FreeAddr() (string, error) {
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		return "", err
	}
	defer ln.Close()
	return ln.Addr().String(), nil
}

// BuildService builds ./cmd/wxcancel of the module the calling program runs
// in into dir, with the OpenSSL signer when openssl is set (the caller
// passes wxpay.OpenSSLSigner: the service then signs with its own signer),
// and returns the binary's path. It fails outside the module.
func BuildService(ctx context.Context, dir string, openssl bool) (string, error) {
	gomod, err := exec.CommandContext(ctx, "go", "env", "GOMOD").Output()
	if err != nil {
		return "", fmt.Errorf("go env GOMOD: %w", err)
	}
	mod := strings.TrimSpace(string(gomod))
	root := filepath.Dir(mod)
	if mod == "" || mod == os.DevNull || root == "." {
		return "", errors.New("not inside the wxcancel module: run from the repository, or pass -service-bin")
	}
	bin := filepath.Join(dir, "wxcancel")
	args := []string{"build", "-o", bin}
	if openssl {
		args = append(args, "-tags", "openssl")
	}
	cmd := exec.CommandContext(ctx, "go", append(args, "./cmd/wxcancel")...)
	cmd.Dir = root
	if out, err := cmd.CombinedOutput(); err != nil {
		return "", fmt.Errorf("go build ./cmd/wxcancel: %w\n%s", err, out)
	}
	return bin, nil
}

// Env is this process's environment without the variables that would
// change what a child or the service does (WXCANCEL_*, WXPAY_*, NATS_*,
// GOMAXPROCS), plus extra: a run's children get only what it sets.
func Env(extra ...string) []string {
	var env []string
	for _, kv := range os.Environ() {
		k, _, _ := strings.Cut(kv, "=")
		if strings.HasPrefix(k, "WXCANCEL_") || strings.HasPrefix(k, "WXPAY_") || strings.HasPrefix(k, "NATS_") || k == "GOMAXPROCS" {
			continue
		}
		env = append(env, kv)
	}
	return append(env, extra...)
}
