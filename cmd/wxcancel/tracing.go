package main

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"strings"

	"github.com/go-logr/logr"
	"go.opentelemetry.io/otel"
	"go.opentelemetry.io/otel/exporters/otlp/otlptrace/otlptracegrpc"
	"go.opentelemetry.io/otel/exporters/otlp/otlptrace/otlptracehttp"
	"go.opentelemetry.io/otel/sdk/resource"
	sdktrace "go.opentelemetry.io/otel/sdk/trace"
	semconv "go.opentelemetry.io/otel/semconv/v1.40.0"
)

// errTracingConfig is matched by the error of a tracing configuration the
// service cannot honour (an exporter or protocol it does not have).
var errTracingConfig = errors.New("tracing")

// tracing is OpenTelemetry tracing as the standard environment variables
// configure it (https://opentelemetry.io/docs/specs/otel/configuration/sdk-environment-variables/),
// read from the process environment as every OpenTelemetry SDK reads them:
//
//   - off unless OTEL_TRACES_EXPORTER is set, or an OTLP endpoint is
//     (OTEL_EXPORTER_OTLP_ENDPOINT, OTEL_EXPORTER_OTLP_TRACES_ENDPOINT);
//     OTEL_SDK_DISABLED=true or OTEL_TRACES_EXPORTER=none turn it off;
//   - OTEL_TRACES_EXPORTER: otlp (the default) or none;
//   - OTEL_EXPORTER_OTLP_TRACES_PROTOCOL, else OTEL_EXPORTER_OTLP_PROTOCOL:
//     http/protobuf (the default) or grpc;
//   - the OTLP exporter reads its own OTEL_EXPORTER_OTLP_* variables
//     (endpoint, headers, timeout, compression, certificates), the SDK
//     reads OTEL_TRACES_SAMPLER and OTEL_TRACES_SAMPLER_ARG (default
//     parentbased_always_on), OTEL_BSP_* and OTEL_SPAN_* limits;
//   - the resource: service.name wxcancel and service.version, then
//     OTEL_RESOURCE_ATTRIBUTES and OTEL_SERVICE_NAME over them, and the host.
//
// A nil provider, and no error, when tracing is off.
func tracing(ctx context.Context, getenv func(string) string, log *slog.Logger) (*sdktrace.TracerProvider, error) {
	if strings.EqualFold(strings.TrimSpace(getenv("OTEL_SDK_DISABLED")), "true") {
		return nil, nil
	}
	exporter := strings.ToLower(strings.TrimSpace(getenv("OTEL_TRACES_EXPORTER")))
	if exporter == "" && getenv("OTEL_EXPORTER_OTLP_ENDPOINT") == "" && getenv("OTEL_EXPORTER_OTLP_TRACES_ENDPOINT") == "" {
		return nil, nil
	}
	// Before the exporter reads its variables: what it logs goes to log.
	otel.SetLogger(logr.New(otelLogSink{log}))
	var exp sdktrace.SpanExporter
	switch exporter {
	case "none":
		return nil, nil
	case "", "otlp":
		protocol := strings.TrimSpace(getenv("OTEL_EXPORTER_OTLP_TRACES_PROTOCOL"))
		if protocol == "" {
			protocol = strings.TrimSpace(getenv("OTEL_EXPORTER_OTLP_PROTOCOL"))
		}
		var err error
		switch protocol {
		case "", "http/protobuf":
			exp, err = otlptracehttp.New(ctx)
		case "grpc":
			exp, err = otlptracegrpc.New(ctx)
		default:
			return nil, fmt.Errorf("%w: OTLP protocol %q: this build exports http/protobuf or grpc", errTracingConfig, protocol)
		}
		if err != nil {
			return nil, fmt.Errorf("%w: OTLP exporter: %w", errTracingConfig, err)
		}
	default:
		return nil, fmt.Errorf("%w: OTEL_TRACES_EXPORTER %q: this build has otlp or none", errTracingConfig, exporter)
	}
	res, err := resource.New(ctx,
		resource.WithAttributes(semconv.ServiceName("wxcancel"), semconv.ServiceVersion(version)),
		resource.WithFromEnv(), resource.WithHost(), resource.WithTelemetrySDK())
	if err != nil {
		// A partial resource (a detector failed) is still worth exporting.
		log.Warn("tracing: part of the resource could not be detected", "err", err)
	}
	// Failed exports are reported here, not returned to anyone.
	otel.SetErrorHandler(otel.ErrorHandlerFunc(func(err error) {
		log.Warn("tracing: OpenTelemetry error", "err", err)
	}))
	return sdktrace.NewTracerProvider(sdktrace.WithBatcher(exp), sdktrace.WithResource(res)), nil
}

// otelLogSink passes OpenTelemetry's own log lines to the service's log,
// message and error only: their key-value pairs may quote configuration
// values (a malformed OTEL_EXPORTER_OTLP_HEADERS pair, which may hold a
// collector's credentials), and OpenTelemetry's default logger would write
// them to stderr outside the JSON log. Its warnings (V(1)) and errors are
// kept; its info and debug lines are not.
type otelLogSink struct{ log *slog.Logger }

func (otelLogSink) Init(logr.RuntimeInfo)            {}
func (otelLogSink) Enabled(level int) bool           { return level <= 1 }
func (s otelLogSink) WithValues(...any) logr.LogSink { return s }
func (s otelLogSink) WithName(string) logr.LogSink   { return s }

func (s otelLogSink) Info(_ int, msg string, _ ...any) { s.log.Warn("tracing: OpenTelemetry: " + msg) }

func (s otelLogSink) Error(err error, msg string, _ ...any) {
	s.log.Warn("tracing: OpenTelemetry: "+msg, "err", err)
}
