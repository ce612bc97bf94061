package schemas

import (
	"os"
	"path/filepath"
	"reflect"
	"testing"
)

// TestScanObjectTakesCommands: the bodies of the command corpus, valid or
// not, are parsed by the fast path whenever they are objects it handles
// (a body it gives up on costs a second parse).
func TestScanObjectTakesCommands(t *testing.T) {
	for _, body := range []string{
		`{"sub_mchid":"1900000109"}`,
		" {\"applyment_id\" : \"2000001234567890\" }\n",
		`{"applyment_id":"3000000000000001","sub_mchid":"1900000109","operator_identification":"x","confirm_time":"2025-05-20T13:29:35+08:00","cancel_contract_version":"V1.0"}`,
		`{"out_apply_no":"APPLY_\u0031","n":-1.5e+3,"b":[true,false,null],"o":{}}`,
		`{"a":"\"\\\/\b\f\n\r\t\u00e9\u4e2d"} trailing`,
	} {
		fast, fend, ok := scanObject([]byte(body))
		if !ok {
			t.Errorf("the fast path gave %q up", body)
			continue
		}
		slow, send, err := decodeJSON([]byte(body))
		if err != nil || send != fend || !reflect.DeepEqual(fast, slow) {
			t.Errorf("%q: fast %+v end %d, encoding/json %+v end %d err %v", body, fast, fend, slow, send, err)
		}
	}
}

// FuzzScanObject: whatever the fast path accepts, encoding/json accepts
// too, as the same tree ending at the same offset.
func FuzzScanObject(f *testing.F) {
	for _, s := range []string{
		`{}`, `{"a":1}`, `{"a":"b","a":"c"}`, `{"a":[1,{"b":null}],"c":-0.5E-7}`,
		`{"a":"\ud83d\ude00"}`, `{"a":"\u00"}`, `{"a":01}`, `{"a":1.}`, `{"a":tru}`,
		"{\"a\":\"\x01\"}", `{"a":"\q"}`, `[1]`, `"x"`, `{"a":1}}`, `{"a" 1}`, `{,}`, `{"a":1,}`,
	} {
		f.Add([]byte(s))
	}
	files, _ := filepath.Glob(filepath.Join("testdata", "commands", "*.json"))
	for _, p := range files {
		if b, err := os.ReadFile(p); err == nil {
			f.Add(b)
		}
	}
	f.Fuzz(func(t *testing.T, b []byte) {
		fast, fend, ok := scanObject(b)
		if !ok {
			return
		}
		slow, send, err := decodeJSON(b)
		if err != nil {
			t.Fatalf("the fast path accepts %q, encoding/json refuses it: %v", b, err)
		}
		if send != fend || !reflect.DeepEqual(fast, slow) {
			t.Fatalf("%q: fast %+v end %d, encoding/json %+v end %d", b, fast, fend, slow, send)
		}
	})
}

// BenchmarkParseJSON compares the fast path with encoding/json on a
// confirm-cancel body, the longest of the benchmark mix.
func BenchmarkParseJSON(b *testing.B) {
	body := []byte(`{"applyment_id":"3000000000000001","sub_mchid":"1900000109","operator_identification":"bench",` +
		`"confirm_time":"2025-05-20T13:29:35+08:00","cancel_contract_version":"V1.0"}`)
	for _, bc := range []struct {
		name  string
		parse func([]byte) (*node, int, error)
	}{{"scan", parseJSON}, {"encoding-json", decodeJSON}} {
		b.Run(bc.name, func(b *testing.B) {
			b.ReportAllocs()
			for b.Loop() {
				if _, _, err := bc.parse(body); err != nil {
					b.Fatal(err)
				}
			}
		})
	}
}

// BenchmarkParse is the whole of Parse (decoding and validation) on the
// same body.
func BenchmarkParse(b *testing.B) {
	body := []byte(`{"applyment_id":"3000000000000001","sub_mchid":"1900000109","operator_identification":"bench",` +
		`"confirm_time":"2025-05-20T13:29:35+08:00","cancel_contract_version":"V1.0"}`)
	b.ReportAllocs()
	for b.Loop() {
		if _, err := Parse(string(TypeConfirmCancel), body); err != nil {
			b.Fatal(err)
		}
	}
}
