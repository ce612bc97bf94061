// Package embeddednats runs a NATS server with JetStream inside the
// process: for `wxcancel serve` without NATS_URL, for the demo, and for
// tests.
package embeddednats

import (
	"errors"
	"fmt"
	"time"

	"github.com/nats-io/nats-server/v2/server"
)

// MaxPayload is the largest message the embedded server accepts: 1 MiB, so
// that a command over the 64 KiB command limit still reaches the service
// and is answered with a rejected event.
const MaxPayload = 1 << 20

// Option changes the server Start makes.
type Option func(*server.Options)

// SyncAlways has the server fsync every JetStream write before it
// acknowledges it (sync_interval: always). The file store's default syncs
// every two minutes: a kill -9 of the server could lose writes it
// acknowledged.
func SyncAlways() Option { return func(o *server.Options) { o.SyncAlways = true } }

// Start starts a server with JetStream, storing under storeDir and
// listening on host:port (port -1 picks a free one), and waits up to 10s
// for it to accept connections. The caller owns it: Shutdown and
// WaitForShutdown when done. It fails when the options are refused (the
// store directory cannot be used) or the server does not become ready (the
// port is taken).
func Start(host string, port int, storeDir string, options ...Option) (*server.Server, error) {
	opts := &server.Options{
		ServerName: "wxcancel-embedded",
		Host:       host,
		Port:       port,
		JetStream:  true,
		StoreDir:   storeDir,
		NoSigs:     true,
		NoLog:      true,
		MaxPayload: MaxPayload,
	}
	for _, o := range options {
		o(opts)
	}
	s, err := server.NewServer(opts)
	if err != nil {
		return nil, fmt.Errorf("embedded NATS server: %w", err)
	}
	s.Start()
	if !s.ReadyForConnections(10 * time.Second) {
		s.Shutdown()
		return nil, errors.New("embedded NATS server did not start within 10s")
	}
	return s, nil
}
