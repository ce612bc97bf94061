package main

import (
	"fmt"
	"io"
	"log/slog"
	"os"
	"strings"

	slogmulti "github.com/samber/slog-multi"
)

// sensitiveKeys are log attribute keys whose values are replaced, wherever
// they appear (top level or inside a group): secrets and personal data.
var sensitiveKeys = map[string]bool{
	"authorization":           true,
	"private_key":             true,
	"signature":               true,
	"operator_identification": true,
	"account_name":            true,
	"account_number":          true,
	"identification_name":     true,
	"identification_no":       true,
	"payee_info":              true,
	"bank_account_info":       true,
	"identity_info":           true,
	"password":                true,
	"token":                   true,
	"seed":                    true,
}

// redact is a slog ReplaceAttr: it blanks the values of sensitive keys.
func redact(_ []string, a slog.Attr) slog.Attr {
	if sensitiveKeys[strings.ToLower(a.Key)] {
		return slog.String(a.Key, "[redacted]")
	}
	return a
}

// logOptions configure newLogger.
type logOptions struct {
	level string    // debug, info, warn, error
	file  string    // optional second sink, JSON lines appended
	w     io.Writer // primary sink (stderr)
	text  bool      // text instead of JSON on the primary sink
}

// newLogger builds the service logger: JSON (or text on a terminal) on the
// primary sink and, when configured, JSON lines appended to a file, fanned
// out with slog-multi. Every sink redacts sensitive attributes. The returned
// close function closes the file sink.
func newLogger(o logOptions) (*slog.Logger, func() error, error) {
	var level slog.Level
	if err := level.UnmarshalText([]byte(o.level)); err != nil {
		return nil, nil, fmt.Errorf("WXCANCEL_LOG_LEVEL: %q is not one of debug, info, warn, error", o.level)
	}
	hopts := &slog.HandlerOptions{Level: level, ReplaceAttr: redact}
	var primary slog.Handler
	if o.text {
		primary = slog.NewTextHandler(o.w, hopts)
	} else {
		primary = slog.NewJSONHandler(o.w, hopts)
	}
	handlers := []slog.Handler{primary}
	closeFn := func() error { return nil }
	if o.file != "" {
		f, err := os.OpenFile(o.file, os.O_CREATE|os.O_APPEND|os.O_WRONLY, 0o640)
		if err != nil {
			return nil, nil, fmt.Errorf("WXCANCEL_LOG_FILE: %w", err)
		}
		handlers = append(handlers, slog.NewJSONHandler(f, hopts))
		closeFn = f.Close
	}
	return slog.New(slogmulti.Fanout(handlers...)), closeFn, nil
}

// isTerminal reports whether f is a character device (a terminal).
func isTerminal(f *os.File) bool {
	st, err := f.Stat()
	return err == nil && st.Mode()&os.ModeCharDevice != 0
}
