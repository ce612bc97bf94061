// Package natsconn opens the NATS connection of wxcancel's programs (serve,
// send, events, dlq, track) from the NATS settings they share.
package natsconn

import (
	"errors"
	"fmt"
	"log/slog"
	"net/url"
	"os"
	"strings"
	"time"

	"github.com/nats-io/nats.go"
)

// Options are the NATS settings: where the servers are, and how to
// authenticate to them. The zero value has no URL, which [Connect] refuses.
type Options struct {
	// URLs are the server URLs (NATS_URL, comma-separated).
	URLs []string
	// CredsFile is a user credentials file (NATS_CREDS_FILE); exclusive
	// with NKeySeedFile.
	CredsFile string
	// NKeySeedFile is an NKey seed file (NATS_NKEY_SEED_FILE).
	NKeySeedFile string
	// TLSCAFile holds the CA certificates of the servers (NATS_TLS_CA_FILE).
	TLSCAFile string
	// TLSCertFile and TLSKeyFile are the client's certificate and key
	// (NATS_TLS_CERT_FILE, NATS_TLS_KEY_FILE); they go together.
	TLSCertFile, TLSKeyFile string
}

// Validate reports every problem of o at once, each naming its environment
// variable: URLs that do not parse, a certificate without its key (or the
// reverse), both kinds of credentials, and named files that cannot be read.
// An empty URL list is not a problem here: serve then runs an embedded
// server.
func (o Options) Validate() error {
	var errs []error
	add := func(format string, args ...any) { errs = append(errs, fmt.Errorf(format, args...)) }
	for _, u := range o.URLs {
		if _, err := url.Parse(u); err != nil || strings.ContainsAny(u, " \t") {
			add("NATS_URL: %q is not a URL", u)
		}
	}
	if (o.TLSCertFile == "") != (o.TLSKeyFile == "") {
		add("NATS_TLS_CERT_FILE and NATS_TLS_KEY_FILE go together")
	}
	if o.CredsFile != "" && o.NKeySeedFile != "" {
		add("NATS_CREDS_FILE and NATS_NKEY_SEED_FILE are exclusive")
	}
	for _, f := range []struct{ env, path string }{
		{"NATS_CREDS_FILE", o.CredsFile}, {"NATS_NKEY_SEED_FILE", o.NKeySeedFile},
		{"NATS_TLS_CA_FILE", o.TLSCAFile}, {"NATS_TLS_CERT_FILE", o.TLSCertFile}, {"NATS_TLS_KEY_FILE", o.TLSKeyFile},
	} {
		if err := CheckFile(f.env, f.path); err != nil {
			errs = append(errs, err)
		}
	}
	return errors.Join(errs...)
}

// CheckFile reports why the file a setting env names cannot be read as a
// file (nil when path is empty or the file exists). The error names the
// setting and the path, never the file's content.
func CheckFile(env, path string) error {
	if path == "" {
		return nil
	}
	st, err := os.Stat(path)
	switch {
	case err != nil:
		return fmt.Errorf("%s: cannot read %s: %v", env, path, errors.Unwrap(err))
	case st.IsDir():
		return fmt.Errorf("%s: %s is a directory", env, path)
	}
	return nil
}

// Connect opens the connection o describes: its URLs, credentials or NKey
// seed, and TLS files. It reconnects forever (a restarted NATS server is
// waited for, not fatal) and logs disconnections and asynchronous errors to
// log. name is the client name the server shows (e.g. "wxcancel serve"). It
// fails when o has no URL, when the NKey seed cannot be used, or when no
// server answers the first connection.
func Connect(o Options, name string, log *slog.Logger) (*nats.Conn, error) {
	if len(o.URLs) == 0 {
		return nil, errors.New("natsconn: no NATS URL")
	}
	opts := []nats.Option{
		nats.Name(name),
		nats.MaxReconnects(-1),
		nats.ReconnectWait(250 * time.Millisecond),
		nats.ReconnectJitter(100*time.Millisecond, time.Second),
		nats.RetryOnFailedConnect(false),
		nats.DisconnectErrHandler(func(_ *nats.Conn, err error) {
			if err != nil {
				log.Warn("disconnected from NATS", "err", err)
			}
		}),
		nats.ReconnectHandler(func(nc *nats.Conn) { log.Info("reconnected to NATS", "url", nc.ConnectedUrlRedacted()) }),
		nats.ErrorHandler(func(_ *nats.Conn, sub *nats.Subscription, err error) {
			subj := ""
			if sub != nil {
				subj = sub.Subject
			}
			log.Warn("NATS asynchronous error", "subject", subj, "err", err)
		}),
	}
	if o.CredsFile != "" {
		opts = append(opts, nats.UserCredentials(o.CredsFile))
	}
	if o.NKeySeedFile != "" {
		opt, err := nats.NkeyOptionFromSeed(o.NKeySeedFile)
		if err != nil {
			// The nats error may quote the file; report only that it failed.
			return nil, fmt.Errorf("natsconn: NATS_NKEY_SEED_FILE %s is not a usable NKey seed", o.NKeySeedFile)
		}
		opts = append(opts, opt)
	}
	if o.TLSCAFile != "" {
		opts = append(opts, nats.RootCAs(o.TLSCAFile))
	}
	if o.TLSCertFile != "" {
		opts = append(opts, nats.ClientCert(o.TLSCertFile, o.TLSKeyFile))
	}
	nc, err := nats.Connect(strings.Join(o.URLs, ","), opts...)
	if err != nil {
		return nil, fmt.Errorf("natsconn: connecting to NATS: %w", err)
	}
	return nc, nil
}
