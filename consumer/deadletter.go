package consumer

import (
	"context"
	"fmt"
	"strconv"
	"strings"
	"unicode"
	"unicode/utf8"

	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"

	"github.com/wxcancel/wxcancel/publisher"
	"github.com/wxcancel/wxcancel/schemas"
)

// copyToDeadLetters copies d's command to <prefix>.dlq.<type>: its body and
// headers (but for NATS's own), and the Wxcancel-* headers naming it and
// cause. Each run of the command has its own copy: a replay that fails again
// is copied again, not dropped as a duplicate of the first copy.
func (s *Service) copyToDeadLetters(ctx context.Context, d *delivery, rec *record, cause publisher.ErrorData) error {
	out := nats.NewMsg(s.cfg.Prefix + ".dlq." + schemas.EncodeToken(d.ctype))
	out.Data = d.msg.Data()
	schemas.CopyCommandHeaders(out.Header, d.msg.Headers(), "")
	out.Header.Set(schemas.HeaderCommandID, d.id)
	out.Header.Set(schemas.HeaderCommandType, d.ctype)
	out.Header.Set(schemas.HeaderErrorCode, cause.Code)
	out.Header.Set(schemas.HeaderErrorMessage, dlqHeaderValue(cause.Message))
	out.Header.Set(schemas.HeaderDeliveries, strconv.FormatUint(d.number, 10))
	id := "dlq/" + d.id
	if rec.Replays > 0 {
		id += "/replay-" + strconv.Itoa(rec.Replays)
	}
	if _, err := s.js.PublishMsg(ctx, out, jetstream.WithMsgID(id)); err != nil {
		return fmt.Errorf("dead-letter copy: %w", err)
	}
	s.metrics.DeadLetters.WithLabelValues(metricType(d.ctype)).Inc()
	d.log.Warn("dead-lettered", "error_code", cause.Code, "attempts", rec.Attempts)
	return nil
}

// dlqHeaderValue keeps an error message fit for a header: control
// characters (line breaks included) become spaces, invalid UTF-8 is
// replaced, and it is cut to at most 512 bytes on a character boundary.
func dlqHeaderValue(s string) string {
	s = strings.Map(func(r rune) rune {
		if unicode.IsControl(r) {
			return ' '
		}
		return r
	}, strings.ToValidUTF8(s, "\uFFFD"))
	if len(s) > 512 {
		cut := 512
		for cut > 0 && !utf8.RuneStart(s[cut]) {
			cut--
		}
		s = s[:cut]
	}
	return s
}
