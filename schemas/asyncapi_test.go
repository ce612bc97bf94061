package schemas_test

import (
	"encoding/json"
	"io/fs"
	"net/url"
	"path"
	"regexp"
	"slices"
	"strconv"
	"strings"
	"testing"

	"github.com/wxcancel/wxcancel/schemas"
)

func readJSON(t *testing.T, name string) map[string]any {
	t.Helper()
	b, err := schemas.FS.ReadFile(name)
	if err != nil {
		t.Fatal(err)
	}
	var doc map[string]any
	if err := json.Unmarshal(b, &doc); err != nil {
		t.Fatalf("%s is not JSON: %v", name, err)
	}
	return doc
}

// lookup resolves a JSON pointer (RFC 6901) in doc.
func lookup(doc any, pointer string) (any, bool) {
	if pointer == "" {
		return doc, true
	}
	if !strings.HasPrefix(pointer, "/") {
		return nil, false
	}
	cur := doc
	for _, tok := range strings.Split(pointer[1:], "/") {
		tok = strings.NewReplacer("~1", "/", "~0", "~").Replace(tok)
		switch c := cur.(type) {
		case map[string]any:
			v, ok := c[tok]
			if !ok {
				return nil, false
			}
			cur = v
		case []any:
			i, err := strconv.Atoi(tok)
			if err != nil || i < 0 || i >= len(c) {
				return nil, false
			}
			cur = c[i]
		default:
			return nil, false
		}
	}
	return cur, true
}

// refs returns every $ref in v.
func refs(v any) []string {
	var out []string
	switch v := v.(type) {
	case map[string]any:
		if r, ok := v["$ref"].(string); ok {
			out = append(out, r)
		}
		for _, e := range v {
			out = append(out, refs(e)...)
		}
	case []any:
		for _, e := range v {
			out = append(out, refs(e)...)
		}
	}
	return out
}

// TestEveryRefResolves resolves every $ref of every embedded document: local
// ones within the document, relative ones to another embedded file (and the
// fragment within it). Nothing may point outside FS.
func TestEveryRefResolves(t *testing.T) {
	var files []string
	err := fs.WalkDir(schemas.FS, ".", func(p string, d fs.DirEntry, err error) error {
		if err == nil && !d.IsDir() {
			files = append(files, p)
		}
		return err
	})
	if err != nil {
		t.Fatal(err)
	}
	referenced := map[string]bool{}
	total := 0
	for _, f := range files {
		doc := readJSON(t, f)
		for _, r := range refs(doc) {
			total++
			u, err := url.Parse(r)
			if err != nil || u.Scheme != "" || u.Host != "" {
				t.Errorf("%s: $ref %q is not a relative reference", f, r)
				continue
			}
			target, targetDoc := f, any(doc)
			if u.Path != "" {
				target = path.Join(path.Dir(f), u.Path)
				if _, err := fs.Stat(schemas.FS, target); err != nil {
					t.Errorf("%s: $ref %q: %s is not embedded", f, r, target)
					continue
				}
				targetDoc = readJSON(t, target)
				referenced[target] = true
			}
			if _, ok := lookup(targetDoc, u.Fragment); !ok {
				t.Errorf("%s: $ref %q: #%s does not resolve in %s", f, r, u.Fragment, target)
			}
		}
	}
	if total == 0 {
		t.Fatal("no $ref found at all")
	}
	// The AsyncAPI document refers to every schema file.
	for _, f := range files {
		if f != schemas.AsyncAPIPath && !referenced[f] {
			t.Errorf("%s is not referred to by %s", f, schemas.AsyncAPIPath)
		}
	}
}

// TestAsyncAPIDocument checks the AsyncAPI document against docs/interface.md:
// its version, the five channels with their addresses and parameters, a
// message per command type with its schema, and operations that use them.
func TestAsyncAPIDocument(t *testing.T) {
	doc := readJSON(t, schemas.AsyncAPIPath)
	if doc["asyncapi"] != "3.0.0" {
		t.Fatalf("asyncapi = %v, want 3.0.0", doc["asyncapi"])
	}
	if info, _ := doc["info"].(map[string]any); info["title"] == nil || info["version"] == nil {
		t.Error("info needs a title and a version")
	}
	channels, _ := doc["channels"].(map[string]any)
	wantAddresses := map[string]bool{
		"{prefix}.cmd.{type}":                    true,
		"{prefix}.evt.{type}.{outcome}":          true,
		"{prefix}.evt.status.{resource}.{key}":   true,
		"{prefix}.evt.tracking.{resource}.{key}": true,
		"{prefix}.dlq.{type}":                    true,
	}
	param := regexp.MustCompile(`\{([a-z]+)\}`)
	enums := map[string][]string{"outcome": {}, "resource": {}}
	for _, o := range schemas.Outcomes() {
		enums["outcome"] = append(enums["outcome"], string(o))
	}
	for _, r := range schemas.Resources() {
		enums["resource"] = append(enums["resource"], string(r))
	}
	var tracked []string
	for _, r := range schemas.TrackedResources() {
		tracked = append(tracked, string(r))
	}
	var typeNames []string
	for _, typ := range schemas.Types() {
		typeNames = append(typeNames, string(typ))
	}
	for name, c := range channels {
		ch := c.(map[string]any)
		addr, _ := ch["address"].(string)
		if !wantAddresses[addr] {
			t.Errorf("channel %s: unexpected address %q", name, addr)
		}
		delete(wantAddresses, addr)
		params, _ := ch["parameters"].(map[string]any)
		var inAddr []string
		for _, m := range param.FindAllStringSubmatch(addr, -1) {
			inAddr = append(inAddr, m[1])
			p, ok := params[m[1]].(map[string]any)
			if !ok {
				t.Errorf("channel %s: no parameter %s", name, m[1])
				continue
			}
			if p["description"] == nil {
				t.Errorf("channel %s: parameter %s is not described", name, m[1])
			}
			want := enums[m[1]]
			if m[1] == "type" && (strings.Contains(addr, ".cmd.") || strings.Contains(addr, ".dlq.")) {
				want = typeNames
			}
			if m[1] == "resource" && strings.Contains(addr, ".tracking.") {
				want = tracked
			}
			if want != nil && !slices.Equal(strs(p["enum"]), want) {
				t.Errorf("channel %s: parameter %s enum %v, want %v", name, m[1], p["enum"], want)
			}
		}
		if len(inAddr) != len(params) {
			t.Errorf("channel %s: parameters %v for address %q", name, keys(params), addr)
		}
		if msgs, _ := ch["messages"].(map[string]any); len(msgs) == 0 {
			t.Errorf("channel %s has no messages", name)
		}
	}
	for addr := range wantAddresses {
		t.Errorf("no channel with address %q", addr)
	}

	// Every command type has a message whose payload is its schema, on the
	// commands channel.
	messages, _ := mustLookup(t, doc, "/components/messages").(map[string]any)
	payloads := map[string]bool{}
	for name, m := range messages {
		p, _ := m.(map[string]any)["payload"].(map[string]any)
		if s, ok := p["schema"].(map[string]any); ok {
			payloads[s["$ref"].(string)] = true
			if p["schemaFormat"] != "application/schema+json;version=2020-12" {
				t.Errorf("message %s: schemaFormat %v", name, p["schemaFormat"])
			}
		}
	}
	for _, typ := range schemas.Types() {
		if !payloads["./"+schemas.CommandSchemaPath(typ)] {
			t.Errorf("no message has the payload %s", schemas.CommandSchemaPath(typ))
		}
		if _, ok := lookup(doc, "/channels/commands/messages/"+string(typ)); !ok {
			t.Errorf("the commands channel has no message %s", typ)
		}
	}
	for _, p := range []string{schemas.OutcomeSchemaPath, schemas.StatusSchemaPath} {
		if !payloads["./"+p] {
			t.Errorf("no message has the payload %s", p)
		}
	}

	// Headers: commands carry Nats-Msg-Id, traceparent and Content-Type;
	// events add the CloudEvents content type; dead letters the Wxcancel-*
	// headers.
	for _, h := range []string{"Nats-Msg-Id", "traceparent", "Content-Type"} {
		mustLookup(t, doc, "/components/schemas/commandHeaders/properties/"+h)
		mustLookup(t, doc, "/components/schemas/eventHeaders/properties/"+h)
	}
	if ct := mustLookup(t, doc, "/components/schemas/eventHeaders/properties/Content-Type/const"); ct != schemas.EventContentType {
		t.Errorf("event Content-Type %v, want %s", ct, schemas.EventContentType)
	}
	dlq := []string{schemas.HeaderCommandID, schemas.HeaderCommandType, schemas.HeaderErrorCode, schemas.HeaderErrorMessage, schemas.HeaderDeliveries}
	if got := strs(mustLookup(t, doc, "/components/schemas/deadLetterHeaders/required")); !slices.Equal(got, dlq) {
		t.Errorf("dead-letter headers %v, want %v", got, dlq)
	}
	idPattern := regexp.MustCompile(mustLookup(t, doc, "/components/schemas/commandHeaders/properties/Nats-Msg-Id/pattern").(string))
	for id, ok := range map[string]bool{"cmd-1": true, "order:42.cancel_1": true, strings.Repeat("a", 128): true,
		"": false, "a b": false, "a*": false, strings.Repeat("a", 129): false} {
		if idPattern.MatchString(id) != ok {
			t.Errorf("command id %q: pattern says %v", id, !ok)
		}
	}

	// Operations: the service receives commands and sends the rest, each
	// on an existing channel and with that channel's messages.
	ops, _ := doc["operations"].(map[string]any)
	actions := map[string]string{}
	for name, o := range ops {
		op := o.(map[string]any)
		chRef, _ := op["channel"].(map[string]any)["$ref"].(string)
		chName, ok := strings.CutPrefix(chRef, "#/channels/")
		if _, exists := channels[chName]; !ok || !exists {
			t.Errorf("operation %s: channel %q does not exist", name, chRef)
			continue
		}
		actions[chName] = op["action"].(string)
		for _, m := range op["messages"].([]any) {
			ref := m.(map[string]any)["$ref"].(string)
			if !strings.HasPrefix(ref, chRef+"/messages/") {
				t.Errorf("operation %s: message %s is not one of its channel's", name, ref)
			}
		}
	}
	want := map[string]string{"commands": "receive", "outcomes": "send", "statusChanges": "send", "trackingEnded": "send", "deadLetters": "send"}
	if len(actions) != len(want) {
		t.Errorf("operations cover %v, want %v", actions, want)
	}
	for ch, a := range want {
		if actions[ch] != a {
			t.Errorf("channel %s: action %q, want %q", ch, actions[ch], a)
		}
	}
}

func mustLookup(t *testing.T, doc any, pointer string) any {
	t.Helper()
	v, ok := lookup(doc, pointer)
	if !ok {
		t.Fatalf("%s is missing", pointer)
	}
	return v
}

func strs(v any) []string {
	var out []string
	s, _ := v.([]any)
	for _, e := range s {
		str, _ := e.(string)
		out = append(out, str)
	}
	return out
}

func keys(m map[string]any) []string {
	var out []string
	for k := range m {
		out = append(out, k)
	}
	slices.Sort(out)
	return out
}
