package consumer

import (
	"slices"
	"testing"

	"github.com/wxcancel/wxcancel/schemas"
	"github.com/wxcancel/wxcancel/wxpay/wxpaysim"
)

// TestCommandTable: every command type the schemas define has an entry in
// the command table, and the WeChat Pay endpoint it calls is one the
// simulator serves; the table holds nothing else.
func TestCommandTable(t *testing.T) {
	for _, typ := range schemas.Types() {
		c, ok := commands[typ]
		switch {
		case !ok:
			t.Errorf("%s: no entry in the command table", typ)
		case c.run == nil:
			t.Errorf("%s: no run", typ)
		case c.endpoint != "" && !slices.Contains(wxpaysim.Endpoints(), c.endpoint):
			t.Errorf("%s: calls endpoint %q, which the simulator does not serve (%v)", typ, c.endpoint, wxpaysim.Endpoints())
		case c.endpoint == "" && (c.readOnly || c.reconcile != nil):
			t.Errorf("%s: sends no request, yet is read-only or reconciled by query", typ)
		}
	}
	for typ := range commands {
		if !typ.Known() {
			t.Errorf("the command table has %s, which is not a command type of schemas", typ)
		}
	}
}
