package publisher

import (
	"context"
	"errors"
	"fmt"
	"sync"
	"time"

	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"
)

// DefaultFollowEntries is the number of resources [StatusTracker.Follow]
// keeps when given 0: about 150 bytes each.
const DefaultFollowEntries = 1 << 14

// Follow keeps, until ctx ends, a local copy of the records of up to entries
// resources (0: [DefaultFollowEntries]), fed by a watch of the bucket and by
// the tracker's own reads and writes. With it, an Observe that changes
// nothing (the state recorded, already published, and no newer modification
// time or sub_mchid to add) answers without reading the bucket: the common
// case, and one JetStream round trip per observation.
//
// The copy never decides a change: whenever it does not show "nothing to
// do", Observe reads the bucket and writes by compare-and-set as without it.
// What it can do is miss, for the time JetStream takes to push a write to
// the watch, a change written by another instance, and so take an
// observation of the state recorded before that change as "the same" — as
// without it an Observe can when the other write lands just after its read.
// When the connection reconnects the copy is dropped and, until the watch has
// caught up with what it missed, only the tracker's own reads refill it.
//
// Follow returns once the watch is established, or its error (no bucket, the
// watch refused: Observe then keeps reading the bucket). The watch is an
// ordered consumer of the bucket's stream; its goroutine ends with ctx.
func (t *StatusTracker) Follow(ctx context.Context, entries int) error {
	if t.kv == nil {
		return fmt.Errorf("%w: the status tracker has no bucket", ErrInvalidConfig)
	}
	if entries < 0 {
		return fmt.Errorf("%w: Follow keeps %d entries", ErrInvalidConfig, entries)
	}
	if entries == 0 {
		entries = DefaultFollowEntries
	}
	// Not live (trusted by nobody) until the watch runs.
	c := &statusCopy{nc: t.p.js.Conn(), max: entries, recs: make(map[string]copied), done: make(chan struct{})}
	if !t.copy.CompareAndSwap(nil, c) {
		return errors.New("publisher: the status tracker already follows its bucket")
	}
	gen := c.generation()
	w, err := t.kv.WatchAll(ctx, jetstream.UpdatesOnly())
	if err != nil {
		close(c.done)
		t.copy.Store(nil)
		return fmt.Errorf("publisher: watching the status bucket: %w", err)
	}
	c.mu.Lock()
	c.reconnects, c.synced, c.live = gen, true, true
	c.mu.Unlock()
	go func() {
		defer close(c.done)
		defer func() {
			c.stop()
			_ = w.Stop()
			// Take what the subscription still hands over until it closes
			// the channel, so that its delivery does not block; bounded,
			// in case the connection closed first.
			limit := time.NewTimer(closeDrain)
			defer limit.Stop()
			for {
				select {
				case _, ok := <-w.Updates():
					if !ok {
						return
					}
				case <-limit.C:
					return
				}
			}
		}()
		for {
			select {
			case <-ctx.Done():
				return
			case e, ok := <-w.Updates():
				if !ok {
					return
				}
				if e != nil {
					c.update(e)
				}
			}
		}
	}()
	return nil
}

// FollowEnded returns a channel closed once the watch [StatusTracker.Follow]
// started has ended, at most closeDrain after its context ended; closed at
// once when the tracker does not follow its bucket.
func (t *StatusTracker) FollowEnded() <-chan struct{} {
	if c := t.copy.Load(); c != nil {
		return c.done
	}
	ended := make(chan struct{})
	close(ended)
	return ended
}

// closeDrain bounds the wait for the watch to close once Follow's context
// ended.
const closeDrain = 2 * time.Second

// statusCopy is what Follow keeps: per key, what Observe needs to see that
// an observation changes nothing. Safe for concurrent use.
type statusCopy struct {
	nc   *nats.Conn
	max  int
	done chan struct{} // closed when the watch's goroutine has ended

	mu sync.Mutex
	// live: the watch runs. Once it ends nothing is trusted.
	live bool
	// reconnects is the connection's reconnection count the copy belongs
	// to; a different count clears it.
	reconnects uint64
	// synced: the watch has no backlog, so what it delivers is current.
	// False after a reconnection until an update arrives with nothing
	// pending behind it.
	synced bool
	recs   map[string]copied
}

// copied is one record of the copy.
type copied struct {
	rev        uint64
	state      string
	modifiedAt time.Time
	subMchid   bool
	published  bool
}

// generation returns the connection's reconnection count (0 without a copy
// or a connection).
func (c *statusCopy) generation() uint64 {
	if c == nil || c.nc == nil {
		return 0
	}
	return c.nc.Stats().Reconnects
}

// current checks the generation; the caller holds c.mu.
func (c *statusCopy) current(gen uint64) {
	if gen != c.reconnects {
		clear(c.recs)
		c.reconnects, c.synced = gen, false
	}
}

// lookup returns the copy of key's record, if there is a copy and it has
// one it trusts.
func (c *statusCopy) lookup(key string) (copied, bool) {
	if c == nil {
		return copied{}, false
	}
	gen := c.generation()
	c.mu.Lock()
	defer c.mu.Unlock()
	if !c.live {
		return copied{}, false
	}
	c.current(gen)
	r, ok := c.recs[key]
	return r, ok
}

// store keeps rec, read or written at rev by this tracker while the
// connection was at generation gen; nil rec: the key has no record. Without
// a copy it does nothing.
func (c *statusCopy) store(gen uint64, key string, rec *statusRecord, rev uint64) {
	if c == nil {
		return
	}
	c.mu.Lock()
	defer c.mu.Unlock()
	if !c.live || gen != c.reconnects {
		return
	}
	c.put(key, rec, rev)
}

// put keeps rec, or with a nil rec drops the key, unless the copy has the
// key at rev or later; the caller holds c.mu.
func (c *statusCopy) put(key string, rec *statusRecord, rev uint64) {
	old, ok := c.recs[key]
	if ok && old.rev >= rev {
		return
	}
	if rec == nil {
		delete(c.recs, key)
		return
	}
	if !ok && len(c.recs) >= c.max {
		for k := range c.recs { // an arbitrary one: map order is random
			delete(c.recs, k)
			break
		}
	}
	c.recs[key] = copied{rev: rev, state: rec.State, modifiedAt: rec.ModifiedAt, subMchid: rec.SubMchid != "", published: rec.Published}
}

// update applies an entry of the watch.
func (c *statusCopy) update(e jetstream.KeyValueEntry) {
	var rec *statusRecord
	if e.Operation() == jetstream.KeyValuePut {
		if r, err := decodeRecord(e.Key(), e.Value()); err == nil {
			rec = r
		}
	}
	gen := c.generation()
	c.mu.Lock()
	defer c.mu.Unlock()
	c.current(gen)
	if !c.synced {
		// Catching up: later writes of this key may still be on their
		// way, so this one only makes what the copy has of it stale.
		rec = nil
		c.synced = e.Delta() == 0
	}
	// nil (deleted, purged, unreadable or catching up): dropped if older.
	c.put(e.Key(), rec, e.Revision())
}

func (c *statusCopy) stop() {
	c.mu.Lock()
	defer c.mu.Unlock()
	c.live = false
	clear(c.recs)
}
