package publisher_test

import (
	"context"
	"errors"
	"fmt"
	"sync/atomic"
	"testing"
	"time"

	"github.com/nats-io/nats.go/jetstream"

	"github.com/wxcancel/wxcancel/internal/poll"
	"github.com/wxcancel/wxcancel/publisher"
	"github.com/wxcancel/wxcancel/schemas"
)

// countingKV is the real bucket, counting the reads and the creations made
// through it.
type countingKV struct {
	jetstream.KeyValue
	gets, creates atomic.Int32
}

func (k *countingKV) Get(ctx context.Context, key string) (jetstream.KeyValueEntry, error) {
	k.gets.Add(1)
	return k.KeyValue.Get(ctx, key)
}

func (k *countingKV) Create(ctx context.Context, key string, value []byte, opts ...jetstream.KVCreateOpt) (uint64, error) {
	k.creates.Add(1)
	return k.KeyValue.Create(ctx, key, value, opts...)
}

// follower is an instance whose tracker follows the bucket (until ctx ends)
// and counts its reads and creations (see counted).
func (e *env) follower(t *testing.T, ctx context.Context) (*instance, *countingKV) {
	t.Helper()
	in, counted := e.counted(t)
	if err := in.tracker.Follow(ctx, 0); err != nil {
		t.Fatalf("Follow: %v", err)
	}
	return in, counted
}

// counted is an instance whose tracker counts its reads and creations.
func (e *env) counted(t *testing.T) (*instance, *countingKV) {
	t.Helper()
	in := e.instance(t)
	kv, err := in.js.KeyValue(t.Context(), testBucket)
	if err != nil {
		t.Fatal(err)
	}
	counted := &countingKV{KeyValue: kv}
	in.tracker = in.pub.StatusTracker(counted, in.events)
	return in, counted
}

// revision is the revision of the record of the cancel-withdraw key.
func (e *env) revision(t *testing.T, key string) uint64 {
	t.Helper()
	got, err := e.kv.Get(t.Context(), string(schemas.ResourceCancelWithdraw)+"."+key)
	if err != nil {
		t.Fatal(err)
	}
	return got.Revision()
}

// waitCopied waits until tr's copy has the record of key at rev.
func waitCopied(t *testing.T, tr *publisher.StatusTracker, key string, rev uint64) {
	t.Helper()
	poll.Until(t, 10*time.Second, "the copy to have the record", func() error {
		if got := publisher.CopiedRevision(tr, schemas.ResourceCancelWithdraw, key); got != rev {
			return fmt.Errorf("revision %d of %s, want %d", got, key, rev)
		}
		return nil
	})
}

// observe makes in observe key in state (no modification time: every
// different state is a change) and checks whether it recorded a change.
func observe(t *testing.T, in *instance, key, state, command string, want bool) {
	t.Helper()
	changed, err := in.tracker.Observe(t.Context(), withdrawal(key, state, time.Time{}, command))
	if err != nil {
		t.Fatalf("%s: Observe %s: %v", command, state, err)
	}
	if changed != want {
		t.Fatalf("%s: Observe %s: changed = %v, want %v", command, state, changed, want)
	}
}

// TestFollowSeesOtherInstances: a following instance decides "nothing
// changed" without a read, and learns from its watch what another instance
// wrote, so that a state going back is still a change.
func TestFollowSeesOtherInstances(t *testing.T) {
	e := newEnv(t, 0)
	a := e.instance(t)
	b, bkv := e.follower(t, t.Context())
	const key = "2000000031"
	subject := "wxt.evt.status.cancel-withdraw." + key

	observe(t, a, key, "WAITING_MERCHANT_CONFIRM", "c1", true)
	waitCopied(t, b.tracker, key, e.revision(t, key))
	reads := bkv.gets.Load()
	observe(t, b, key, "WAITING_MERCHANT_CONFIRM", "c2", false)
	if n := bkv.gets.Load() - reads; n != 0 {
		t.Errorf("an unchanged state read the bucket %d times, although the copy has it", n)
	}

	observe(t, a, key, "SYSTEM_PROCESSING", "c3", true)
	waitCopied(t, b.tracker, key, e.revision(t, key))
	observe(t, b, key, "WAITING_MERCHANT_CONFIRM", "c4", true)

	got := e.stored(t, subject)
	if len(got) != 3 {
		t.Fatalf("%d events stored, want 3", len(got))
	}
	_, d := statusData(t, got[2], "")
	if d.State != "WAITING_MERCHANT_CONFIRM" || d.PreviousState != "SYSTEM_PROCESSING" || d.CommandID != "c4" {
		t.Errorf("last event: %s after %q by %s, want WAITING_MERCHANT_CONFIRM after SYSTEM_PROCESSING by c4", d.State, d.PreviousState, d.CommandID)
	}
}

// TestFollowEnds: the watch ends with its context (FollowEnded says so);
// the copy is then no longer trusted, so a change made meanwhile by another
// instance is seen by reading.
func TestFollowEnds(t *testing.T) {
	e := newEnv(t, 0)
	a := e.instance(t)
	ctx, cancel := context.WithCancel(t.Context())
	b, bkv := e.follower(t, ctx)
	const key = "2000000032"

	observe(t, a, key, "WAITING_MERCHANT_CONFIRM", "c1", true)
	waitCopied(t, b.tracker, key, e.revision(t, key))
	select {
	case <-b.tracker.FollowEnded():
		t.Fatal("the watch ended before its context")
	default:
	}
	cancel()
	select {
	case <-b.tracker.FollowEnded():
	case <-time.After(time.Minute): // a hang, not a timing check
		t.Fatal("the watch did not end with its context")
	}
	waitCopied(t, b.tracker, key, 0)
	observe(t, b, key, "WAITING_MERCHANT_CONFIRM", "c2", false) // reads, copies nothing
	observe(t, a, key, "SYSTEM_PROCESSING", "c3", true)
	reads := bkv.gets.Load()
	observe(t, b, key, "WAITING_MERCHANT_CONFIRM", "c4", true)
	if bkv.gets.Load() == reads {
		t.Error("the observation was decided without reading the bucket")
	}
	if n := len(e.stored(t, "")); n != 3 {
		t.Errorf("%d events stored, want 3", n)
	}
}

// TestFollowReconnect: a reconnection drops the copy (what the watch missed
// while disconnected is unknown); the tracker's next read refills it.
func TestFollowReconnect(t *testing.T) {
	e := newEnv(t, 0)
	b, bkv := e.follower(t, t.Context())
	const key = "2000000033"
	observe(t, b, key, "WAITING_MERCHANT_CONFIRM", "c1", true)
	rev := e.revision(t, key)
	waitCopied(t, b.tracker, key, rev)

	e.restart(t)
	nc := b.js.Conn()
	poll.True(t, 20*time.Second, "the instance to reconnect", func() bool {
		return nc.Stats().Reconnects > 0 && nc.IsConnected()
	})
	if got := publisher.CopiedRevision(b.tracker, schemas.ResourceCancelWithdraw, key); got != 0 {
		t.Errorf("after the reconnection the copy still has revision %d", got)
	}
	reads := bkv.gets.Load()
	observe(t, b, key, "WAITING_MERCHANT_CONFIRM", "c2", false)
	if bkv.gets.Load() == reads {
		t.Error("the observation after the reconnection was decided without reading the bucket")
	}
	if got := publisher.CopiedRevision(b.tracker, schemas.ResourceCancelWithdraw, key); got != rev {
		t.Errorf("the read did not refill the copy: revision %d, want %d", got, rev)
	}
}

// TestFollowBounded: the copy keeps at most the number of records asked for.
func TestFollowBounded(t *testing.T) {
	e := newEnv(t, 0)
	in := e.instance(t)
	if err := in.tracker.Follow(t.Context(), 3); err != nil {
		t.Fatal(err)
	}
	for i := range 8 {
		observe(t, in, fmt.Sprintf("20000001%02d", i), "WAITING_MERCHANT_CONFIRM", fmt.Sprintf("c%d", i), true)
	}
	if n := publisher.CopiedRecords(in.tracker); n == 0 || n > 3 {
		t.Errorf("the copy has %d records, want 1 to 3", n)
	}
}

func TestFollowRefused(t *testing.T) {
	e := newEnv(t, 0)
	in := e.instance(t)
	select {
	case <-in.pub.StatusTracker(nil, nil).FollowEnded():
	default:
		t.Error("a tracker that does not follow has a watch that never ends")
	}
	if err := in.pub.StatusTracker(nil, nil).Follow(t.Context(), 0); !errors.Is(err, publisher.ErrInvalidConfig) {
		t.Errorf("Follow without a bucket = %v", err)
	}
	if err := in.tracker.Follow(t.Context(), -1); !errors.Is(err, publisher.ErrInvalidConfig) {
		t.Errorf("Follow(-1) = %v", err)
	}
	if err := in.tracker.Follow(t.Context(), 0); err != nil {
		t.Fatal(err)
	}
	if err := in.tracker.Follow(t.Context(), 0); err == nil {
		t.Error("a second Follow succeeded")
	}
}

// BenchmarkObserveUnchanged: the common observation, a state already
// recorded, decided by reading the bucket and from the followed copy.
func BenchmarkObserveUnchanged(b *testing.B) {
	for _, follow := range []bool{false, true} {
		b.Run(fmt.Sprintf("follow=%v", follow), func(b *testing.B) {
			e := newEnv(b, 0)
			in := e.instance(b)
			if follow {
				if err := in.tracker.Follow(b.Context(), 0); err != nil {
					b.Fatal(err)
				}
			}
			ob := withdrawal("2000000041", "WAITING_MERCHANT_CONFIRM", t0, "c0")
			if _, err := in.tracker.Observe(b.Context(), ob); err != nil {
				b.Fatal(err)
			}
			for b.Loop() {
				if changed, err := in.tracker.Observe(b.Context(), ob); err != nil || changed {
					b.Fatalf("Observe = %v, %v", changed, err)
				}
			}
		})
	}
}
