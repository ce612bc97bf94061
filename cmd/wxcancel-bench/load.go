package main

import (
	"encoding/json"
	"fmt"
	"math"
	"os"
	"slices"
	"strconv"
	"strings"
	"sync"
	"time"
)

// benchMchID is the platform merchant id of every run.
const benchMchID = "1900000001"

// Command types of the mix, in the proportions of the issue: 40%
// validate-cancel, 30% query-cancel-withdraw, 20% confirm-cancel, 10%
// query-cancel-application.
var mixTypes = [10]string{
	"validate-cancel", "validate-cancel", "validate-cancel", "validate-cancel",
	"query-cancel-withdraw", "query-cancel-withdraw", "query-cancel-withdraw",
	"confirm-cancel", "confirm-cancel",
	"query-cancel-application",
}

// command is one command of a run.
type command struct {
	ctype, id string
	body      []byte
}

// makeCommand returns command i of run tag. Queries and validations cycle
// over pool resources (the simulator creates them on first use, so every one
// succeeds, and answers about one resource are identical, so its
// no-RSA-per-response mode can reuse their signatures; the first sight of
// each resource changes its recorded status, later ones compare and keep
// it). Every confirm-cancel targets an application of its own: a confirmed
// application cannot be confirmed again.
func makeCommand(tag string, i, pool int) command {
	t := mixTypes[i%len(mixTypes)]
	k := (i / len(mixTypes)) % max(pool, 1)
	var body string
	switch t {
	case "validate-cancel":
		body = fmt.Sprintf(`{"sub_mchid":"19%08d"}`, k)
	case "query-cancel-withdraw":
		body = fmt.Sprintf(`{"applyment_id":"20%014d"}`, k)
	case "confirm-cancel":
		body = fmt.Sprintf(`{"applyment_id":"30%014d","sub_mchid":"19%08d","operator_identification":"bench",`+
			`"confirm_time":"2025-05-20T13:29:35+08:00","cancel_contract_version":"V1.0"}`, i, k)
	case "query-cancel-application":
		body = fmt.Sprintf(`{"out_apply_no":"BENCH%08d"}`, k)
	}
	return command{ctype: t, id: commandID(tag, i), body: []byte(body)}
}

// commandID is the Nats-Msg-Id of command i of run tag.
func commandID(tag string, i int) string { return tag + "-" + strconv.Itoa(i) }

// commandIndex reads i back from a command id of run tag; -1 when the id is
// not one of the run's.
func commandIndex(tag, id string) int {
	rest, ok := strings.CutPrefix(id, tag+"-")
	if !ok {
		return -1
	}
	i, err := strconv.Atoi(rest)
	if err != nil || i < 0 {
		return -1
	}
	return i
}

// collector records when each command of a run was sent and when its
// outcome event arrived, from a core subscription to <prefix>.evt.>.
type collector struct {
	tag    string
	prefix string

	mu       sync.Mutex
	sentAt   []time.Time // when the command was (scheduled to be) published
	gotAt    []time.Time // when its first outcome event arrived
	outcome  []string
	attempts []int
	got      int
	dups     int // outcome events seen again for a command (republished)
	status   int // status-change events
	foreign  int // events of no command of this run
	bad      int // events that do not parse
	done     chan struct{}
}

func newCollector(tag, prefix string, n int) *collector {
	return &collector{
		tag: tag, prefix: prefix,
		sentAt: make([]time.Time, n), gotAt: make([]time.Time, n),
		outcome: make([]string, n), attempts: make([]int, n),
		done: make(chan struct{}),
	}
}

func (c *collector) sent(i int, at time.Time) {
	c.mu.Lock()
	c.sentAt[i] = at
	c.mu.Unlock()
}

// outcomeEvent is the part of an outcome event the benchmark reads.
type outcomeEvent struct {
	Subject string `json:"subject"`
	Data    struct {
		Attempts int `json:"attempts"`
		Error    *struct {
			Code string `json:"code"`
		} `json:"error"`
	} `json:"data"`
}

// event records one event received on subject at time at.
func (c *collector) event(subject string, data []byte, at time.Time) {
	rest, ok := strings.CutPrefix(subject, c.prefix+".evt.")
	if !ok {
		return
	}
	if strings.HasPrefix(rest, "status.") {
		c.mu.Lock()
		c.status++
		c.mu.Unlock()
		return
	}
	dot := strings.LastIndexByte(rest, '.')
	var ev outcomeEvent
	if dot < 0 || json.Unmarshal(data, &ev) != nil {
		c.mu.Lock()
		c.bad++
		c.mu.Unlock()
		return
	}
	outcome := rest[dot+1:]
	if ev.Data.Error != nil && outcome != "succeeded" {
		outcome += ":" + ev.Data.Error.Code
	}
	i := commandIndex(c.tag, ev.Subject)
	c.mu.Lock()
	defer c.mu.Unlock()
	switch {
	case i < 0 || i >= len(c.gotAt):
		c.foreign++
	case !c.gotAt[i].IsZero():
		c.dups++
	default:
		c.gotAt[i], c.outcome[i], c.attempts[i] = at, outcome, ev.Data.Attempts
		c.got++
		if c.got == len(c.gotAt) {
			close(c.done)
		}
	}
}

// summary is what a run's events add up to.
type summary struct {
	outcomes            map[string]int // outcome (failed:CODE, missing) → commands
	attempts            int
	multiAttempt        int
	first, last         time.Time // first send, last outcome
	last95              time.Time // when 95% of the commands had their outcome
	warm                int       // outcomes after the first second up to last95
	latencies           []time.Duration
	retriedLatencies    []time.Duration // of commands that needed more than one attempt
	dups, status, bad   int
	foreign, allSucceed int
}

// summarize adds up the run, ignoring the latencies of the commands before
// skip (warm-up).
func (c *collector) summarize(skip int) summary {
	c.mu.Lock()
	defer c.mu.Unlock()
	s := summary{outcomes: map[string]int{}, dups: c.dups, status: c.status, bad: c.bad, foreign: c.foreign}
	for i := range c.gotAt {
		if !c.sentAt[i].IsZero() && (s.first.IsZero() || c.sentAt[i].Before(s.first)) {
			s.first = c.sentAt[i]
		}
		if c.gotAt[i].IsZero() {
			s.outcomes["missing"]++
			continue
		}
		s.outcomes[c.outcome[i]]++
		s.attempts += c.attempts[i]
		if c.gotAt[i].After(s.last) {
			s.last = c.gotAt[i]
		}
		if i < skip {
			continue
		}
		d := c.gotAt[i].Sub(c.sentAt[i])
		if c.attempts[i] > 1 {
			s.multiAttempt++
			s.retriedLatencies = append(s.retriedLatencies, d)
		} else {
			s.latencies = append(s.latencies, d)
		}
	}
	s.allSucceed = s.outcomes["succeeded"]
	var got []time.Time
	for _, t := range c.gotAt {
		if !t.IsZero() {
			got = append(got, t)
		}
	}
	if k := len(c.gotAt) * 95 / 100; k > 0 && len(got) >= k {
		slices.SortFunc(got, func(a, b time.Time) int { return a.Compare(b) })
		s.last95 = got[k-1]
		for _, t := range got[:k] {
			if t.Sub(s.first) > time.Second {
				s.warm++
			}
		}
	}
	return s
}

// percentile returns the p-th percentile (0..100) of ds by the
// nearest-rank method; 0 for none. ds is sorted in place.
func percentile(ds []time.Duration, p float64) time.Duration {
	if len(ds) == 0 {
		return 0
	}
	slices.Sort(ds)
	rank := int(math.Ceil(p / 100 * float64(len(ds))))
	rank = min(max(rank, 1), len(ds))
	return ds[rank-1]
}

// writeCSV writes, per command, its index, type, send time and latency (ms
// since the first send), for looking into a run kept with -keep.
func (c *collector) writeCSV(path string) {
	c.mu.Lock()
	defer c.mu.Unlock()
	var b strings.Builder
	b.WriteString("index,type,sent_ms,latency_ms,attempts,outcome\n")
	var t0 time.Time
	for _, t := range c.sentAt {
		if !t.IsZero() && (t0.IsZero() || t.Before(t0)) {
			t0 = t
		}
	}
	for i := range c.sentAt {
		lat := -1.0
		if !c.gotAt[i].IsZero() {
			lat = float64(c.gotAt[i].Sub(c.sentAt[i])) / 1e6
		}
		fmt.Fprintf(&b, "%d,%s,%.3f,%.3f,%d,%s\n", i, mixTypes[i%len(mixTypes)], float64(c.sentAt[i].Sub(t0))/1e6, lat, c.attempts[i], c.outcome[i])
	}
	_ = os.WriteFile(path, []byte(b.String()), 0o600)
}
