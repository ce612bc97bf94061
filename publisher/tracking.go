package publisher

import (
	"encoding/json"
	"fmt"
	"slices"
	"strconv"
	"time"

	"github.com/wxcancel/wxcancel/schemas"
)

// TrackingEnded is what the event that ends the tracking of a resource says
// (docs/interface.md, Lifecycle tracking).
type TrackingEnded struct {
	// Resource is cancel-withdraw or cancel-application (required).
	Resource schemas.Resource
	// Key is the resource's key (required).
	Key string
	// SubMchid is the sub-merchant, when known.
	SubMchid string
	// Reason is why tracking ended (required).
	Reason schemas.EndReason
	// State is the last state known; empty when none was ever seen.
	State string
	// StartedAt is when this tracking started (required): with the
	// resource, it names the tracking, and so the event's id.
	StartedAt time.Time
	// Polls counts the polls made while the resource was tracked.
	Polls int
}

// trackingData is the wire shape of a tracking-ended event's data.
type trackingData struct {
	Resource  schemas.Resource  `json:"resource"`
	Key       string            `json:"key"`
	SubMchid  string            `json:"sub_mchid,omitempty"`
	Reason    schemas.EndReason `json:"reason"`
	State     string            `json:"state,omitempty"`
	StartedAt string            `json:"started_at"`
	Polls     int               `json:"polls"`
}

// NewTrackingEnded builds the event that ends the tracking of a resource:
// subject <prefix>.evt.tracking.<resource>.<key> (the key encoded with
// [schemas.EncodeToken]), type wxpay.tracking.ended, subject attribute
// <resource>/<key>, id tracking/<resource>/<encoded key>/<StartedAt in Unix
// nanoseconds>, so that the end of one tracking is one event however often
// it is published, carrying tc (see [TraceContext]). It fails with
// [ErrInvalidEvent] for a resource that is not tracked, an unknown reason,
// an empty key, a zero StartedAt, negative polls or an invalid tc.
func (p *Publisher) NewTrackingEnded(e TrackingEnded, tc TraceContext) (Message, error) {
	keyProblem := nameProblem("key", e.Key)
	switch {
	case !e.Resource.Tracked():
		return Message{}, fmt.Errorf("%w: resource %q is not tracked", ErrInvalidEvent, e.Resource)
	case keyProblem != "":
		return Message{}, fmt.Errorf("%w: %s", ErrInvalidEvent, keyProblem)
	case e.StartedAt.IsZero():
		return Message{}, fmt.Errorf("%w: the tracking of %s/%s has no start", ErrInvalidEvent, e.Resource, e.Key)
	case e.Polls < 0:
		return Message{}, fmt.Errorf("%w: %d polls", ErrInvalidEvent, e.Polls)
	}
	if !slices.Contains(schemas.EndReasons(), e.Reason) {
		return Message{}, fmt.Errorf("%w: reason %q is not one of %v", ErrInvalidEvent, e.Reason, schemas.EndReasons())
	}
	b, err := json.Marshal(trackingData{Resource: e.Resource, Key: e.Key, SubMchid: e.SubMchid, Reason: e.Reason, State: e.State,
		StartedAt: e.StartedAt.UTC().Format(TimeFormat), Polls: e.Polls})
	if err != nil {
		return Message{}, fmt.Errorf("%w: encoding the end of tracking of %s/%s: %w", ErrInvalidEvent, e.Resource, e.Key, err)
	}
	token := schemas.EncodeToken(e.Key)
	return p.message(p.prefix+".evt.tracking."+string(e.Resource)+"."+token, Event{
		ID:      "tracking/" + string(e.Resource) + "/" + token + "/" + strconv.FormatInt(e.StartedAt.UnixNano(), 10),
		Type:    schemas.EventTypeTrackingEnded,
		Subject: string(e.Resource) + "/" + e.Key,
		Time:    p.now(),
		Data:    b,
	}, tc)
}
