package consumer

import (
	"context"
	"errors"
	"fmt"
	"strconv"
	"time"

	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"

	"github.com/wxcancel/wxcancel/schemas"
)

// DeadLetter is one command in the dead-letter stream.
type DeadLetter struct {
	Seq          uint64    // sequence in the dead-letter stream
	Time         time.Time // when it was dead-lettered
	CommandID    string
	CommandType  string
	ErrorCode    string
	ErrorMessage string
	Deliveries   int
	Header       nats.Header // the original headers (but for Nats-*) plus the Wxcancel-* ones
	Data         []byte      // the original body
}

// ErrDuplicateWindow is matched by the error of [ReplayDeadLetter] when the
// commands stream still remembers the command id in its duplicate window
// and would drop the replay; replay again once the window has passed.
var ErrDuplicateWindow = errors.New("consumer: the command id is still in the commands stream's duplicate window")

// ErrAlreadyReplayed is matched by the error of [ReplayDeadLetter] when the
// command's recorded outcome is no longer the dead-lettered one: a replay of
// it has run to another outcome (a dead letter stays until purged), and
// replaying again would run the command once more.
var ErrAlreadyReplayed = errors.New("consumer: the command was replayed and has another outcome since")

// DeadLetters returns the dead letters in stream order, at most limit (0:
// all).
func DeadLetters(ctx context.Context, js jetstream.JetStream, t Topology, limit int) ([]DeadLetter, error) {
	s, err := js.Stream(ctx, t.DLQ.Name)
	if err != nil {
		return nil, fmt.Errorf("consumer: dead-letter stream %s: %w", t.DLQ.Name, err)
	}
	info, err := s.Info(ctx)
	if err != nil {
		return nil, fmt.Errorf("consumer: dead-letter stream %s: %w", t.DLQ.Name, err)
	}
	var out []DeadLetter
	if info.State.Msgs == 0 {
		return nil, nil
	}
	for seq := info.State.FirstSeq; seq <= info.State.LastSeq && (limit == 0 || len(out) < limit); seq++ {
		m, err := s.GetMsg(ctx, seq)
		if errors.Is(err, jetstream.ErrMsgNotFound) {
			continue
		}
		if err != nil {
			return out, fmt.Errorf("consumer: reading dead letter %d: %w", seq, err)
		}
		out = append(out, deadLetter(m))
	}
	return out, nil
}

// DeadLetterAt returns the dead letter with stream sequence seq.
func DeadLetterAt(ctx context.Context, js jetstream.JetStream, t Topology, seq uint64) (DeadLetter, error) {
	s, err := js.Stream(ctx, t.DLQ.Name)
	if err != nil {
		return DeadLetter{}, fmt.Errorf("consumer: dead-letter stream %s: %w", t.DLQ.Name, err)
	}
	m, err := s.GetMsg(ctx, seq)
	if err != nil {
		return DeadLetter{}, fmt.Errorf("consumer: dead letter %d: %w", seq, err)
	}
	return deadLetter(m), nil
}

func deadLetter(m *jetstream.RawStreamMsg) DeadLetter {
	n, _ := strconv.Atoi(m.Header.Get(schemas.HeaderDeliveries))
	return DeadLetter{
		Seq: m.Sequence, Time: m.Time, Header: m.Header, Data: m.Data,
		CommandID:    m.Header.Get(schemas.HeaderCommandID),
		CommandType:  m.Header.Get(schemas.HeaderCommandType),
		ErrorCode:    m.Header.Get(schemas.HeaderErrorCode),
		ErrorMessage: m.Header.Get(schemas.HeaderErrorMessage),
		Deliveries:   n,
	}
}

// ReplayDeadLetter sends a dead-lettered command again: it clears the
// command's recorded outcome (counting the replay, so that the new outcome
// event gets its own id) and publishes the original body and headers on
// <prefix>.cmd.<type> with the same command id (NATS control headers such
// as Nats-Expected-* are not copied). The dead letter stays until purged. It
// fails with [ErrDuplicateWindow] when JetStream would drop the command as a
// duplicate, and with [ErrAlreadyReplayed] when an earlier replay has given
// the command another outcome; the record is then left as it was.
func ReplayDeadLetter(ctx context.Context, js jetstream.JetStream, t Topology, prefix string, dl DeadLetter) error {
	if dl.CommandID == "" || dl.CommandType == "" {
		return fmt.Errorf("consumer: dead letter %d lacks %s or %s", dl.Seq, schemas.HeaderCommandID, schemas.HeaderCommandType)
	}
	kv, err := js.KeyValue(ctx, t.Outcomes.Bucket)
	if err != nil {
		return fmt.Errorf("consumer: outcomes bucket: %w", err)
	}
	recs := records{kv: kv}
	key := schemas.EncodeToken(dl.CommandID)
	rec, rev, err := recs.get(ctx, key)
	if err != nil {
		return err
	}
	if rec != nil && !rec.done() {
		return fmt.Errorf("consumer: command %s is being worked on (no outcome recorded yet); not replaying", dl.CommandID)
	}
	if rec != nil && !rec.DeadLettered {
		return fmt.Errorf("%w: command %s is %s", ErrAlreadyReplayed, dl.CommandID, rec.Outcome)
	}
	msg := nats.NewMsg(prefix + ".cmd." + dl.CommandType)
	msg.Data = dl.Data
	schemas.CopyCommandHeaders(msg.Header, dl.Header, "Wxcancel-")
	msg.Header.Set(jetstream.MsgIDHeader, dl.CommandID)

	// The record is cleared first: a command delivered before it would be
	// answered from the old outcome instead of running.
	var cleared *record
	if rec != nil {
		cleared = &record{Attempts: rec.Attempts, Ambiguous: rec.Ambiguous, Replays: rec.Replays + 1}
		if rev, err = recs.put(ctx, key, cleared, rev); err != nil {
			return err
		}
	}
	ack, err := js.PublishMsg(ctx, msg)
	if err == nil && ack.Duplicate {
		err = ErrDuplicateWindow
	}
	if err != nil && cleared != nil {
		// Put the outcome back, so that the command id still answers.
		if _, rerr := recs.put(context.WithoutCancel(ctx), key, rec, rev); rerr != nil {
			err = errors.Join(err, fmt.Errorf("restoring the outcome record: %w", rerr))
		}
	}
	if err != nil {
		return fmt.Errorf("consumer: replaying %s: %w", dl.CommandID, err)
	}
	return nil
}

// PurgeDeadLetter removes the dead letter with stream sequence seq.
func PurgeDeadLetter(ctx context.Context, js jetstream.JetStream, t Topology, seq uint64) error {
	s, err := js.Stream(ctx, t.DLQ.Name)
	if err != nil {
		return fmt.Errorf("consumer: dead-letter stream %s: %w", t.DLQ.Name, err)
	}
	if err := s.DeleteMsg(ctx, seq); err != nil {
		return fmt.Errorf("consumer: purging dead letter %d: %w", seq, err)
	}
	return nil
}
