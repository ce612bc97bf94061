// Package deadletter is the operators' side of the dead-letter stream
// (<prefix>.dlq.<type>): list and show the commands the service gave up on,
// replay one once its cause is fixed, purge what was handled. `wxcancel dlq`
// is built on it.
package deadletter

import (
	"context"
	"errors"
	"fmt"
	"strconv"
	"time"

	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"

	"github.com/wxcancel/wxcancel/consumer"
	"github.com/wxcancel/wxcancel/schemas"
)

// Letter is one command in the dead-letter stream.
type Letter struct {
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

// ErrDuplicateWindow is matched by the error of [Replay] when the
// commands stream still remembers the command id in its duplicate window
// and would drop the replay; replay again once the window has passed.
var ErrDuplicateWindow = errors.New("deadletter: the command id is still in the commands stream's duplicate window")

// ErrAlreadyReplayed is matched by the error of [Replay] when the command's
// recorded outcome is no longer the dead-lettered one: a replay of it has run
// to another outcome (a dead letter stays until purged), and replaying again
// would run the command once more.
var ErrAlreadyReplayed = consumer.ErrAlreadyReplayed

// List returns the dead letters in stream order, at most limit (0:
// all).
func List(ctx context.Context, js jetstream.JetStream, t consumer.Topology, limit int) ([]Letter, error) {
	s, err := js.Stream(ctx, t.DLQ.Name)
	if err != nil {
		return nil, fmt.Errorf("deadletter: dead-letter stream %s: %w", t.DLQ.Name, err)
	}
	info, err := s.Info(ctx)
	if err != nil {
		return nil, fmt.Errorf("deadletter: dead-letter stream %s: %w", t.DLQ.Name, err)
	}
	var out []Letter
	if info.State.Msgs == 0 {
		return nil, nil
	}
	for seq := info.State.FirstSeq; seq <= info.State.LastSeq && (limit == 0 || len(out) < limit); seq++ {
		m, err := s.GetMsg(ctx, seq)
		if errors.Is(err, jetstream.ErrMsgNotFound) {
			continue
		}
		if err != nil {
			return out, fmt.Errorf("deadletter: reading dead letter %d: %w", seq, err)
		}
		out = append(out, letter(m))
	}
	return out, nil
}

// At returns the dead letter with stream sequence seq.
func At(ctx context.Context, js jetstream.JetStream, t consumer.Topology, seq uint64) (Letter, error) {
	s, err := js.Stream(ctx, t.DLQ.Name)
	if err != nil {
		return Letter{}, fmt.Errorf("deadletter: dead-letter stream %s: %w", t.DLQ.Name, err)
	}
	m, err := s.GetMsg(ctx, seq)
	if err != nil {
		return Letter{}, fmt.Errorf("deadletter: dead letter %d: %w", seq, err)
	}
	return letter(m), nil
}

func letter(m *jetstream.RawStreamMsg) Letter {
	n, _ := strconv.Atoi(m.Header.Get(schemas.HeaderDeliveries))
	return Letter{
		Seq: m.Sequence, Time: m.Time, Header: m.Header, Data: m.Data,
		CommandID:    m.Header.Get(schemas.HeaderCommandID),
		CommandType:  m.Header.Get(schemas.HeaderCommandType),
		ErrorCode:    m.Header.Get(schemas.HeaderErrorCode),
		ErrorMessage: m.Header.Get(schemas.HeaderErrorMessage),
		Deliveries:   n,
	}
}

// Replay sends a dead-lettered command again: it clears the command's
// recorded outcome ([consumer.ReopenForReplay]: the new outcome event gets
// its own id) and publishes the original body and headers on
// <prefix>.cmd.<type> with the same command id (NATS control headers such
// as Nats-Expected-* are not copied). The dead letter stays until purged.
// It fails with [ErrDuplicateWindow] when JetStream would drop the command
// as a duplicate, with [ErrAlreadyReplayed] when an earlier replay has given
// the command another outcome, and with [consumer.ErrInProgress] while the
// command is being worked on; the record is then left as it was.
func Replay(ctx context.Context, js jetstream.JetStream, t consumer.Topology, prefix string, dl Letter) error {
	if dl.CommandID == "" || dl.CommandType == "" {
		return fmt.Errorf("deadletter: dead letter %d lacks %s or %s", dl.Seq, schemas.HeaderCommandID, schemas.HeaderCommandType)
	}
	msg := nats.NewMsg(prefix + ".cmd." + dl.CommandType)
	msg.Data = dl.Data
	schemas.CopyCommandHeaders(msg.Header, dl.Header, "Wxcancel-")
	msg.Header.Set(jetstream.MsgIDHeader, dl.CommandID)

	// The record is cleared first: a command delivered before it would be
	// answered from the old outcome instead of running.
	restore, err := consumer.ReopenForReplay(ctx, js, t, dl.CommandID)
	if err != nil {
		return fmt.Errorf("deadletter: replaying %s: %w", dl.CommandID, err)
	}
	ack, err := js.PublishMsg(ctx, msg)
	if err == nil && ack.Duplicate {
		err = ErrDuplicateWindow
	}
	if err != nil && restore != nil {
		// Put the outcome back, so that the command id still answers.
		if rerr := restore(context.WithoutCancel(ctx)); rerr != nil {
			err = errors.Join(err, fmt.Errorf("restoring the outcome record: %w", rerr))
		}
	}
	if err != nil {
		return fmt.Errorf("deadletter: replaying %s: %w", dl.CommandID, err)
	}
	return nil
}

// Purge removes the dead letter with stream sequence seq.
func Purge(ctx context.Context, js jetstream.JetStream, t consumer.Topology, seq uint64) error {
	s, err := js.Stream(ctx, t.DLQ.Name)
	if err != nil {
		return fmt.Errorf("deadletter: dead-letter stream %s: %w", t.DLQ.Name, err)
	}
	if err := s.DeleteMsg(ctx, seq); err != nil {
		return fmt.Errorf("deadletter: purging dead letter %d: %w", seq, err)
	}
	return nil
}
