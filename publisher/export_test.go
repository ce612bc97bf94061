package publisher

import (
	"context"

	"github.com/wxcancel/wxcancel/schemas"
)

// CopiedRevision is the revision of the record of resource/key in t's copy
// of its bucket (see Follow), 0 when the copy has none it trusts.
func CopiedRevision(t *StatusTracker, resource schemas.Resource, key string) uint64 {
	rec, ok := t.copy.Load().lookup(string(resource) + "." + schemas.EncodeToken(key))
	if !ok {
		return 0
	}
	return rec.rev
}

// CopiedRecords is the number of records in t's copy of its bucket.
func CopiedRecords(t *StatusTracker) int {
	c := t.copy.Load()
	if c == nil {
		return 0
	}
	c.mu.Lock()
	defer c.mu.Unlock()
	return len(c.recs)
}

// TakeTurn holds the turn of resource/key in t, as an observation of it
// does, until done is called.
func TakeTurn(t *StatusTracker, resource schemas.Resource, key string) (done func()) {
	done, err := t.turns.take(context.Background(), string(resource)+"."+schemas.EncodeToken(key))
	if err != nil {
		panic(err) // a background context does not end
	}
	return done
}
