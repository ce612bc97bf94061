// Package deploy holds what operators copy to run wxcancel in production: the
// container image (Dockerfile), a Docker Compose stack with a 3-node NATS
// JetStream cluster, least-privilege NATS accounts, declarative JetStream
// configurations for the nats CLI, and Kubernetes manifests (Kustomize, NACK,
// KEDA), a Grafana dashboard and Prometheus alert rules. See README.md.
//
// The package has no code of its own: its tests prove that every file here
// agrees with what `wxcancel serve` provisions (consumer.NewTopology), that
// the NATS users are enough for the service and refuse everything else, and
// that the service keeps its delivery guarantees on a clustered JetStream.
// The dashboard and the alert rules are tested in cmd/wxcancel, against the
// metrics a running serve exposes.
package deploy
