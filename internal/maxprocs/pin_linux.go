package maxprocs

import (
	"bufio"
	"bytes"
	"errors"
	"fmt"
	"os"
	"strconv"
	"time"

	"golang.org/x/sys/unix"
)

// threadCPUs sets the CPUs of every thread of this process. Linux keeps
// one CPU set per thread, and a new thread inherits the set of the thread
// that made it.
type threadCPUs struct {
	allowed unix.CPUSet // the process's CPUs when the governor started
}

// currentThreadCPUs returns the setter of this process's threads, and the
// CPUs they may run on now; none (nil) when they cannot be read or there
// is only one, so that the governor pins nothing.
func currentThreadCPUs() (threadCPUs, []int) {
	var t threadCPUs
	if err := unix.SchedGetaffinity(0, &t.allowed); err != nil || t.allowed.Count() < 2 {
		return t, nil
	}
	var cpus []int
	for c := range len(t.allowed) * 64 {
		if t.allowed.IsSet(c) {
			cpus = append(cpus, c)
		}
	}
	return t, cpus
}

// pin holds every thread on cpu.
func (t threadCPUs) pin(cpu int) error {
	if !t.allowed.IsSet(cpu) {
		return fmt.Errorf("maxprocs: CPU %d is not one of the process's", cpu)
	}
	var one unix.CPUSet
	one.Set(cpu)
	return setEveryThread(&one)
}

// unpin gives every thread the CPUs the process had at the start.
func (t threadCPUs) unpin() error { return setEveryThread(&t.allowed) }

// maxPasses bounds setEveryThread's passes over the threads.
const maxPasses = 8

// setEveryThread gives every thread of the process the CPUs of set. It
// goes over /proc/self/task again until a pass finds no thread it has not
// set: a thread made meanwhile by one not yet set got the old CPUs. (A
// thread whose making began before its maker was set, and ended after the
// last pass had listed the threads, keeps the old CPUs until the next
// change; it is one thread of the runtime's, runs whatever the scheduler
// gives it, and the next change sets it.)
func setEveryThread(set *unix.CPUSet) error {
	done := map[int]bool{}
	for range maxPasses {
		tids, err := threads()
		if err != nil {
			return err
		}
		fresh := false
		for _, tid := range tids {
			if done[tid] {
				continue
			}
			fresh = true
			// ESRCH: the thread has ended since it was listed.
			if err := unix.SchedSetaffinity(tid, set); err != nil && !errors.Is(err, unix.ESRCH) {
				return fmt.Errorf("maxprocs: setting the CPUs of thread %d: %w", tid, err)
			}
			done[tid] = true
		}
		if !fresh {
			return nil
		}
	}
	return fmt.Errorf("maxprocs: new threads still appeared after %d passes", maxPasses)
}

// threads lists the ids of this process's threads.
func threads() ([]int, error) {
	ents, err := os.ReadDir("/proc/self/task")
	if err != nil {
		return nil, fmt.Errorf("maxprocs: listing the threads: %w", err)
	}
	tids := make([]int, 0, len(ents))
	for _, e := range ents {
		if tid, err := strconv.Atoi(e.Name()); err == nil {
			tids = append(tids, tid)
		}
	}
	return tids, nil
}

// userHZ is the unit of /proc/stat's times: USER_HZ, 100 on every Linux
// architecture Go supports (proc_stat(5); the kernel's USER_HZ is fixed at
// 100 for its user interface, whatever CONFIG_HZ).
const userHZ = 100

// cpuIdle reads the idle time (idle and iowait) of each CPU in cpus from
// /proc/stat; nil when it cannot be read. A CPU missing from it (taken
// offline) is missing from the result.
func cpuIdle(cpus map[int]bool) map[int]time.Duration {
	b, err := os.ReadFile("/proc/stat")
	if err != nil {
		return nil
	}
	return parseCPUIdle(b, cpus)
}

// parseCPUIdle reads the idle times of the CPUs in want out of
// /proc/stat's text.
func parseCPUIdle(b []byte, want map[int]bool) map[int]time.Duration {
	idle := make(map[int]time.Duration, len(want))
	sc := bufio.NewScanner(bytes.NewReader(b))
	for sc.Scan() {
		f := bytes.Fields(sc.Bytes())
		// cpuN user nice system idle iowait ...
		if len(f) < 6 || !bytes.HasPrefix(f[0], []byte("cpu")) || len(f[0]) == 3 {
			continue
		}
		c, err := strconv.Atoi(string(f[0][3:]))
		if err != nil || !want[c] {
			continue
		}
		i, err1 := strconv.ParseUint(string(f[4]), 10, 63)
		w, err2 := strconv.ParseUint(string(f[5]), 10, 63)
		if err1 != nil || err2 != nil {
			continue
		}
		idle[c] = time.Duration(i+w) * time.Second / userHZ
	}
	return idle
}
