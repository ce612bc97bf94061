package schemas_test

import (
	"bytes"
	"encoding/json"
	"errors"
	"os"
	"path/filepath"
	"testing"

	"github.com/cloudevents/sdk-go/v2/event"

	"github.com/wxcancel/wxcancel/schemas"
)

// eventExample is one entry of testdata/events.json: an event and whether
// it is valid; an invalid one names the places (JSON pointer) and keywords
// that must be among the problems reported.
type eventExample struct {
	Name     string `json:"name"`
	Valid    bool   `json:"valid"`
	Problems []struct {
		Location string `json:"location"`
		Keyword  string `json:"keyword"`
	} `json:"problems"`
	Event json.RawMessage `json:"event"`
}

func TestEventExamples(t *testing.T) {
	b, err := os.ReadFile(filepath.Join("testdata", "events.json"))
	if err != nil {
		t.Fatal(err)
	}
	var examples []eventExample
	dec := json.NewDecoder(bytes.NewReader(b))
	dec.DisallowUnknownFields()
	if err := dec.Decode(&examples); err != nil {
		t.Fatal(err)
	}
	var valid, invalid int
	for _, ex := range examples {
		t.Run(ex.Name, func(t *testing.T) {
			err := schemas.ValidateEventJSON(ex.Event)
			if ex.Valid {
				valid++
				if err != nil {
					t.Fatalf("ValidateEventJSON: %v", err)
				}
				// The CloudEvents SDK must read it as a valid event too.
				var ce event.Event
				if err := json.Unmarshal(ex.Event, &ce); err != nil {
					t.Fatalf("CloudEvents SDK cannot decode it: %v", err)
				}
				if err := ce.Validate(); err != nil {
					t.Fatalf("CloudEvents SDK finds it invalid: %v", err)
				}
				if ce.SpecVersion() != schemas.SpecVersion || ce.DataContentType() != schemas.DataContentType {
					t.Errorf("specversion %q, datacontenttype %q", ce.SpecVersion(), ce.DataContentType())
				}
				return
			}
			invalid++
			var se *schemas.SchemaError
			if !errors.As(err, &se) {
				t.Fatalf("error %T %v is not an *SchemaError", err, err)
			}
			for _, want := range ex.Problems {
				found := false
				for _, p := range se.Problems {
					found = found || (p.Location == want.Location && p.Keyword == want.Keyword)
				}
				if !found {
					t.Errorf("no problem %q at %q among %+v", want.Keyword, want.Location, se.Problems)
				}
			}
		})
	}
	if valid < 8 || invalid < 15 {
		t.Errorf("%d valid and %d invalid event examples; the corpus is too small", valid, invalid)
	}
}

func TestValidateEventJSONRefusesNonJSON(t *testing.T) {
	for _, body := range []string{``, `{`, `{} {}`, `[]`, `"event"`} {
		err := schemas.ValidateEventJSON([]byte(body))
		var se *schemas.SchemaError
		if !errors.As(err, &se) {
			t.Errorf("%q: error %v is not an *SchemaError", body, err)
		}
	}
}

// FuzzValidateEventJSON feeds arbitrary text to ValidateEventJSON (the CLI
// reads events from the wire with it): it never panics, and it either
// accepts or returns an *SchemaError.
func FuzzValidateEventJSON(f *testing.F) {
	b, err := os.ReadFile(filepath.Join("testdata", "events.json"))
	if err != nil {
		f.Fatal(err)
	}
	var examples []eventExample
	if err := json.Unmarshal(b, &examples); err != nil {
		f.Fatal(err)
	}
	for _, ex := range examples {
		f.Add([]byte(ex.Event))
	}
	f.Fuzz(func(t *testing.T, body []byte) {
		err := schemas.ValidateEventJSON(body)
		var se *schemas.SchemaError
		if err != nil && (!errors.As(err, &se) || len(se.Problems) == 0) {
			t.Fatalf("error %T %v", err, err)
		}
		if err == nil {
			var ce event.Event
			if err := json.Unmarshal(body, &ce); err != nil {
				t.Fatalf("accepted, but the CloudEvents SDK cannot decode it: %v", err)
			}
			if err := ce.Validate(); err != nil {
				t.Fatalf("accepted, but the CloudEvents SDK finds it invalid: %v", err)
			}
		}
	})
}
