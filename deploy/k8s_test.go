package deploy

import (
	"net"
	"os"
	"path/filepath"
	"slices"
	"strconv"
	"strings"
	"testing"

	"github.com/wxcancel/wxcancel/consumer"
)

// The parts of Kubernetes objects the checks below look at.

type securityContext struct {
	RunAsNonRoot             *bool  `json:"runAsNonRoot"`
	RunAsUser                *int64 `json:"runAsUser"`
	RunAsGroup               *int64 `json:"runAsGroup"`
	FSGroup                  *int64 `json:"fsGroup"`
	AllowPrivilegeEscalation *bool  `json:"allowPrivilegeEscalation"`
	ReadOnlyRootFilesystem   *bool  `json:"readOnlyRootFilesystem"`
	Privileged               *bool  `json:"privileged"`
	Capabilities             *struct {
		Add  []string `json:"add"`
		Drop []string `json:"drop"`
	} `json:"capabilities"`
	SeccompProfile *struct {
		Type string `json:"type"`
	} `json:"seccompProfile"`
}

type probe struct {
	HTTPGet *struct {
		Path string `json:"path"`
		Port any    `json:"port"`
	} `json:"httpGet"`
	PeriodSeconds    int `json:"periodSeconds"`
	FailureThreshold int `json:"failureThreshold"`
}

type container struct {
	Name  string   `json:"name"`
	Image string   `json:"image"`
	Args  []string `json:"args"`
	Ports []struct {
		Name          string `json:"name"`
		ContainerPort int    `json:"containerPort"`
	} `json:"ports"`
	Env []struct {
		Name      string         `json:"name"`
		Value     string         `json:"value"`
		ValueFrom map[string]any `json:"valueFrom"`
	} `json:"env"`
	EnvFrom []struct {
		ConfigMapRef *struct {
			Name string `json:"name"`
		} `json:"configMapRef"`
		SecretRef *struct {
			Name string `json:"name"`
		} `json:"secretRef"`
	} `json:"envFrom"`
	Resources struct {
		Requests map[string]string `json:"requests"`
		Limits   map[string]string `json:"limits"`
	} `json:"resources"`
	SecurityContext *securityContext `json:"securityContext"`
	StartupProbe    *probe           `json:"startupProbe"`
	LivenessProbe   *probe           `json:"livenessProbe"`
	ReadinessProbe  *probe           `json:"readinessProbe"`
	VolumeMounts    []struct {
		Name      string `json:"name"`
		MountPath string `json:"mountPath"`
		ReadOnly  bool   `json:"readOnly"`
	} `json:"volumeMounts"`
}

type deploymentSpec struct {
	Replicas *int `json:"replicas"`
	Selector struct {
		MatchLabels map[string]string `json:"matchLabels"`
	} `json:"selector"`
	Strategy struct {
		RollingUpdate *struct {
			MaxUnavailable any `json:"maxUnavailable"`
		} `json:"rollingUpdate"`
	} `json:"strategy"`
	Template struct {
		Metadata struct {
			Labels map[string]string `json:"labels"`
		} `json:"metadata"`
		Spec struct {
			ServiceAccountName            string           `json:"serviceAccountName"`
			AutomountServiceAccountToken  *bool            `json:"automountServiceAccountToken"`
			TerminationGracePeriodSeconds *int             `json:"terminationGracePeriodSeconds"`
			SecurityContext               *securityContext `json:"securityContext"`
			Containers                    []container      `json:"containers"`
			Volumes                       []struct {
				Name   string `json:"name"`
				Secret *struct {
					SecretName  string `json:"secretName"`
					DefaultMode *int   `json:"defaultMode"`
					Items       []struct {
						Key  string `json:"key"`
						Path string `json:"path"`
					} `json:"items"`
				} `json:"secret"`
			} `json:"volumes"`
		} `json:"spec"`
	} `json:"template"`
}

func (d deploymentSpec) container(t *testing.T) container {
	t.Helper()
	if len(d.Template.Spec.Containers) != 1 {
		t.Fatalf("want one container in the Deployment, found %d", len(d.Template.Spec.Containers))
	}
	return d.Template.Spec.Containers[0]
}

func deployment(t *testing.T, objs []object) deploymentSpec {
	t.Helper()
	var d deploymentSpec
	one(t, objs, "Deployment").spec(t, &d, false)
	return d
}

func isTrue(b *bool) bool { return b != nil && *b }

// matches reports whether selector selects labels.
func matches(selector, labels map[string]string) bool {
	if len(selector) == 0 {
		return false
	}
	for k, v := range selector {
		if labels[k] != v {
			return false
		}
	}
	return true
}

// TestKubernetesDeployment checks the Deployment for what operators rely
// on: probes on the metrics port, resources, a locked-down security
// context, keys mounted from secrets, and a grace period longer than the
// drain.
func TestKubernetesDeployment(t *testing.T) {
	objs := loadK8s(t)
	d := deployment(t, objs)
	c := d.container(t)
	cfg := deploymentConfig(t, objs)
	pod := d.Template.Spec

	if !matches(d.Selector.MatchLabels, d.Template.Metadata.Labels) {
		t.Errorf("the Deployment's selector %v does not select its pods %v", d.Selector.MatchLabels, d.Template.Metadata.Labels)
	}
	if d.Replicas != nil {
		t.Errorf("spec.replicas is set: KEDA owns the replica count, kubectl apply would fight it")
	}
	if ru := d.Strategy.RollingUpdate; ru == nil || (ru.MaxUnavailable != 0 && ru.MaxUnavailable != float64(0)) {
		t.Errorf("rolling updates must not stop an instance before its replacement runs (maxUnavailable 0)")
	}
	if !slices.Equal(c.Args, []string{"serve"}) {
		t.Errorf("the container runs %v, want serve", c.Args)
	}
	if cfg.Provision {
		t.Errorf("WXCANCEL_PROVISION must be false: NACK manages the JetStream objects")
	}
	if cfg.Replicas != 3 {
		t.Errorf("WXCANCEL_REPLICAS is %d, want 3 (R3 on the NATS cluster)", cfg.Replicas)
	}

	// Probes on the port the service listens on.
	_, port, err := net.SplitHostPort(cfg.HTTPAddr)
	if err != nil {
		t.Fatalf("WXCANCEL_HTTP_ADDR %q: %v", cfg.HTTPAddr, err)
	}
	var portName string
	for _, p := range c.Ports {
		if strconv.Itoa(p.ContainerPort) == port {
			portName = p.Name
		}
	}
	if portName == "" {
		t.Fatalf("no container port %s (WXCANCEL_HTTP_ADDR %s)", port, cfg.HTTPAddr)
	}
	for _, pr := range []struct {
		name, path string
		p          *probe
	}{{"startupProbe", "/healthz", c.StartupProbe}, {"livenessProbe", "/healthz", c.LivenessProbe}, {"readinessProbe", "/readyz", c.ReadinessProbe}} {
		switch {
		case pr.p == nil || pr.p.HTTPGet == nil:
			t.Errorf("%s: missing (an HTTP GET of %s)", pr.name, pr.path)
		case pr.p.HTTPGet.Path != pr.path:
			t.Errorf("%s: GET %s, want %s", pr.name, pr.p.HTTPGet.Path, pr.path)
		case pr.p.HTTPGet.Port != portName && pr.p.HTTPGet.Port != float64(mustAtoi(t, port)):
			t.Errorf("%s: port %v, want %s (%s)", pr.name, pr.p.HTTPGet.Port, portName, port)
		}
	}

	// Resources.
	for _, kind := range []string{"cpu", "memory"} {
		if c.Resources.Requests[kind] == "" {
			t.Errorf("no %s request", kind)
		}
	}
	if c.Resources.Limits["memory"] == "" {
		t.Errorf("no memory limit")
	}

	// Security.
	psc, csc := pod.SecurityContext, c.SecurityContext
	if psc == nil || csc == nil {
		t.Fatalf("pod and container need a securityContext")
	}
	if !isTrue(psc.RunAsNonRoot) || !isTrue(csc.RunAsNonRoot) {
		t.Errorf("runAsNonRoot must be true")
	}
	if psc.RunAsUser == nil || *psc.RunAsUser == 0 {
		t.Errorf("runAsUser must be a non-root uid (the image's 65532)")
	}
	if !isTrue(csc.ReadOnlyRootFilesystem) {
		t.Errorf("readOnlyRootFilesystem must be true")
	}
	if csc.AllowPrivilegeEscalation == nil || *csc.AllowPrivilegeEscalation {
		t.Errorf("allowPrivilegeEscalation must be false")
	}
	if isTrue(csc.Privileged) {
		t.Errorf("privileged")
	}
	if csc.Capabilities == nil || !slices.Equal(csc.Capabilities.Drop, []string{"ALL"}) || len(csc.Capabilities.Add) > 0 {
		t.Errorf("capabilities: drop ALL, add none")
	}
	for _, sc := range []*securityContext{psc, csc} {
		if sc.SeccompProfile == nil || sc.SeccompProfile.Type != "RuntimeDefault" {
			t.Errorf("seccompProfile must be RuntimeDefault")
		}
	}
	if pod.AutomountServiceAccountToken == nil || *pod.AutomountServiceAccountToken {
		t.Errorf("the service account token must not be mounted: the service does not use the Kubernetes API")
	}

	// Grace period: longer than the drain, with room to close the HTTP
	// server and the NATS connection.
	grace := 30 // Kubernetes' default
	if pod.TerminationGracePeriodSeconds != nil {
		grace = *pod.TerminationGracePeriodSeconds
	}
	if float64(grace) < cfg.ShutdownTimeout.Seconds()+10 {
		t.Errorf("terminationGracePeriodSeconds %d must exceed WXCANCEL_SHUTDOWN_TIMEOUT (%s) by 10s at least", grace, cfg.ShutdownTimeout)
	}

	// Every key file comes from a secret volume, read-only, readable by the
	// pod's group only.
	files := map[string]string{
		"NATS_NKEY_SEED_FILE": cfg.NATS.NKeySeedFile, "WXPAY_PRIVATE_KEY_FILE": cfg.PrivateKeyFile,
		"WXPAY_PUBLIC_KEY_FILE": cfg.PublicKeyFile, "WXPAY_PLATFORM_CERT_FILE": cfg.PlatformCertFile,
		"NATS_CREDS_FILE": cfg.NATS.CredsFile,
	}
	envPaths := map[string]string{}
	for _, e := range c.Env {
		envPaths[e.Name] = e.Value
	}
	for env := range files {
		path := envPaths[env]
		if path == "" {
			continue
		}
		found := false
		for _, m := range c.VolumeMounts {
			for _, v := range pod.Volumes {
				if v.Name != m.Name || v.Secret == nil {
					continue
				}
				for _, it := range v.Secret.Items {
					if filepath.Join(m.MountPath, it.Path) == path {
						found = true
						if !m.ReadOnly {
							t.Errorf("%s: volume %s must be mounted read-only", env, m.Name)
						}
						if v.Secret.DefaultMode == nil || *v.Secret.DefaultMode&0o007 != 0 {
							t.Errorf("%s: secret %s must not be readable by others (defaultMode)", env, v.Secret.SecretName)
						}
					}
				}
			}
		}
		if !found {
			t.Errorf("%s=%s is not a file of a mounted secret", env, path)
		}
	}
	if psc.FSGroup == nil {
		t.Errorf("fsGroup must be set so that the non-root user can read the secrets (defaultMode 0440)")
	}
	for _, e := range c.EnvFrom {
		if e.ConfigMapRef == nil || !slices.ContainsFunc(objsConfigMaps(t), func(n string) bool { return n == e.ConfigMapRef.Name }) {
			t.Errorf("envFrom refers to a ConfigMap the kustomization does not generate: %+v", e)
		}
	}
}

func mustAtoi(t *testing.T, s string) int {
	t.Helper()
	n, err := strconv.Atoi(s)
	if err != nil {
		t.Fatal(err)
	}
	return n
}

func objsConfigMaps(t *testing.T) []string {
	var k struct {
		ConfigMapGenerator []struct {
			Name string `json:"name"`
		} `json:"configMapGenerator"`
	}
	readYAML(t, filepath.Join(k8sDir, "kustomization.yaml"), &k)
	var names []string
	for _, g := range k.ConfigMapGenerator {
		names = append(names, g.Name)
	}
	return names
}

// TestKubernetesObjectsAgree: the PodDisruptionBudget, Service,
// ServiceMonitor and KEDA ScaledObject point at the Deployment and at the
// JetStream objects serve uses; kustomization.yaml lists every manifest.
func TestKubernetesObjectsAgree(t *testing.T) {
	objs := loadK8s(t)
	d := deployment(t, objs)
	podLabels := d.Template.Metadata.Labels
	depName := one(t, objs, "Deployment").Metadata.Name
	topo := consumer.NewTopology(deploymentConfig(t, objs).Config)

	var pdb struct {
		MinAvailable   any `json:"minAvailable"`
		MaxUnavailable any `json:"maxUnavailable"`
		Selector       struct {
			MatchLabels map[string]string `json:"matchLabels"`
		} `json:"selector"`
	}
	one(t, objs, "PodDisruptionBudget").spec(t, &pdb, false)
	if !matches(pdb.Selector.MatchLabels, podLabels) {
		t.Errorf("the PodDisruptionBudget does not select the pods")
	}

	var so struct {
		ScaleTargetRef struct {
			Name string `json:"name"`
		} `json:"scaleTargetRef"`
		MinReplicaCount int `json:"minReplicaCount"`
		MaxReplicaCount int `json:"maxReplicaCount"`
		Triggers        []struct {
			Type     string            `json:"type"`
			Metadata map[string]string `json:"metadata"`
		} `json:"triggers"`
	}
	one(t, objs, "ScaledObject").spec(t, &so, false)
	if so.ScaleTargetRef.Name != depName {
		t.Errorf("KEDA scales %q, not the Deployment %q", so.ScaleTargetRef.Name, depName)
	}
	if so.MinReplicaCount < 2 || so.MaxReplicaCount < so.MinReplicaCount {
		t.Errorf("KEDA replicas %d..%d: want at least 2 (one node lost must not stop consumption)", so.MinReplicaCount, so.MaxReplicaCount)
	}
	if min, ok := pdb.MinAvailable.(float64); !ok || int(min) >= so.MinReplicaCount {
		t.Errorf("PodDisruptionBudget minAvailable %v must be below KEDA's minReplicaCount %d, or node drains block", pdb.MinAvailable, so.MinReplicaCount)
	}
	if len(so.Triggers) != 1 || so.Triggers[0].Type != "nats-jetstream" {
		t.Fatalf("want one nats-jetstream trigger, got %+v", so.Triggers)
	}
	tm := so.Triggers[0].Metadata
	if tm["stream"] != topo.Commands.Name || tm["consumer"] != topo.Consumer.Durable {
		t.Errorf("KEDA watches %s/%s, serve consumes %s/%s", tm["stream"], tm["consumer"], topo.Commands.Name, topo.Consumer.Durable)
	}
	opts, keys := loadAccounts(t)
	if acc := nkeyUser(t, opts, keys, envServiceNKey).Account.Name; tm["account"] != acc {
		t.Errorf("KEDA reads account %q, the streams are in %q (accounts.conf)", tm["account"], acc)
	}
	if _, err := strconv.Atoi(tm["lagThreshold"]); err != nil {
		t.Errorf("lagThreshold %q: %v", tm["lagThreshold"], err)
	}
	natsHost := strings.TrimPrefix(deploymentConfig(t, objs).NATS.URLs[0], "nats://")
	natsHost, _, _ = net.SplitHostPort(natsHost)
	if mon, _, _ := net.SplitHostPort(tm["natsServerMonitoringEndpoint"]); mon != natsHost {
		t.Errorf("KEDA monitors %s, the service connects to %s", tm["natsServerMonitoringEndpoint"], natsHost)
	}

	svcObj := one(t, objs, "Service")
	var svc struct {
		Selector map[string]string `json:"selector"`
		Ports    []struct {
			Name       string `json:"name"`
			TargetPort any    `json:"targetPort"`
		} `json:"ports"`
	}
	svcObj.spec(t, &svc, false)
	if !matches(svc.Selector, podLabels) {
		t.Errorf("the Service does not select the pods")
	}
	var sm struct {
		Selector struct {
			MatchLabels map[string]string `json:"matchLabels"`
		} `json:"selector"`
		Endpoints []struct {
			Port string `json:"port"`
			Path string `json:"path"`
		} `json:"endpoints"`
	}
	one(t, objs, "ServiceMonitor").spec(t, &sm, false)
	if !matches(sm.Selector.MatchLabels, svcObj.Metadata.Labels) {
		t.Errorf("the ServiceMonitor does not select the Service (labels %v)", svcObj.Metadata.Labels)
	}
	c := d.container(t)
	for _, e := range sm.Endpoints {
		if e.Path != "/metrics" || !slices.ContainsFunc(svc.Ports, func(p struct {
			Name       string `json:"name"`
			TargetPort any    `json:"targetPort"`
		}) bool {
			return p.Name == e.Port && slices.ContainsFunc(c.Ports, func(cp struct {
				Name          string `json:"name"`
				ContainerPort int    `json:"containerPort"`
			}) bool {
				return cp.Name == p.TargetPort
			})
		}) {
			t.Errorf("ServiceMonitor endpoint %+v does not reach the container's metrics port", e)
		}
	}

	// Every manifest is in the kustomization, and the image it sets is the
	// container's.
	var k struct {
		Resources []string `json:"resources"`
		Images    []struct {
			Name string `json:"name"`
		} `json:"images"`
	}
	readYAML(t, filepath.Join(k8sDir, "kustomization.yaml"), &k)
	files, _ := filepath.Glob(filepath.Join(k8sDir, "*.yaml"))
	for _, f := range files {
		if b := filepath.Base(f); b != "kustomization.yaml" && !slices.Contains(k.Resources, b) {
			t.Errorf("%s is not in kustomization.yaml", b)
		}
	}
	if len(k.Images) != 1 || k.Images[0].Name != c.Image {
		t.Errorf("kustomization.yaml images %+v do not set the container image %q", k.Images, c.Image)
	}
	if _, err := os.Stat(filepath.Join(k8sDir, "kustomization.yaml")); err != nil {
		t.Fatal(err)
	}
}
