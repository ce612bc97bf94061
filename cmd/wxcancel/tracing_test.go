package main

import (
	"bytes"
	"compress/gzip"
	"context"
	"encoding/hex"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"net"
	"net/http"
	"net/http/httptest"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/nats-io/nats.go"
	coltracepb "go.opentelemetry.io/proto/otlp/collector/trace/v1"
	commonpb "go.opentelemetry.io/proto/otlp/common/v1"
	tracepb "go.opentelemetry.io/proto/otlp/trace/v1"
	"google.golang.org/grpc"
	"google.golang.org/protobuf/proto"

	"github.com/wxcancel/wxcancel/internal/poll"
	"github.com/wxcancel/wxcancel/wxpay/wxpaysim"
)

func TestTracingConfiguration(t *testing.T) {
	const endpoint = "http://127.0.0.1:4318"
	for _, tt := range []struct {
		name    string
		env     map[string]string
		on      bool
		wantErr bool
	}{
		{"nothing set", nil, false, false},
		{"an endpoint", map[string]string{"OTEL_EXPORTER_OTLP_ENDPOINT": endpoint}, true, false},
		{"a traces endpoint", map[string]string{"OTEL_EXPORTER_OTLP_TRACES_ENDPOINT": endpoint + "/v1/traces"}, true, false},
		{"the exporter alone", map[string]string{"OTEL_TRACES_EXPORTER": "otlp"}, true, false},
		{"grpc", map[string]string{"OTEL_EXPORTER_OTLP_ENDPOINT": endpoint, "OTEL_EXPORTER_OTLP_PROTOCOL": "grpc"}, true, false},
		{"grpc for traces", map[string]string{"OTEL_EXPORTER_OTLP_ENDPOINT": endpoint,
			"OTEL_EXPORTER_OTLP_PROTOCOL": "http/json", "OTEL_EXPORTER_OTLP_TRACES_PROTOCOL": "grpc"}, true, false},
		{"exporter none", map[string]string{"OTEL_EXPORTER_OTLP_ENDPOINT": endpoint, "OTEL_TRACES_EXPORTER": "none"}, false, false},
		{"SDK disabled", map[string]string{"OTEL_EXPORTER_OTLP_ENDPOINT": endpoint, "OTEL_SDK_DISABLED": "true"}, false, false},
		{"an exporter this build lacks", map[string]string{"OTEL_TRACES_EXPORTER": "zipkin"}, false, true},
		{"a protocol this build lacks", map[string]string{"OTEL_EXPORTER_OTLP_ENDPOINT": endpoint, "OTEL_EXPORTER_OTLP_PROTOCOL": "http/json"}, false, true},
	} {
		t.Run(tt.name, func(t *testing.T) {
			tp, err := tracing(t.Context(), envFunc(tt.env), slog.New(slog.DiscardHandler))
			if tp != nil {
				t.Cleanup(func() { _ = tp.Shutdown(context.Background()) })
			}
			if (tp != nil) != tt.on || (err != nil) != tt.wantErr || (err != nil && !errors.Is(err, errTracingConfig)) {
				t.Errorf("on %v, err %v; want on %v, error %v", tp != nil, err, tt.on, tt.wantErr)
			}
		})
	}
}

func TestServeRefusesAnUnknownTraceExporter(t *testing.T) {
	t.Setenv("OTEL_TRACES_EXPORTER", "zipkin")
	_, env := simEnv(t, wxpaysim.Options{})
	env["WXCANCEL_EMBEDDED_STORE_DIR"] = t.TempDir()
	code, _, stderr := cli(t, env, "serve")
	if code != exitUsage || !strings.Contains(stderr, `OTEL_TRACES_EXPORTER "zipkin"`) {
		t.Errorf("exit %d, want %d naming the exporter:\n%s", code, exitUsage, stderr)
	}
}

// otlpReceiver is an OTLP trace receiver, over HTTP (protobuf) and gRPC,
// keeping what it is sent.
type otlpReceiver struct {
	coltracepb.UnimplementedTraceServiceServer
	mu    sync.Mutex
	spans []*tracepb.ResourceSpans
}

func (r *otlpReceiver) Export(_ context.Context, req *coltracepb.ExportTraceServiceRequest) (*coltracepb.ExportTraceServiceResponse, error) {
	r.mu.Lock()
	defer r.mu.Unlock()
	r.spans = append(r.spans, req.GetResourceSpans()...)
	return &coltracepb.ExportTraceServiceResponse{}, nil
}

// ServeHTTP is OTLP/HTTP's POST /v1/traces, binary protobuf.
func (r *otlpReceiver) ServeHTTP(w http.ResponseWriter, req *http.Request) {
	if req.Method != http.MethodPost || req.URL.Path != "/v1/traces" || req.Header.Get("Content-Type") != "application/x-protobuf" {
		http.Error(w, "not OTLP/HTTP protobuf traces", http.StatusNotFound)
		return
	}
	var body io.Reader = http.MaxBytesReader(w, req.Body, 4<<20)
	if req.Header.Get("Content-Encoding") == "gzip" {
		gz, err := gzip.NewReader(body)
		if err != nil {
			http.Error(w, err.Error(), http.StatusBadRequest)
			return
		}
		body = gz
	}
	b, err := io.ReadAll(body)
	var in coltracepb.ExportTraceServiceRequest
	if err == nil {
		err = proto.Unmarshal(b, &in)
	}
	if err != nil {
		http.Error(w, err.Error(), http.StatusBadRequest)
		return
	}
	out, _ := r.Export(req.Context(), &in)
	resp, _ := proto.Marshal(out)
	w.Header().Set("Content-Type", "application/x-protobuf")
	_, _ = w.Write(resp)
}

// received is a span as the receiver got it, with its resource.
type received struct {
	span     *tracepb.Span
	resource map[string]string
}

func (r *otlpReceiver) received() []received {
	r.mu.Lock()
	defer r.mu.Unlock()
	var out []received
	for _, rs := range r.spans {
		res := attrMap(rs.GetResource().GetAttributes())
		for _, ss := range rs.GetScopeSpans() {
			for _, s := range ss.GetSpans() {
				out = append(out, received{span: s, resource: res})
			}
		}
	}
	return out
}

func attrMap(kvs []*commonpb.KeyValue) map[string]string {
	m := map[string]string{}
	for _, kv := range kvs {
		v := kv.GetValue()
		switch {
		case v.GetStringValue() != "":
			m[kv.GetKey()] = v.GetStringValue()
		default:
			m[kv.GetKey()] = fmt.Sprint(v.GetIntValue())
		}
	}
	return m
}

// TestServeExportsTraces runs serve with tracing configured by the
// standard environment, against an OTLP receiver over each protocol: one
// command's trace arrives, under the producer's trace, from the delivery
// down to its WeChat Pay attempt, with the service's resource; the spans
// still in the batch at shutdown are flushed.
func TestServeExportsTraces(t *testing.T) {
	for _, protocol := range []string{"http/protobuf", "grpc"} {
		t.Run(protocol, func(t *testing.T) {
			rcv := &otlpReceiver{}
			var endpoint string
			if protocol == "grpc" {
				ln, err := net.Listen("tcp", "127.0.0.1:0")
				if err != nil {
					t.Fatal(err)
				}
				srv := grpc.NewServer()
				coltracepb.RegisterTraceServiceServer(srv, rcv)
				go func() { _ = srv.Serve(ln) }()
				t.Cleanup(srv.Stop)
				endpoint = "http://" + ln.Addr().String()
			} else {
				hs := httptest.NewServer(rcv)
				t.Cleanup(hs.Close)
				endpoint = hs.URL
			}
			t.Setenv("OTEL_EXPORTER_OTLP_ENDPOINT", endpoint)
			t.Setenv("OTEL_EXPORTER_OTLP_PROTOCOL", protocol)
			t.Setenv("OTEL_SERVICE_NAME", "wxcancel-under-test")
			// A long batch delay: the spans must reach the receiver by the
			// flush at shutdown.
			t.Setenv("OTEL_BSP_SCHEDULE_DELAY", "600000")

			s := startServe(t, wxpaysim.Options{AutoCreate: true}, nil)
			const traceID, parentID = "0af7651916cd43dd8448eb211c80319c", "b7ad6b7169203331"
			ev := s.validate(t, "traced-1", nats.Header{"traceparent": {"00-" + traceID + "-" + parentID + "-01"}})
			if c := s.stop(t); c != exitOK {
				t.Fatalf("serve exited %d:\n%s", c, s.stderr.String())
			}

			var del received
			var all []received
			poll.Until(t, 10*time.Second, "the delivery's span at the receiver", func() error {
				all = rcv.received()
				for _, r := range all {
					if r.span.GetName() == "process wxpay.cmd.validate-cancel" {
						del = r
						return nil
					}
				}
				return fmt.Errorf("%d spans received", len(all))
			})
			if got := hex.EncodeToString(del.span.GetTraceId()); got != traceID {
				t.Errorf("delivery span in trace %s, want the producer's %s", got, traceID)
			}
			if got := hex.EncodeToString(del.span.GetParentSpanId()); got != parentID {
				t.Errorf("delivery span's parent %s, want the producer's %s", got, parentID)
			}
			if del.resource["service.name"] != "wxcancel-under-test" || del.resource["service.version"] == "" {
				t.Errorf("resource %v", del.resource)
			}
			kids := map[string]bool{}
			for _, r := range all {
				if bytes.Equal(r.span.GetParentSpanId(), del.span.GetSpanId()) {
					kids[r.span.GetName()] = true
				}
			}
			for _, want := range []string{"outcome read", "GET validate-cancel", "outcome write", "publish wxpay.evt.validate-cancel.succeeded", "ack"} {
				if !kids[want] {
					t.Errorf("no child span %q of the delivery; children %v", want, kids)
				}
			}
			wantHeader := "00-" + traceID + "-" + hex.EncodeToString(del.span.GetSpanId()) + "-01"
			if got := ev.Header.Get("traceparent"); got != wantHeader {
				t.Errorf("outcome event traceparent %q, want the delivery span's %q", got, wantHeader)
			}
		})
	}
}

// OpenTelemetry's own log lines reach the service's log without their
// values: a malformed OTEL_EXPORTER_OTLP_HEADERS pair, here a collector's
// token, is reported, and the token is not.
func TestTracingLogsWithoutValues(t *testing.T) {
	t.Setenv("OTEL_EXPORTER_OTLP_HEADERS", "Authorization Bearer sekret-collector-token")
	var buf syncBuffer
	tp, err := tracing(t.Context(), envFunc(map[string]string{"OTEL_EXPORTER_OTLP_ENDPOINT": "http://127.0.0.1:4318"}),
		slog.New(slog.NewJSONHandler(&buf, nil)))
	if err != nil || tp == nil {
		t.Fatalf("tracing: %v, %v", tp, err)
	}
	t.Cleanup(func() { _ = tp.Shutdown(context.Background()) })
	logs := buf.String()
	if !strings.Contains(logs, "parse headers") || strings.Contains(logs, "sekret") {
		t.Errorf("the malformed header is not reported through the log, or its value is:\n%s", logs)
	}
}
