package consumer

import (
	"errors"
	"fmt"
	"log/slog"
	"strings"
	"time"

	"github.com/nats-io/nats-server/v2/server"
	"github.com/nats-io/nats.go"
)

// Connect opens the NATS connection described by c: its URLs, credentials or
// NKey seed, and TLS files. It reconnects forever (a restarted NATS server is
// waited for, not fatal) and logs disconnections. name is the client name
// shown by the server (e.g. "wxcancel serve").
func Connect(c Config, name string, log *slog.Logger) (*nats.Conn, error) {
	if len(c.NATSURLs) == 0 {
		return nil, errors.New("consumer: no NATS URL (start an embedded server first)")
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
	if c.NATSCredsFile != "" {
		opts = append(opts, nats.UserCredentials(c.NATSCredsFile))
	}
	if c.NATSNKeySeedFile != "" {
		o, err := nats.NkeyOptionFromSeed(c.NATSNKeySeedFile)
		if err != nil {
			// The nats error may quote the file; report only that it failed.
			return nil, fmt.Errorf("consumer: NATS_NKEY_SEED_FILE %s is not a usable NKey seed", c.NATSNKeySeedFile)
		}
		opts = append(opts, o)
	}
	if c.NATSTLSCAFile != "" {
		opts = append(opts, nats.RootCAs(c.NATSTLSCAFile))
	}
	if c.NATSTLSCertFile != "" {
		opts = append(opts, nats.ClientCert(c.NATSTLSCertFile, c.NATSTLSKeyFile))
	}
	nc, err := nats.Connect(strings.Join(c.NATSURLs, ","), opts...)
	if err != nil {
		return nil, fmt.Errorf("consumer: connecting to NATS: %w", err)
	}
	return nc, nil
}

// EmbeddedServer starts an in-process NATS server with JetStream, storing
// under storeDir, listening on host:port (port -1 picks a free one). The
// caller owns it: Shutdown and WaitForShutdown when done.
func EmbeddedServer(host string, port int, storeDir string) (*server.Server, error) {
	opts := &server.Options{
		ServerName: "wxcancel-embedded",
		Host:       host,
		Port:       port,
		JetStream:  true,
		StoreDir:   storeDir,
		NoSigs:     true,
		NoLog:      true,
		// Commands up to 1 MiB reach the service, so that one over the
		// 64 KiB command limit is answered with a rejected event.
		MaxPayload: 1 << 20,
	}
	s, err := server.NewServer(opts)
	if err != nil {
		return nil, fmt.Errorf("consumer: embedded NATS server: %w", err)
	}
	s.Start()
	if !s.ReadyForConnections(10 * time.Second) {
		s.Shutdown()
		return nil, errors.New("consumer: embedded NATS server did not start within 10s")
	}
	return s, nil
}
