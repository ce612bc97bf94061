package main

import (
	"context"
	"errors"
	"fmt"
	"net"
	"net/http"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"time"

	"github.com/wxcancel/wxcancel/wxpay/wxpaysim"
)

const simHelp = `Usage: wxcancel sim [--addr HOST:PORT] [--keys-dir DIR] [--faults SPEC] [--latency D] [--step D]

Runs the WeChat Pay simulator as a standalone HTTP server until interrupted.
It generates a merchant key and its own WeChat Pay key at start, writes
what a serve needs into --keys-dir (apiclient_key.pem, pub_key.pem and
serve.env with the WXPAY_* settings) and prints the key id. Unknown
merchants and applications are created on first use, so any well-formed
command succeeds unless a fault says otherwise. With --step, applications
move on by themselves, one state per step (ACCEPTED → REVIEWING → WAITING_
MERCHANT_CONFIRM, and after confirmation to FINISH), for following them with
lifecycle tracking.

Faults (--faults) are ';'-separated: kind[@endpoint[/id]][:times=N,rate=F,delay=D,retry_after=D]
Kinds: ` + "%s" + `.
Endpoints are the command types.

Examples:
  wxcancel sim --addr 127.0.0.1:8080 --keys-dir ./data/sim
  wxcancel sim --faults 'system_error@confirm-cancel:times=2;latency:delay=100ms'
  wxcancel sim --step 30s --revoke-after 5m   # applications move on every 30s; unconfirmed ones are revoked after 5m
  wxcancel sim --addr :8080 --mchid 1900000001 --cert-serial-no 3775B6A45ACD588826D15E583A95F5DD2C6B1E1A \
    --public-key-id PUB_KEY_ID_0119000000012026120100000000000   # an identity fixed ahead, as in deploy/compose

  # in another shell: serve against it, then send a command
  set -a; . ./data/sim/serve.env; set +a; WXCANCEL_HTTP_ADDR=:9090 wxcancel serve
  wxcancel send validate-cancel --data '{"sub_mchid":"1900000109"}' --wait

Flags:
`

func runSim(ctx context.Context, a *app, args []string) error {
	fs := newFlagSet(a, "sim", fmt.Sprintf(simHelp, strings.Join(wxpaysim.FaultKinds(), ", ")))
	addr := fs.String("addr", "127.0.0.1:8080", "listen address (loopback: serve accepts plain http only to a loopback host)")
	keysDir := fs.String("keys-dir", "./data/sim", "where to write the keys and serve.env")
	mchID := fs.String("mchid", "1900000001", "the platform merchant id the simulator accepts")
	serial := fs.String("cert-serial-no", "", "the merchant certificate serial it accepts (default: random); fixed values let a serve be configured ahead")
	keyID := fs.String("public-key-id", "", "the id of its WeChat Pay public key, PUB_KEY_ID_… (default: random)")
	faults := fs.String("faults", "", "faults to inject (see above)")
	latency := fs.Duration("latency", 0, "delay every answer by this much")
	sigCache := fs.Duration("signature-cache", 0, "reuse the signature of an identical answer for this long (at most 2m; for benchmarks)")
	step := fs.Duration("step", 0, "move applications on by themselves, one state per step (0: only confirmations move them)")
	revokeAfter := fs.Duration("revoke-after", 0, "with --step, revoke applications left unconfirmed this long (default 720h)")
	if help, err := parseFlags(fs, args); help || err != nil {
		return err
	}
	if fs.NArg() > 0 {
		return fmt.Errorf("%w: unexpected arguments %q", errUsage, fs.Args())
	}
	sim, err := startSim(wxpaysim.Options{Latency: *latency, SignatureCacheTTL: *sigCache, PublicKeyID: *keyID, Step: *step, RevokeAfter: *revokeAfter},
		*faults, *mchID, *serial, *addr)
	if err != nil {
		return err
	}
	if err := writeSimKeys(sim.Server, sim.merchant, *keysDir, sim.baseURL); err != nil {
		_ = sim.srv.Close()
		return err
	}
	fmt.Fprintf(a.stdout, "WeChat Pay simulator on %s\n  public key id  %s\n  merchant       %s (serial %s)\n  serve settings %s\n",
		sim.baseURL, sim.PublicKeyID(), sim.merchant.MchID, sim.merchant.SerialNo, filepath.Join(*keysDir, "serve.env"))
	if *faults != "" {
		fmt.Fprintf(a.stdout, "  faults         %s\n", *faults)
	}
	select {
	case err := <-sim.done:
		return err
	case <-ctx.Done():
	}
	shutCtx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	if err := sim.srv.Shutdown(shutCtx); err != nil && !errors.Is(err, context.DeadlineExceeded) {
		return err
	}
	return nil
}

// simServer is the simulator serving HTTP, as `sim` and `demo` run it.
type simServer struct {
	*wxpaysim.Server
	merchant wxpaysim.Merchant
	baseURL  string
	srv      *http.Server
	done     chan error // what Serve returned
}

// startSim starts a simulator that creates unknown merchants and
// applications on first use, injects the faults of spec ([wxpaysim.ParseFaults])
// and accepts the merchant mchID with a generated key (and serial, unless
// serial is given), serving on addr. Invalid options or faults are usage
// errors.
func startSim(o wxpaysim.Options, spec, mchID, serial, addr string) (*simServer, error) {
	faults, err := wxpaysim.ParseFaults(spec)
	if err != nil {
		return nil, fmt.Errorf("%w: --faults: %v", errUsage, err)
	}
	o.AutoCreate = true
	sim, err := wxpaysim.New(o)
	if err != nil {
		return nil, fmt.Errorf("%w: %v", errUsage, err)
	}
	if err := sim.SetFaults(faults...); err != nil {
		return nil, fmt.Errorf("%w: --faults: %v", errUsage, err)
	}
	m, err := wxpaysim.NewMerchant(mchID)
	if err != nil {
		return nil, err
	}
	if serial != "" {
		m.SerialNo = serial
	}
	sim.RegisterMerchant(m)
	ln, err := net.Listen("tcp", addr)
	if err != nil {
		return nil, fmt.Errorf("--addr: %w", err)
	}
	s := &simServer{Server: sim, merchant: m, baseURL: simBaseURL(ln.Addr()),
		srv: &http.Server{Handler: sim, ReadHeaderTimeout: 10 * time.Second}, done: make(chan error, 1)}
	go func() { s.done <- s.srv.Serve(ln) }()
	return s, nil
}

// simBaseURL is the URL a serve on this machine reaches a listener at: one
// on every interface (--addr :8080) is reached on loopback, the only host
// serve accepts plain http:// to.
func simBaseURL(addr net.Addr) string {
	if tcp, ok := addr.(*net.TCPAddr); ok && tcp.IP.IsUnspecified() {
		return "http://" + net.JoinHostPort("127.0.0.1", strconv.Itoa(tcp.Port))
	}
	return "http://" + addr.String()
}

// writeSimKeys writes the key files and a serve.env holding every setting
// a serve needs to talk to the simulator at baseURL.
func writeSimKeys(sim *wxpaysim.Server, m wxpaysim.Merchant, dir, baseURL string) error {
	abs, err := filepath.Abs(dir)
	if err != nil {
		return err
	}
	files, err := sim.WriteKeys(abs, m)
	if err != nil {
		return err
	}
	env := append(files.Env(), "WXPAY_BASE_URL="+baseURL, "WXPAY_BACKUP_BASE_URL=-")
	if err := os.WriteFile(filepath.Join(abs, "serve.env"), []byte(strings.Join(env, "\n")+"\n"), 0o600); err != nil {
		return fmt.Errorf("writing serve.env: %w", err)
	}
	return nil
}
