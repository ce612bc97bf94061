package schemas

import (
	"bytes"
	"embed"
	"errors"
	"fmt"
	"slices"
	"strings"
	"sync"

	"github.com/santhosh-tekuri/jsonschema/v6"
	jskind "github.com/santhosh-tekuri/jsonschema/v6/kind"
)

// FS holds the machine-readable contract: commands/<type>.json (one JSON
// Schema 2020-12 per command type), events/outcome.json,
// events/status.json and events/tracking.json (the CloudEvents envelopes)
// and asyncapi.json (an
// AsyncAPI 3.0.0 document of the subjects, referring to the others by
// relative path).
//
//go:embed commands/*.json events/*.json asyncapi.json
var FS embed.FS

// The paths in FS of the event schemas.
const (
	OutcomeSchemaPath  = "events/outcome.json"
	StatusSchemaPath   = "events/status.json"
	TrackingSchemaPath = "events/tracking.json"
	AsyncAPIPath       = "asyncapi.json"
)

// CommandSchemaPath returns the path in FS of the JSON Schema of commands
// of type t.
func CommandSchemaPath(t Type) string { return "commands/" + string(t) + ".json" }

// schemaURL is where the embedded schemas are registered with the
// compiler; nothing is ever loaded from it.
const schemaURL = "urn:wxcancel:schemas/"

type compiledSchemas struct {
	commands                  map[Type]*jsonschema.Schema
	outcome, status, tracking *jsonschema.Schema
	err                       error
}

// compiled compiles the embedded schemas once, with format assertions on
// (date-time is checked).
var compiled = sync.OnceValue(func() compiledSchemas {
	c := jsonschema.NewCompiler()
	c.AssertFormat()
	c.DefaultDraft(jsonschema.Draft2020)
	paths := []string{OutcomeSchemaPath, StatusSchemaPath, TrackingSchemaPath}
	for _, t := range types {
		paths = append(paths, CommandSchemaPath(t))
	}
	for _, p := range paths {
		b, err := FS.ReadFile(p)
		if err != nil {
			return compiledSchemas{err: err}
		}
		doc, err := jsonschema.UnmarshalJSON(bytes.NewReader(b))
		if err != nil {
			return compiledSchemas{err: fmt.Errorf("schemas: %s: %w", p, err)}
		}
		if err := c.AddResource(schemaURL+p, doc); err != nil {
			return compiledSchemas{err: fmt.Errorf("schemas: %s: %w", p, err)}
		}
	}
	cs := compiledSchemas{commands: make(map[Type]*jsonschema.Schema)}
	var err error
	for _, t := range types {
		if cs.commands[t], err = c.Compile(schemaURL + CommandSchemaPath(t)); err != nil {
			return compiledSchemas{err: fmt.Errorf("schemas: compiling %s: %w", CommandSchemaPath(t), err)}
		}
	}
	if cs.outcome, err = c.Compile(schemaURL + OutcomeSchemaPath); err != nil {
		return compiledSchemas{err: fmt.Errorf("schemas: compiling %s: %w", OutcomeSchemaPath, err)}
	}
	if cs.status, err = c.Compile(schemaURL + StatusSchemaPath); err != nil {
		return compiledSchemas{err: fmt.Errorf("schemas: compiling %s: %w", StatusSchemaPath, err)}
	}
	if cs.tracking, err = c.Compile(schemaURL + TrackingSchemaPath); err != nil {
		return compiledSchemas{err: fmt.Errorf("schemas: compiling %s: %w", TrackingSchemaPath, err)}
	}
	return cs
})

// SchemaError is the error of [ValidateCommandJSON] and [ValidateEventJSON]
// for JSON that does not match its schema. It names the places and the
// keywords that failed, never the values found there.
type SchemaError struct {
	// Schema is the path in FS of the schema that was applied.
	Schema string
	// Problems lists every failing place, sorted.
	Problems []SchemaProblem
}

// SchemaProblem is one place where JSON does not match its schema.
type SchemaProblem struct {
	// Location is a JSON pointer (RFC 6901) into the validated JSON: "" for
	// the whole of it, "/payee_info/bank_account_info" for a nested value.
	Location string
	// Keyword is the schema keyword that failed (required, maxLength,
	// pattern, …), "json" for text that is not a single JSON value, or
	// "consistent" for the cross-checks of ValidateEventJSON.
	Keyword string
	// Detail adds what the keyword alone does not say (the missing
	// properties of required), or "".
	Detail string
}

// Error returns one line naming every problem.
func (e *SchemaError) Error() string {
	var b strings.Builder
	fmt.Fprintf(&b, "schemas: the JSON does not match %s:", e.Schema)
	for i, p := range e.Problems {
		if i > 0 {
			b.WriteByte(';')
		}
		loc := p.Location
		if loc == "" {
			loc = "(root)"
		}
		fmt.Fprintf(&b, " at %s: %s", loc, p.Keyword)
		if p.Detail != "" {
			fmt.Fprintf(&b, " (%s)", p.Detail)
		}
	}
	return b.String()
}

// ValidateCommandJSON validates body against the JSON Schema of commands of
// type t alone (no Go-side rule): nil when it matches, an [*SchemaError]
// when it does not, an [*InvalidError] matching [ErrUnknownType] for an
// unknown type, or the error of compiling the embedded schemas (which
// tests rule out). Body-level checks that JSON Schema cannot express —
// size, UTF-8 validity, unpaired surrogates, duplicate keys — are [Parse]'s
// only; data after the JSON value is refused here too.
func ValidateCommandJSON(t Type, body []byte) error {
	cs := compiled()
	if cs.err != nil {
		return cs.err
	}
	sch := cs.commands[t]
	if sch == nil {
		return unknownTypeError(string(t))
	}
	doc, err := jsonschema.UnmarshalJSON(bytes.NewReader(body))
	if err != nil {
		return &SchemaError{Schema: CommandSchemaPath(t), Problems: []SchemaProblem{{Keyword: "json", Detail: "not a single JSON value"}}}
	}
	return schemaError(CommandSchemaPath(t), sch.Validate(doc))
}

// ValidateEventJSON validates an event (a whole CloudEvent in structured
// JSON mode) against events/status.json when its type is
// wxpay.status.changed, events/tracking.json when it is
// wxpay.tracking.ended, and events/outcome.json otherwise. Beyond the
// schemas it checks what they cannot: an outcome event's subject equals
// data.command_id and its id is "outcome/" + subject; a status or tracking
// event's subject is data.resource + "/" + data.key. It returns nil, an
// [*SchemaError], or the error of compiling the embedded schemas.
func ValidateEventJSON(body []byte) error {
	cs := compiled()
	if cs.err != nil {
		return cs.err
	}
	doc, err := jsonschema.UnmarshalJSON(bytes.NewReader(body))
	if err != nil {
		return &SchemaError{Schema: OutcomeSchemaPath, Problems: []SchemaProblem{{Keyword: "json", Detail: "not a single JSON value"}}}
	}
	ev, _ := doc.(map[string]any)
	sch, schPath := cs.outcome, OutcomeSchemaPath
	switch ev["type"] {
	case EventTypeStatusChanged:
		sch, schPath = cs.status, StatusSchemaPath
	case EventTypeTrackingEnded:
		sch, schPath = cs.tracking, TrackingSchemaPath
	}
	if err := schemaError(schPath, sch.Validate(doc)); err != nil {
		return err
	}
	// The schema guarantees the shapes used below.
	data := ev["data"].(map[string]any)
	var ps []SchemaProblem
	if schPath != OutcomeSchemaPath {
		if want := fmt.Sprint(data["resource"], "/", data["key"]); ev["subject"] != want {
			ps = append(ps, SchemaProblem{Location: "/subject", Keyword: "consistent", Detail: "must be data.resource/data.key"})
		}
	} else {
		if ev["subject"] != data["command_id"] {
			ps = append(ps, SchemaProblem{Location: "/subject", Keyword: "consistent", Detail: "must equal data.command_id"})
		}
		if !outcomeID(fmt.Sprint(ev["id"]), fmt.Sprint(ev["subject"])) {
			ps = append(ps, SchemaProblem{Location: "/id", Keyword: "consistent", Detail: "must be outcome/<subject> or outcome/<subject>/replay-<n>"})
		}
	}
	if len(ps) > 0 {
		return &SchemaError{Schema: schPath, Problems: ps}
	}
	return nil
}

// schemaError turns the error of Schema.Validate into an *SchemaError that
// holds no value of the instance.
func schemaError(schema string, err error) error {
	if err == nil {
		return nil
	}
	var ve *jsonschema.ValidationError
	if !errors.As(err, &ve) {
		return fmt.Errorf("schemas: validating against %s: %w", schema, err)
	}
	var ps []SchemaProblem
	var walk func(e *jsonschema.ValidationError)
	walk = func(e *jsonschema.ValidationError) {
		if len(e.Causes) > 0 {
			for _, c := range e.Causes {
				walk(c)
			}
			return
		}
		p := SchemaProblem{Location: pointer(e.InstanceLocation), Keyword: "schema"}
		if kp := e.ErrorKind.KeywordPath(); len(kp) > 0 {
			p.Keyword = kp[len(kp)-1]
		}
		switch k := e.ErrorKind.(type) {
		case *jskind.Required:
			p.Detail = "missing " + strings.Join(k.Missing, ", ")
		case *jskind.FalseSchema:
			p.Keyword = "false"
		}
		ps = append(ps, p)
	}
	walk(ve)
	slices.SortFunc(ps, func(a, b SchemaProblem) int {
		return strings.Compare(a.Location+"\x00"+a.Keyword+"\x00"+a.Detail, b.Location+"\x00"+b.Keyword+"\x00"+b.Detail)
	})
	return &SchemaError{Schema: schema, Problems: slices.Compact(ps)}
}

// pointer writes an instance location as a JSON pointer.
func pointer(tokens []string) string {
	var b strings.Builder
	for _, t := range tokens {
		b.WriteByte('/')
		b.WriteString(strings.NewReplacer("~", "~0", "/", "~1").Replace(t))
	}
	return b.String()
}

// outcomeID reports whether id is the id of an outcome event of command
// subject: outcome/<subject>, or outcome/<subject>/replay-<n> (n ≥ 1) for
// the outcome of a replay from the dead-letter stream.
func outcomeID(id, subject string) bool {
	rest, ok := strings.CutPrefix(id, "outcome/"+subject)
	if !ok {
		return false
	}
	if rest == "" {
		return true
	}
	n, ok := strings.CutPrefix(rest, "/replay-")
	return ok && n != "" && n[0] != '0' && strings.Trim(n, "0123456789") == ""
}
