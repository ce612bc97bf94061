package main

import (
	"bytes"
	"encoding/json"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/wxcancel/wxcancel/publisher"
	"github.com/wxcancel/wxcancel/schemas"
	"github.com/wxcancel/wxcancel/wxpay/wxpaysim"
)

func TestMain(m *testing.M) {
	if isChild(os.Args[1:]) { // the nats-server child of the short run
		os.Exit(runChild(os.Args[1:]))
	}
	os.Exit(m.Run())
}

// TestShortChaos runs a short chaos: 10 kills, one NATS restart, a few
// hundred commands. Every count that must be 0 is.
func TestShortChaos(t *testing.T) {
	if testing.Short() {
		t.Skip("builds and runs the service")
	}
	tmp := t.TempDir()
	bin := filepath.Join(tmp, "wxcancel")
	if out, err := exec.Command("go", "build", "-o", bin, "../wxcancel").CombinedOutput(); err != nil {
		t.Fatalf("go build: %v\n%s", err, out)
	}
	var progress, table bytes.Buffer
	o := options{instances: 3, kills: 10, natsRestarts: 1, rate: 20, seed: 20261207, serviceBin: bin, revokeAfter: 5 * time.Second}
	c, problems, err := run(t.Context(), o, &progress)
	c.print(&table, o)
	t.Logf("\n%s%s", table.String(), strings.Join(problems, "\n"))
	if err != nil {
		t.Fatalf("%v\n%s", err, progress.String())
	}
	if c.Kills != 10 || c.NATSRestarts != 1 || c.Commands < 100 || c.Hostile == 0 {
		t.Errorf("the run did less than asked: %+v", c)
	}
	for name, n := range c.mustBeZero() {
		if n != 0 {
			t.Errorf("%s: %d", name, n)
		}
	}
}

// TestCheckCounts: the checks of outcomes (lost, duplicated), status
// changes (backwards) and tracking (lost) count what they are there to
// count. The checks of POSTs read the simulator's request log, which this
// test leaves empty: they are not exercised here.
func TestCheckCounts(t *testing.T) {
	sim, err := wxpaysim.New(wxpaysim.Options{})
	if err != nil {
		t.Fatal(err)
	}
	l := newLoad(sim, 1, newSecrets())
	l.byID = map[string]sent{
		"ok": {id: "ok", typ: "validate-cancel"}, "lost": {id: "lost", typ: "validate-cancel"}, "dup": {id: "dup", typ: "validate-cancel"},
	}
	outcome := func(id string, o schemas.Outcome) publisher.Event {
		return publisher.Event{Type: "wxpay.validate-cancel." + string(o), Subject: id, Data: json.RawMessage(`{}`)}
	}
	st := stored{
		outcomes: map[string][]publisher.Event{"ok": {outcome("ok", schemas.Succeeded)}, "dup": {outcome("dup", schemas.Succeeded), outcome("dup", schemas.Succeeded)}},
		statuses: map[string][]publisher.StatusData{
			"cancel-withdraw/A1": {{State: "REVIEWING"}, {PreviousState: "REVIEWING", State: "ACCEPTED"}},                              // backwards
			"cancel-withdraw/A2": {{State: "REVIEWING"}, {PreviousState: "REVIEWING", State: "WAITING_MERCHANT_CONFIRM"}},              // not final, no end: lost
			"cancel-withdraw/A3": {{State: "WAITING_MERCHANT_CONFIRM"}, {PreviousState: "WAITING_MERCHANT_CONFIRM", State: "REVOKED"}}, // final
			"cancel-withdraw/A4": {{State: "REVIEWING"}},                                                                               // still tracked
		},
		ended: map[string]int{},
	}
	var c counts
	check(&c, l, st, sim, map[string]bool{"cancel-withdraw/A4": true})
	if c.Lost != 1 || c.Duplicated != 1 || c.Backwards != 1 || c.TrackingLost != 2 {
		t.Errorf("lost %d, duplicated %d, backwards %d, tracking lost %d; want 1, 1, 1, 2 (A1 and A2)", c.Lost, c.Duplicated, c.Backwards, c.TrackingLost)
	}
}

// TestSecretsScan: a piece of the key, a whole sent value and a piece of a
// signature are found; what merely looks alike is not.
func TestSecretsScan(t *testing.T) {
	s := newSecrets()
	key := "-----BEGIN PRIVATE KEY-----\nMIIEvQIBADANBgkqhkiG9w0BAQEFAASCBKcwggSjAgEAAoIBAQC7VJTUt9Us8cKj\nMzEfYyjiWA4R4/M2bS1GB4t7NXp98C3SC6dVMvDuictGeurT8jNbvJZHtCSuYEvu\n-----END PRIVATE KEY-----\n"
	s.addKey([]byte(key))
	s.add("6222021234567890123", "运营张三01")
	s.addPieces(strings.Repeat("QUJD", 30), pieceLen)
	dir := t.TempDir()
	path := filepath.Join(dir, "serve.log")
	lines := []string{
		`{"msg":"fine","sub_mchid":"1900000109"}`,
		`{"msg":"leak","pem":"` + "NXp98C3SC6dVMvDuictGeurT8jNbvJZHtCSuYEvu" + `"}`,
		`{"msg":"leak","account":"6222021234567890123"}`,
		`{"msg":"fine","account":"622202123456789012"}`,
		`{"msg":"leak","operator":"运营张三01"}`,
		`{"msg":"leak","auth":"` + strings.Repeat("QUJD", 20) + `"}`,
	}
	if err := os.WriteFile(path, []byte(strings.Join(lines, "\n")+"\n"), 0o600); err != nil {
		t.Fatal(err)
	}
	found, err := s.scan([]string{path})
	if err != nil {
		t.Fatal(err)
	}
	if len(found) != 4 {
		t.Errorf("found %d lines, want the 4 leaks: %v", len(found), found)
	}
	for _, f := range found {
		if !strings.Contains(f, `"leak"`) {
			t.Errorf("a line without a secret was found: %s", f)
		}
	}
}

// TestHostileInputsAreInvalid: every hostile input is refused by the
// service's own validation (or has an id that is not a command id), so
// that a rejected outcome is what it must get.
func TestHostileInputsAreInvalid(t *testing.T) {
	for _, h := range hostileInputs(1) {
		_, err := schemas.Parse(h.typ, h.body)
		if err == nil && schemas.ValidCommandID(h.id) {
			t.Errorf("%s: a valid command", h.name)
		}
	}
}
