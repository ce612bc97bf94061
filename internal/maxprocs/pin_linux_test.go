package maxprocs

import (
	"runtime"
	"sync"
	"testing"
	"time"

	"golang.org/x/sys/unix"
)

// threadSets returns the CPU set of every thread of the process.
func threadSets(t *testing.T) map[int]unix.CPUSet {
	t.Helper()
	tids, err := threads()
	if err != nil {
		t.Fatal(err)
	}
	sets := map[int]unix.CPUSet{}
	for _, tid := range tids {
		var s unix.CPUSet
		if err := unix.SchedGetaffinity(tid, &s); err == nil { // ESRCH: ended meanwhile
			sets[tid] = s
		}
	}
	return sets
}

// moreThreads makes the runtime start n more threads and keeps them until
// the returned function is called: n goroutines each locked to its own
// thread, the threads made after the call.
func moreThreads(n int) (release func()) {
	var ready, hold sync.WaitGroup
	hold.Add(1)
	for range n {
		ready.Add(1)
		go func() {
			runtime.LockOSThread()
			defer runtime.UnlockOSThread()
			ready.Done()
			hold.Wait()
		}()
	}
	ready.Wait()
	return hold.Done
}

func init() {
	onOneCPU = func(t *testing.T) bool {
		var first unix.CPUSet
		n := 0
		for _, s := range threadSets(t) {
			if s.Count() != 1 || (n > 0 && s != first) {
				return false
			}
			first = s
			n++
		}
		return n > 0
	}
}

func TestPinHoldsEveryThread(t *testing.T) {
	threads, cpus := currentThreadCPUs()
	if len(cpus) < 2 {
		t.Skip("the process may run on one CPU only: nothing to pin")
	}
	t.Cleanup(func() {
		if err := threads.unpin(); err != nil {
			t.Errorf("unpin: %v", err)
		}
	})
	before := moreThreads(4)
	defer before()
	cpu := cpus[len(cpus)-1]
	if err := threads.pin(cpu); err != nil {
		t.Fatalf("pin(%d): %v", cpu, err)
	}
	after := moreThreads(4) // made by threads already pinned
	defer after()
	for tid, s := range threadSets(t) {
		if s.Count() != 1 || !s.IsSet(cpu) {
			t.Errorf("thread %d may run on %d CPUs after pin(%d) (CPU %d set: %v)", tid, s.Count(), cpu, cpu, s.IsSet(cpu))
		}
	}
	if err := threads.unpin(); err != nil {
		t.Fatalf("unpin: %v", err)
	}
	for tid, s := range threadSets(t) {
		if s != threads.allowed {
			t.Errorf("thread %d may run on %d CPUs after unpin, want the process's %d", tid, s.Count(), threads.allowed.Count())
		}
	}
	if err := threads.pin(len(threads.allowed) * 64); err == nil {
		t.Error("pin accepted a CPU the process may not run on")
	}
}

func TestParseCPUIdle(t *testing.T) {
	stat := []byte(`cpu  1000 20 300 40000 500 0 60 0 0 0
cpu0 500 10 150 20000 250 0 30 0 0 0
cpu1 500 10 150 20000 250 0 30 0 0 0
cpu3 1 2 3 4
cpu7 1 2 3 x 5 6
intr 12345 0 0
cpu12 9 9 9 700 100 0 0 0 0 0
`)
	got := parseCPUIdle(stat, []int{0, 3, 7, 12, 40})
	want := map[int]time.Duration{0: 202500 * time.Millisecond, 12: 8 * time.Second}
	if len(got) != len(want) {
		t.Fatalf("parseCPUIdle = %v, want %v", got, want)
	}
	for c, d := range want {
		if got[c] != d {
			t.Errorf("CPU %d idle %s, want %s", c, got[c], d)
		}
	}
}

func TestCPUIdleOfThisMachine(t *testing.T) {
	_, cpus := currentThreadCPUs()
	if len(cpus) < 2 {
		t.Skip("one CPU")
	}
	a := cpuIdle(cpus)
	if len(a) != len(cpus) {
		t.Fatalf("idle times of %d CPUs, want the process's %d (%v)", len(a), len(cpus), a)
	}
	time.Sleep(50 * time.Millisecond)
	b := cpuIdle(cpus)
	for _, c := range cpus {
		if b[c] < a[c] {
			t.Errorf("CPU %d idle time went back from %s to %s", c, a[c], b[c])
		}
	}
}
