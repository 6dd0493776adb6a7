package deploytest

import (
	"bufio"
	"bytes"
	"errors"
	"fmt"
	"io"
	"os"
	"path"
	"path/filepath"
	"slices"
	"sort"
	"strconv"
	"strings"
	"testing"

	appsv1 "k8s.io/api/apps/v1"
	autoscalingv2 "k8s.io/api/autoscaling/v2"
	corev1 "k8s.io/api/core/v1"
	policyv1 "k8s.io/api/policy/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/labels"
	k8syaml "k8s.io/apimachinery/pkg/util/yaml"
	"sigs.k8s.io/yaml"

	"github.com/byok-io/byok/pkg/callers"
	"github.com/byok-io/byok/pkg/tenant"
	settingsapi "github.com/byok-io/byok/services/settings/api"
)

// manifests is every object in deploy/k8s, decoded strictly into its typed API struct.
type manifests struct {
	deployments []*appsv1.Deployment
	pdbs        []*policyv1.PodDisruptionBudget
	hpas        []*autoscalingv2.HorizontalPodAutoscaler
	services    []*corev1.Service
	configMaps  map[string]*corev1.ConfigMap // by name
	secrets     map[string]*corev1.Secret
	files       []string // file names, sorted
	raw         map[string]string
}

type kustomization struct {
	APIVersion string   `json:"apiVersion"`
	Kind       string   `json:"kind"`
	Namespace  string   `json:"namespace"`
	Resources  []string `json:"resources"`
}

func k8sDir(t *testing.T) string { return filepath.Join(repoRoot(t), "deploy", "k8s") }

func loadManifests(t *testing.T) manifests {
	t.Helper()
	m := manifests{configMaps: map[string]*corev1.ConfigMap{}, secrets: map[string]*corev1.Secret{}, raw: map[string]string{}}
	paths, err := filepath.Glob(filepath.Join(k8sDir(t), "*.yaml"))
	if err != nil || len(paths) == 0 {
		t.Fatalf("no manifests in %s: %v", k8sDir(t), err)
	}
	for _, p := range paths {
		name := filepath.Base(p)
		if name == "kustomization.yaml" {
			continue
		}
		m.files = append(m.files, name)
		b, err := os.ReadFile(p)
		if err != nil {
			t.Fatal(err)
		}
		m.raw[name] = string(b)
		r := k8syaml.NewYAMLReader(bufio.NewReader(bytes.NewReader(b)))
		for i := 0; ; i++ {
			doc, err := r.Read()
			if errors.Is(err, io.EOF) {
				break
			}
			if err != nil {
				t.Fatalf("%s: %v", name, err)
			}
			if len(bytes.TrimSpace(stripComments(doc))) == 0 {
				continue
			}
			if err := m.add(doc); err != nil {
				t.Errorf("%s document %d: %v", name, i, err)
			}
		}
	}
	sort.Strings(m.files)
	return m
}

func stripComments(doc []byte) []byte {
	var out [][]byte
	for l := range bytes.SplitSeq(doc, []byte("\n")) {
		if !bytes.HasPrefix(bytes.TrimSpace(l), []byte("#")) {
			out = append(out, l)
		}
	}
	return bytes.Join(out, []byte("\n"))
}

// add decodes one document by its apiVersion and kind; unknown fields and unknown kinds fail.
func (m *manifests) add(doc []byte) error {
	var tm metav1.TypeMeta
	if err := yaml.Unmarshal(doc, &tm); err != nil {
		return err
	}
	strict := func(into any) error {
		if err := yaml.UnmarshalStrict(doc, into); err != nil {
			return errors.New(tm.APIVersion + " " + tm.Kind + ": " + err.Error())
		}
		return nil
	}
	switch tm.APIVersion + " " + tm.Kind {
	case "apps/v1 Deployment":
		o := new(appsv1.Deployment)
		m.deployments = append(m.deployments, o)
		return strict(o)
	case "policy/v1 PodDisruptionBudget":
		o := new(policyv1.PodDisruptionBudget)
		m.pdbs = append(m.pdbs, o)
		return strict(o)
	case "autoscaling/v2 HorizontalPodAutoscaler":
		o := new(autoscalingv2.HorizontalPodAutoscaler)
		m.hpas = append(m.hpas, o)
		return strict(o)
	case "v1 Service":
		o := new(corev1.Service)
		m.services = append(m.services, o)
		return strict(o)
	case "v1 ConfigMap":
		o := new(corev1.ConfigMap)
		err := strict(o)
		m.configMaps[o.Name] = o
		return err
	case "v1 Secret":
		o := new(corev1.Secret)
		err := strict(o)
		m.secrets[o.Name] = o
		return err
	case "v1 Namespace":
		return strict(new(corev1.Namespace))
	}
	return errors.New("unexpected kind " + tm.APIVersion + " " + tm.Kind)
}

// secretData is a Secret's content whether written as data (decoded already) or stringData.
func secretData(s *corev1.Secret) map[string]string {
	out := map[string]string{}
	for k, v := range s.Data {
		out[k] = string(v)
	}
	for k, v := range s.StringData {
		out[k] = v
	}
	return out
}

// deploymentOf returns the Deployment of a byok service (named byok-<svc>).
func (m manifests) deploymentOf(svc string) *appsv1.Deployment {
	for _, d := range m.deployments {
		if d.Name == "byok-"+svc {
			return d
		}
	}
	return nil
}

// containerEnv resolves what the container's process sees as its environment, literal values
// and references into ConfigMaps and Secrets; a name from valueFrom fieldRef/resourceFieldRef
// maps to "". Dangling references are errors.
func (m manifests) containerEnv(t *testing.T, where string, c corev1.Container) map[string]string {
	env := map[string]string{}
	for _, ef := range c.EnvFrom {
		switch {
		case ef.ConfigMapRef != nil:
			cm, ok := m.configMaps[ef.ConfigMapRef.Name]
			if !ok {
				t.Errorf("%s: envFrom ConfigMap %s does not exist", where, ef.ConfigMapRef.Name)
				continue
			}
			for k, v := range cm.Data {
				env[ef.Prefix+k] = v
			}
		case ef.SecretRef != nil:
			s, ok := m.secrets[ef.SecretRef.Name]
			if !ok {
				t.Errorf("%s: envFrom Secret %s does not exist", where, ef.SecretRef.Name)
				continue
			}
			for k, v := range secretData(s) {
				env[ef.Prefix+k] = v
			}
		}
	}
	for _, e := range c.Env {
		switch {
		case e.ValueFrom == nil:
			env[e.Name] = e.Value
		case e.ValueFrom.ConfigMapKeyRef != nil:
			ref := e.ValueFrom.ConfigMapKeyRef
			cm, ok := m.configMaps[ref.Name]
			if v, has := cm.Data[ref.Key]; !ok || !has {
				t.Errorf("%s: env %s refers to ConfigMap %s key %s, which does not exist", where, e.Name, ref.Name, ref.Key)
			} else {
				env[e.Name] = v
			}
		case e.ValueFrom.SecretKeyRef != nil:
			ref := e.ValueFrom.SecretKeyRef
			s, ok := m.secrets[ref.Name]
			if !ok {
				t.Errorf("%s: env %s refers to Secret %s, which does not exist", where, e.Name, ref.Name)
				continue
			}
			v, has := secretData(s)[ref.Key]
			if !has {
				t.Errorf("%s: env %s refers to Secret %s key %s, which does not exist", where, e.Name, ref.Name, ref.Key)
			}
			env[e.Name] = v
		default:
			env[e.Name] = ""
		}
	}
	return env
}

func TestK8sKustomizationListsEveryManifest(t *testing.T) {
	b, err := os.ReadFile(filepath.Join(k8sDir(t), "kustomization.yaml"))
	if err != nil {
		t.Fatal(err)
	}
	var k kustomization
	if err := yaml.UnmarshalStrict(b, &k); err != nil {
		t.Fatalf("kustomization.yaml: %v", err)
	}
	m := loadManifests(t)
	res := slices.Clone(k.Resources)
	sort.Strings(res)
	if !slices.Equal(res, m.files) {
		t.Errorf("kustomization.yaml resources = %v, want every manifest %v", res, m.files)
	}
}

func TestK8sDeployments(t *testing.T) {
	m := loadManifests(t)
	for _, svc := range daemons {
		d := m.deploymentOf(svc)
		if d == nil {
			t.Errorf("deploy/k8s has no Deployment byok-%s", svc)
			continue
		}
		where := "Deployment " + d.Name
		podLabels := labels.Set(d.Spec.Template.Labels)
		sel, err := metav1.LabelSelectorAsSelector(d.Spec.Selector)
		if err != nil || sel.Empty() || !sel.Matches(podLabels) {
			t.Errorf("%s: selector %v does not match its pod labels %v (%v)", where, d.Spec.Selector, podLabels, err)
		}
		pod := d.Spec.Template.Spec
		if sc := pod.SecurityContext; sc == nil || sc.RunAsNonRoot == nil || !*sc.RunAsNonRoot || sc.RunAsUser == nil || *sc.RunAsUser == 0 {
			t.Errorf("%s: pod securityContext must set runAsNonRoot and a non-zero runAsUser", where)
		}
		if len(pod.Containers) != 1 {
			t.Errorf("%s: %d containers, want 1", where, len(pod.Containers))
			continue
		}
		c := pod.Containers[0]
		for name, p := range map[string]*corev1.Probe{"readinessProbe": c.ReadinessProbe, "livenessProbe": c.LivenessProbe} {
			if p == nil || (p.HTTPGet == nil && p.Exec == nil && p.TCPSocket == nil && p.GRPC == nil) {
				t.Errorf("%s: container %s has no %s", where, c.Name, name)
			} else if p.HTTPGet != nil && !hasContainerPort(c, p.HTTPGet.Port.String()) {
				t.Errorf("%s: %s targets port %s, which the container does not declare", where, name, p.HTTPGet.Port.String())
			}
		}
		for _, r := range []corev1.ResourceName{corev1.ResourceCPU, corev1.ResourceMemory} {
			if q, ok := c.Resources.Requests[r]; !ok || q.IsZero() {
				t.Errorf("%s: no %s request", where, r)
			}
		}
		if q, ok := c.Resources.Limits[corev1.ResourceMemory]; !ok || q.IsZero() {
			t.Errorf("%s: no memory limit", where)
		}
		// A matching PodDisruptionBudget in the same namespace.
		found := false
		for _, p := range m.pdbs {
			s, err := metav1.LabelSelectorAsSelector(p.Spec.Selector)
			if err == nil && !s.Empty() && s.Matches(podLabels) && p.Namespace == d.Namespace {
				found = true
				if p.Spec.MinAvailable == nil && p.Spec.MaxUnavailable == nil {
					t.Errorf("PodDisruptionBudget %s sets neither minAvailable nor maxUnavailable", p.Name)
				}
				if p.Spec.MinAvailable != nil && d.Spec.Replicas != nil && p.Spec.MinAvailable.IntValue() >= int(*d.Spec.Replicas) {
					t.Errorf("PodDisruptionBudget %s: minAvailable %s blocks every eviction of %d replicas", p.Name, p.Spec.MinAvailable.String(), *d.Spec.Replicas)
				}
			}
		}
		if !found {
			t.Errorf("%s: no PodDisruptionBudget selects its pods %v", where, podLabels)
		}
	}
}

func hasContainerPort(c corev1.Container, port string) bool {
	for _, p := range c.Ports {
		if p.Name == port || strconv.Itoa(int(p.ContainerPort)) == port {
			return true
		}
	}
	return false
}

func TestK8sEnvIsReadByCode(t *testing.T) {
	m := loadManifests(t)
	creds := map[string]bool{}
	for _, s := range m.secrets {
		if f, err := tenant.ParseFile([]byte(secretData(s)["tenants.json"])); err == nil {
			for n := range credentialEnvs(f) {
				creds[n] = true
			}
		}
	}
	for _, svc := range daemons {
		d := m.deploymentOf(svc)
		if d == nil {
			continue // reported by TestK8sDeployments
		}
		ce := serviceEnv(t, svc)
		for _, c := range d.Spec.Template.Spec.Containers {
			where := "Deployment " + d.Name + " container " + c.Name
			check := func(what, name string) {
				if !ce.names[name] && !(ce.names["BYOK_TENANTS_FILE"] && creds[name]) {
					t.Errorf("%s: %s names %s, which no Go source of services/%s (or a byok package it imports) reads", where, what, name, svc)
				}
			}
			for name := range m.containerEnv(t, where, c) {
				if strings.HasPrefix(name, "BYOK_") {
					check("environment", name)
				}
			}
			for _, p := range []*corev1.Probe{c.ReadinessProbe, c.LivenessProbe, c.StartupProbe} {
				if p != nil && p.Exec != nil {
					for _, name := range envToken.FindAllString(strings.Join(p.Exec.Command, " "), -1) {
						check("exec probe", name)
					}
				}
			}
			for _, name := range envToken.FindAllString(strings.Join(append(c.Command, c.Args...), " "), -1) {
				check("command", name)
			}
		}
	}
	all := allCodeEnv(t)
	for file, raw := range m.raw {
		for _, name := range envToken.FindAllString(raw, -1) {
			if !all[name] && !creds[name] {
				t.Errorf("deploy/k8s/%s mentions %s, which no byok service reads", file, name)
			}
		}
	}
}

func TestK8sPortsAndServices(t *testing.T) {
	m := loadManifests(t)
	for _, svc := range daemons {
		d := m.deploymentOf(svc)
		if d == nil {
			continue
		}
		ce := serviceEnv(t, svc)
		c := d.Spec.Template.Spec.Containers[0]
		where := "Deployment " + d.Name
		env := m.containerEnv(t, where, c)
		listen := map[uint32]bool{}
		for _, name := range ce.listenVars() {
			addr, ok := ce.value(env, name)
			if !ok {
				t.Errorf("%s: %s neither set nor defaulted in code", where, name)
				continue
			}
			host, port := splitHostPort(t, addr)
			if host == "localhost" || strings.HasPrefix(host, "127.") || host == "::1" {
				t.Errorf("%s: %s=%s listens on loopback; kubelet probes and Services cannot reach it", where, name, addr)
			}
			listen[port] = true
		}
		for _, p := range c.Ports {
			if !listen[uint32(p.ContainerPort)] {
				t.Errorf("%s: containerPort %d, but the service listens on %v (from %v)", where, p.ContainerPort, keys(listen), ce.listenVars())
			}
		}
	}
	for _, s := range m.services {
		sel := labels.SelectorFromSet(s.Spec.Selector)
		var target *appsv1.Deployment
		for _, d := range m.deployments {
			if len(s.Spec.Selector) > 0 && sel.Matches(labels.Set(d.Spec.Template.Labels)) && d.Namespace == s.Namespace {
				target = d
			}
		}
		if target == nil {
			t.Errorf("Service %s: selector %v matches no Deployment's pod labels", s.Name, s.Spec.Selector)
			continue
		}
		for _, p := range s.Spec.Ports {
			if !hasContainerPort(target.Spec.Template.Spec.Containers[0], p.TargetPort.String()) {
				t.Errorf("Service %s: targetPort %s is not a port of Deployment %s", s.Name, p.TargetPort.String(), target.Name)
			}
		}
	}
}

// secretVolumeAt finds the Secret volume that file p of the pod's (only) container lies in: the
// volume's source and the Secret key that is the file.
func secretVolumeAt(pod corev1.PodSpec, p string) (*corev1.SecretVolumeSource, string) {
	for _, vm := range pod.Containers[0].VolumeMounts {
		if path.Dir(p) != path.Clean(vm.MountPath) {
			continue
		}
		for _, v := range pod.Volumes {
			if v.Name == vm.Name && v.Secret != nil {
				return v.Secret, path.Base(p)
			}
		}
	}
	return nil, ""
}

// TestK8sTenantsSecret parses the tenants file of every service that has one (the encryptor must)
// from the Secret it is mounted from, with the services' own parser, and checks every
// credential_file is in that mount.
func TestK8sTenantsSecret(t *testing.T) {
	m := loadManifests(t)
	if m.deploymentOf("encryptor") == nil {
		t.Fatal("no encryptor Deployment")
	}
	for _, svc := range daemons {
		d := m.deploymentOf(svc)
		if d == nil {
			continue // reported by TestK8sDeployments
		}
		pod := d.Spec.Template.Spec
		env := m.containerEnv(t, d.Name, pod.Containers[0])
		file := env["BYOK_TENANTS_FILE"]
		if file == "" {
			if svc == "encryptor" {
				t.Errorf("encryptor: BYOK_TENANTS_FILE not set (BYOK_TENANTS inline would put credentials in a ConfigMap)")
			}
			continue
		}
		secretAt := func(p string) (*corev1.Secret, string) {
			if v, key := secretVolumeAt(pod, p); v != nil {
				return m.secrets[v.SecretName], key
			}
			return nil, ""
		}
		s, key := secretAt(file)
		if s == nil {
			t.Errorf("%s: BYOK_TENANTS_FILE=%s is not in a mounted Secret of deploy/k8s", svc, file)
			continue
		}
		f, err := tenant.ParseFile([]byte(secretData(s)[key]))
		if err != nil {
			t.Errorf("Secret %s key %s: %v", s.Name, key, err)
			continue
		}
		if len(f.Tenants) == 0 {
			t.Errorf("Secret %s key %s: no tenants", s.Name, key)
		}
		for id, c := range f.Tenants {
			if c.CredentialFile == "" {
				continue
			}
			cs, ck := secretAt(c.CredentialFile)
			if cs == nil {
				t.Errorf("%s: tenant %s: credential_file %s is not in a mounted Secret", svc, id, c.CredentialFile)
			} else if _, ok := secretData(cs)[ck]; !ok {
				t.Errorf("%s: tenant %s: credential_file %s: Secret %s has no key %s", svc, id, c.CredentialFile, cs.Name, ck)
			}
		}
	}
	for _, cm := range m.configMaps {
		for k, v := range cm.Data {
			if strings.Contains(v, `"token"`) || strings.Contains(v, "credential") {
				t.Errorf("ConfigMap %s key %s looks like it holds a credential; use a Secret", cm.Name, k)
			}
		}
	}
}

// TestK8sCallersSecrets parses the reader's callers file and the settings service's admins file
// from the Secrets they are mounted from, with the services' own parsers: a file they refuse
// stops them at start.
func TestK8sCallersSecrets(t *testing.T) {
	m := loadManifests(t)
	for _, c := range []struct {
		svc, setting string
		parse        func([]byte) error
	}{
		{"reader", "BYOK_READER_CALLERS_FILE", func(b []byte) error { _, err := callers.Parse(b); return err }},
		{"settings", "BYOK_SETTINGS_ADMINS_FILE", func(b []byte) error { _, err := settingsapi.ParseAdmins(b); return err }},
	} {
		d := m.deploymentOf(c.svc)
		if d == nil {
			continue // reported by TestK8sDeployments
		}
		pod := d.Spec.Template.Spec
		file := m.containerEnv(t, d.Name, pod.Containers[0])[c.setting]
		if file == "" {
			t.Errorf("%s: %s not set (the service does not start without it)", d.Name, c.setting)
			continue
		}
		v, key := secretVolumeAt(pod, file)
		if v == nil {
			t.Errorf("%s: %s=%s is not in a mounted Secret", d.Name, c.setting, file)
			continue
		}
		s, ok := m.secrets[v.SecretName]
		if !ok {
			t.Errorf("%s: %s is in Secret %s, which deploy/k8s does not hold (commit a placeholder)", d.Name, c.setting, v.SecretName)
			continue
		}
		b, ok := secretData(s)[key]
		if !ok {
			t.Errorf("%s: %s=%s: Secret %s has no key %s", d.Name, c.setting, file, s.Name, key)
			continue
		}
		if err := c.parse([]byte(b)); err != nil {
			t.Errorf("Secret %s key %s: %v", s.Name, key, err)
		}
	}
}

// TestK8sSettingsKey checks the settings key: every service whose code reads
// BYOK_SETTINGS_KEY_FILE sets it to a file in a mounted Secret, the same Secret for all (what the
// settings service seals must open in every worker), not optional. That Secret is not in
// deploy/k8s, because `kubectl apply -k` would replace the real key with the committed one and a
// replaced key leaves every saved credential unopenable; a manifest says how to create it.
func TestK8sSettingsKey(t *testing.T) {
	m := loadManifests(t)
	secret := ""
	for _, svc := range daemons {
		if !serviceEnv(t, svc).names["BYOK_SETTINGS_KEY_FILE"] {
			continue
		}
		d := m.deploymentOf(svc)
		if d == nil {
			continue // reported by TestK8sDeployments
		}
		pod := d.Spec.Template.Spec
		file := m.containerEnv(t, d.Name, pod.Containers[0])["BYOK_SETTINGS_KEY_FILE"]
		if file == "" {
			t.Errorf("%s: BYOK_SETTINGS_KEY_FILE not set: credentials saved on the settings page would not open there", d.Name)
			continue
		}
		v, _ := secretVolumeAt(pod, file)
		if v == nil {
			t.Errorf("%s: BYOK_SETTINGS_KEY_FILE=%s is not in a mounted Secret", d.Name, file)
			continue
		}
		if v.Optional != nil && *v.Optional {
			t.Errorf("%s: the settings key's Secret volume is optional: without it the pod should not start", d.Name)
		}
		if secret == "" {
			secret = v.SecretName
		} else if v.SecretName != secret {
			t.Errorf("%s: settings key from Secret %s, the others use %s", d.Name, v.SecretName, secret)
		}
	}
	if secret == "" {
		t.Fatal("no Deployment mounts the settings key")
	}
	if _, ok := m.secrets[secret]; ok {
		t.Errorf("Secret %s is in deploy/k8s: an apply would replace the real settings key with it", secret)
	}
	documented := false
	for _, raw := range m.raw {
		documented = documented || strings.Contains(raw, "create secret generic "+secret+" ")
	}
	if !documented {
		t.Errorf("no manifest says how to create the Secret %s (kubectl -n byok create secret generic %s ...)", secret, secret)
	}
}

// TestSettingsSingleInstance: the settings service serialises a tenant's writes within one
// process, not across processes (services/settings/main.go), so exactly one may run, in compose
// and in Kubernetes, also during a rollout.
func TestSettingsSingleInstance(t *testing.T) {
	if s := loadCompose(t).Services["settings"]; s.Deploy != nil && s.Deploy.Replicas != nil && *s.Deploy.Replicas != 1 {
		t.Errorf("compose settings: deploy.replicas %d, want 1", *s.Deploy.Replicas)
	}
	m := loadManifests(t)
	d := m.deploymentOf("settings")
	if d == nil {
		t.Fatal("no settings Deployment")
	}
	if d.Spec.Replicas == nil || *d.Spec.Replicas != 1 {
		t.Errorf("%s: replicas %s, want 1 (set explicitly)", d.Name, ptrString(d.Spec.Replicas))
	}
	if d.Spec.Strategy.Type != appsv1.RecreateDeploymentStrategyType {
		t.Errorf("%s: strategy %q, want Recreate (a rolling update runs the new pod next to the old one)", d.Name, d.Spec.Strategy.Type)
	}
	for _, h := range m.hpas {
		if h.Spec.ScaleTargetRef.Kind == "Deployment" && h.Spec.ScaleTargetRef.Name == d.Name {
			t.Errorf("HPA %s scales %s, which must run once", h.Name, d.Name)
		}
	}
}

// TestK8sAutoscalers checks the consumer-lag HPAs: they scale an existing Deployment on the lag
// of that service's own consumer group and input topic, and never past the topic's partitions.
func TestK8sAutoscalers(t *testing.T) {
	m := loadManifests(t)
	consumers := map[string][2]string{ // service → (group setting, input topic setting)
		"encryptor": {"BYOK_ENCRYPTOR_GROUP", "BYOK_PLAINTEXT_TOPIC"},
		"auditor":   {"BYOK_AUDITOR_GROUP", "BYOK_AUDIT_TOPIC"},
	}
	for svc, vars := range consumers {
		d := m.deploymentOf(svc)
		if d == nil {
			continue
		}
		ce := serviceEnv(t, svc)
		env := m.containerEnv(t, d.Name, d.Spec.Template.Spec.Containers[0])
		group, okG := ce.value(env, vars[0])
		topic, okT := ce.value(env, vars[1])
		if !okG || !okT {
			t.Errorf("Deployment %s: set %s and %s explicitly so the HPA can be checked against them", d.Name, vars[0], vars[1])
			continue
		}
		parts, _ := ce.value(env, "BYOK_PARTITIONS")
		partitions, err := strconv.Atoi(parts)
		if err != nil {
			partitions = 6 // the code's default (an int, not a string literal the scan can read)
		}
		var hpa *autoscalingv2.HorizontalPodAutoscaler
		for _, h := range m.hpas {
			if h.Spec.ScaleTargetRef.Kind == "Deployment" && h.Spec.ScaleTargetRef.Name == d.Name && h.Namespace == d.Namespace {
				hpa = h
			}
		}
		if hpa == nil {
			t.Errorf("Deployment %s: no HorizontalPodAutoscaler", d.Name)
			continue
		}
		if hpa.Spec.MaxReplicas > int32(partitions) {
			t.Errorf("HPA %s: maxReplicas %d > %d partitions; extra consumers would sit idle", hpa.Name, hpa.Spec.MaxReplicas, partitions)
		}
		if hpa.Spec.MinReplicas == nil || *hpa.Spec.MinReplicas < 1 || *hpa.Spec.MinReplicas > hpa.Spec.MaxReplicas {
			t.Errorf("HPA %s: minReplicas %v not in [1, maxReplicas]", hpa.Name, hpa.Spec.MinReplicas)
		}
		lag := false
		for _, mt := range hpa.Spec.Metrics {
			if mt.Type != autoscalingv2.ExternalMetricSourceType || mt.External == nil || mt.External.Metric.Name != "kafka_consumergroup_lag" {
				continue
			}
			lag = true
			sel := mt.External.Metric.Selector
			if sel == nil || sel.MatchLabels["consumergroup"] != group || sel.MatchLabels["topic"] != topic {
				t.Errorf("HPA %s: lag selector %v, want consumergroup=%s topic=%s (the Deployment's %s and %s)", hpa.Name, sel, group, topic, vars[0], vars[1])
			}
			if tg := mt.External.Target; tg.Type != autoscalingv2.AverageValueMetricType || tg.AverageValue == nil || tg.AverageValue.IsZero() {
				t.Errorf("HPA %s: lag target %+v, want a non-zero AverageValue", hpa.Name, tg)
			}
		}
		if !lag {
			t.Errorf("HPA %s: no External metric kafka_consumergroup_lag", hpa.Name)
		}
	}
}

func ptrString[T any](p *T) string {
	if p == nil {
		return "unset"
	}
	return fmt.Sprint(*p)
}
