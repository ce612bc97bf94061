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

// threadsNow is the set of the process's threads.
func threadsNow() (map[int]bool, error) {
	tids, err := threads()
	set := map[int]bool{}
	for _, tid := range tids {
		set[tid] = true
	}
	return set, err
}

// moreThreads keeps n goroutines each locked to a thread of its own until
// the returned function is called: the runtime starts new threads for
// those its idle threads do not cover.
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

// onOneCPU reports whether every thread of the process may run on one
// CPU only, the same for all.
func onOneCPU(t *testing.T) bool {
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
	pinnedAt, err := threadsNow()
	if err != nil {
		t.Fatal(err)
	}
	// More goroutines locked to threads than the process has threads: the
	// runtime must make new ones, from threads already pinned.
	after := moreThreads(len(pinnedAt) + 2)
	defer after()
	sets := threadSets(t)
	made := 0
	for tid := range sets {
		if !pinnedAt[tid] {
			made++
		}
	}
	if made == 0 {
		t.Fatal("no thread was made after the pin: inheritance is not tested")
	}
	for tid, s := range sets {
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
	got := parseCPUIdle(stat, map[int]bool{0: true, 3: true, 7: true, 12: true, 40: true})
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
	want := map[int]bool{}
	for _, c := range cpus {
		want[c] = true
	}
	a := cpuIdle(want)
	if len(a) != len(cpus) {
		t.Fatalf("idle times of %d CPUs, want the process's %d (%v)", len(a), len(cpus), a)
	}
	time.Sleep(50 * time.Millisecond)
	b := cpuIdle(want)
	for _, c := range cpus {
		if b[c] < a[c] {
			t.Errorf("CPU %d idle time went back from %s to %s", c, a[c], b[c])
		}
	}
}
