package deploytest

import (
	"bufio"
	"bytes"
	"context"
	"encoding/json"
	"fmt"
	"io"
	"maps"
	"net/http"
	"net/url"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"slices"
	"sort"
	"strconv"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/compose-spec/compose-go/v2/types"
	"github.com/rs/zerolog"
	"github.com/twmb/franz-go/pkg/kfake"

	"github.com/byok-io/byok/pkg/audit"
	byokv1 "github.com/byok-io/byok/pkg/gen/byokv1"
	"github.com/byok-io/byok/services/forwarder/forward"
)

// The forwarder's deployment: its targets file (per tenant: webhook URL, HMAC key, headers) is
// parsed with the forwarder's own parser, in compose and in Kubernetes; in compose a real
// forwarder delivers to the demo receiver, run here with this machine's python3. It consumes the
// audit topic in a consumer group of its own: the checks on consumer groups and the audit topic
// below hold for every daemon.

// decodeTargets decodes a targets file into the forwarder's layout, strictly (unknown fields are
// errors, as in forward.ParseTargets), without resolving any secret.
func decodeTargets(b []byte) (forward.TargetsFile, error) {
	var f forward.TargetsFile
	dec := json.NewDecoder(bytes.NewReader(b))
	dec.DisallowUnknownFields()
	err := dec.Decode(&f)
	return f, err
}

// secretEnvs are the variables a targets file names in secret_env: the forwarder reads them by a
// name that is data, as the encryptor reads credential_env.
func secretEnvs(f forward.TargetsFile) map[string]bool {
	out := map[string]bool{}
	for _, c := range f.Tenants {
		if c.Webhook != nil && c.Webhook.SecretEnv != "" {
			out[c.Webhook.SecretEnv] = true
		}
	}
	return out
}

// composeTargetsFile returns the host file of a service's targets file, the read-only bind mount
// at BYOK_FORWARD_TARGETS_FILE; false when the service sets none.
func composeTargetsFile(t *testing.T, p *types.Project, svc string) (string, bool) {
	t.Helper()
	path, ok := envMap(p.Services[svc].Environment)["BYOK_FORWARD_TARGETS_FILE"]
	if !ok {
		return "", false
	}
	return composeBindFile(t, p, svc, "BYOK_FORWARD_TARGETS_FILE", path), true
}

// composeTargets is a service's targets file, decoded; false when the service sets none.
func composeTargets(t *testing.T, p *types.Project, svc string) (forward.TargetsFile, bool) {
	t.Helper()
	src, ok := composeTargetsFile(t, p, svc)
	if !ok {
		return forward.TargetsFile{}, false
	}
	b, err := os.ReadFile(src)
	if err != nil {
		t.Fatal(err)
	}
	f, err := decodeTargets(b)
	if err != nil {
		t.Fatalf("%s: %v", src, err)
	}
	return f, true
}

// TestComposeForwarder: the forwarder starts with compose's targets file (its own parser, with
// the compose environment for secret_env), the file commits no key, the demo key is documented,
// and every target is a tenant of the demo tenants file.
func TestComposeForwarder(t *testing.T) {
	p := loadCompose(t)
	s := p.Services["forwarder"]
	env := envMap(s.Environment)
	src, ok := composeTargetsFile(t, p, "forwarder")
	if !ok {
		t.Fatal("forwarder: BYOK_FORWARD_TARGETS_FILE not set (the forwarder does not start without it)")
	}
	b, err := os.ReadFile(src)
	if err != nil {
		t.Fatal(err)
	}
	targets, err := forward.ParseTargets(b, func(name string) string { return env[name] })
	if err != nil {
		t.Fatalf("%s with the forwarder's compose environment: %v (the forwarder would refuse to start)", src, err)
	}
	if len(targets) == 0 {
		t.Errorf("%s: no targets; the demo forwards nothing", src)
	}
	f, err := decodeTargets(b)
	if err != nil {
		t.Fatal(err)
	}
	raw, err := os.ReadFile(filepath.Join(repoRoot(t), "docker-compose.yml"))
	if err != nil {
		t.Fatal(err)
	}
	var comments strings.Builder
	for l := range strings.SplitSeq(string(raw), "\n") {
		if i := strings.Index(l, "#"); i >= 0 {
			comments.WriteString(l[i:] + "\n")
		}
	}
	demo := mustComposeTenants(t, p, "encryptor")
	for id, c := range f.Tenants {
		if c.Webhook.Secret != "" {
			t.Errorf("%s: tenant %s: an inline secret is committed; name a variable with secret_env and set it in docker-compose.yml", src, id)
		}
		if key := env[c.Webhook.SecretEnv]; !strings.Contains(comments.String(), key) {
			t.Errorf("docker-compose.yml: the demo webhook key of tenant %s (%s) is not documented in a comment", id, c.Webhook.SecretEnv)
		}
		if _, ok := demo.Tenants[id]; !ok {
			t.Errorf("%s: tenant %s is not a tenant of deploy/compose/tenants.json: its webhook would never be called", src, id)
		}
	}
}

// TestComposeConsumerGroupsAndAuditTopic: every consumer group is set explicitly and no two
// services share one (the forwarder in the auditor's group would split byok.audit's partitions
// with it, and each would see only part of the trail); every service reads and writes one audit
// topic; a scaled consumer stays within its input topic's partitions.
func TestComposeConsumerGroupsAndAuditTopic(t *testing.T) {
	p := loadCompose(t)
	topics := initKafkaTopics(t, p)
	groups := map[string]string{} // group → service
	auditTopic := ""
	for _, svc := range daemons {
		env := envMap(p.Services[svc].Environment)
		ce := serviceEnv(t, svc)
		for name := range ce.names {
			if !strings.HasSuffix(name, "_GROUP") {
				continue
			}
			g, ok := env[name]
			if !ok {
				t.Errorf("service %s: set %s explicitly, so that consumer groups can be checked", svc, name)
				continue
			}
			if other, dup := groups[g]; dup {
				t.Errorf("services %s and %s both consume in group %s: they would split the partitions", other, svc, g)
			}
			groups[g] = svc
		}
		if ce.names["BYOK_AUDIT_TOPIC"] {
			topic, _ := ce.value(env, "BYOK_AUDIT_TOPIC")
			if auditTopic == "" {
				auditTopic = topic
			} else if topic != auditTopic {
				t.Errorf("service %s: BYOK_AUDIT_TOPIC=%s, another service uses %s", svc, topic, auditTopic)
			}
		}
	}
	if g, ok := envMap(p.Services["forwarder"].Environment)["BYOK_FORWARDER_GROUP"]; !ok || groups[g] != "forwarder" {
		t.Errorf("forwarder: BYOK_FORWARDER_GROUP not set to a group of its own")
	}
	for svc, input := range map[string]string{"encryptor": "BYOK_PLAINTEXT_TOPIC", "auditor": "BYOK_AUDIT_TOPIC", "forwarder": "BYOK_AUDIT_TOPIC"} {
		s := p.Services[svc]
		if s.Deploy == nil || s.Deploy.Replicas == nil {
			continue
		}
		topic := envMap(s.Environment)[input]
		if n := *s.Deploy.Replicas; n < 1 || n > topics[topic].partitions {
			t.Errorf("service %s: deploy.replicas %d, want 1 to the %d partitions of %s", svc, n, topics[topic].partitions, topic)
		}
	}
}

// sinkListening is the demo receiver's first line: where it listens.
var sinkListening = regexp.MustCompile(`listening on (\S+:\d+)`)

// TestComposeForwarderDeliversToWebhookSink runs the compose demo's forwarding path without
// Docker: for each target of compose's targets file, the receiver service its URL names (a
// deploy/compose script run with python3, as its image does) is started here, a real forwarder
// with compose's targets, key, topic and group reads audit events from an in-process Kafka, and
// the receiver must acknowledge them (so it verifies the forwarder's signature with the same key).
// A wrongly signed request must be refused, and the receiver's health check path must answer.
func TestComposeForwarderDeliversToWebhookSink(t *testing.T) {
	python, err := exec.LookPath("python3")
	if err != nil {
		t.Skip("no python3 to run the demo receiver")
	}
	p := loadCompose(t)
	env := envMap(p.Services["forwarder"].Environment)
	f, ok := composeTargets(t, p, "forwarder")
	if !ok {
		t.Fatal("forwarder: BYOK_FORWARD_TARGETS_FILE not set")
	}
	sinks := map[string]*sinkProc{} // by compose service
	ids := slices.Sorted(maps.Keys(f.Tenants))
	for _, id := range ids {
		w := f.Tenants[id].Webhook
		u, err := url.Parse(w.URL)
		if err != nil {
			t.Fatalf("tenant %s: %v", id, err)
		}
		sp := sinks[u.Hostname()]
		if sp == nil {
			sp = startComposeSink(t, p, python, u)
			sinks[u.Hostname()] = sp
		}
		local := *u
		local.Host = sp.addr
		w.URL = local.String()
	}
	// The targets as the forwarder loads them, pointed at the receivers started here.
	b, err := json.Marshal(f)
	if err != nil {
		t.Fatal(err)
	}
	targets, err := forward.ParseTargets(b, func(name string) string { return env[name] })
	if err != nil {
		t.Fatal(err)
	}

	topic, group := env["BYOK_AUDIT_TOPIC"], env["BYOK_FORWARDER_GROUP"]
	cluster, err := kfake.NewCluster(kfake.NumBrokers(1), kfake.SeedTopics(int32(initKafkaTopics(t, p)[topic].partitions), topic))
	if err != nil {
		t.Fatal(err)
	}
	defer cluster.Close()
	brokers := cluster.ListenAddrs()
	// Events as the services write them (audit.Log to audit.KafkaSink): three for each target's
	// tenant, one for a tenant without a target.
	ksink := audit.NewKafkaSink(brokers, topic)
	defer ksink.Close()
	alog := audit.NewLog(ksink, "deploytest")
	var want []string
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	for _, id := range append(slices.Clone(ids), "deploytest-untargeted") {
		for i := range 3 {
			ev := &byokv1.AuditEvent{TenantId: id, Provider: "vault", KekId: "byok-demo", Operation: audit.OpUnwrap,
				Scopes:   []*byokv1.AuditScope{{ChatId: "general", Day: "2026-01-02"}},
				DekCount: 1, ActorService: "reader", ActorUser: "u-1", Purpose: "render", Result: audit.ResultOK,
				RequestId: fmt.Sprintf("req-%d", i)}
			if err := alog.Emit(ctx, ev); err != nil {
				t.Fatal(err)
			}
			if targets[id] != nil {
				want = append(want, ev.EventId)
			}
		}
	}

	fw, err := forward.New(forward.Config{Brokers: brokers, Topic: topic, GroupID: group,
		BatchWait: 50 * time.Millisecond, Timeout: 5 * time.Second, RetryMin: 50 * time.Millisecond,
		RetryMax: 500 * time.Millisecond, RejectedRetry: 500 * time.Millisecond,
		SessionTimeout: 6 * time.Second, ShutdownTimeout: 5 * time.Second}, targets, zerolog.Nop())
	if err != nil {
		t.Fatal(err)
	}
	runCtx, stop := context.WithCancel(context.Background())
	done := make(chan error, 1)
	go func() { done <- fw.Run(runCtx) }()
	output := func() string {
		var all []string
		for name, sp := range sinks {
			all = append(all, name+":\n"+sp.out.String())
		}
		sort.Strings(all)
		return strings.Join(all, "\n")
	}
	deadline := time.Now().Add(30 * time.Second)
	for {
		s := fw.Stats()
		if s.Delivered >= int64(len(want)) && s.Untargeted == 3 {
			break
		}
		if s.Rejections > 0 || time.Now().After(deadline) {
			stop()
			<-done
			t.Fatalf("forwarder stats %+v, want %d delivered, 3 untargeted and no rejection (wrong key?); receivers' output:\n%s", s, len(want), output())
		}
		time.Sleep(50 * time.Millisecond)
	}
	stop()
	if err := <-done; err != nil {
		t.Errorf("forwarder Run() = %v, want nil", err)
	}
	if s := fw.Stats(); s.Rejections != 0 || s.DeliveryFailures != 0 {
		t.Errorf("forwarder stats %+v: the receiver refused requests; receivers' output:\n%s", s, output())
	}
	out := output()
	for _, id := range want {
		if !strings.Contains(out, id) {
			t.Errorf("the receiver did not report event %s; its output:\n%s", id, out)
		}
	}

	// A request signed with another key is refused, with nothing parsed; the health check answers.
	for name, sp := range sinks {
		body := []byte(`{"tenant_id":"demo","events":[]}`)
		req, _ := http.NewRequest(http.MethodPost, "http://"+sp.addr+"/byok/demo", bytes.NewReader(body))
		req.Header.Set(forward.HeaderSignature, forward.Sign([]byte("not-the-demo-webhook-key"), body))
		req.Header.Set(forward.HeaderTenant, "demo")
		if st := httpStatus(t, req); st != http.StatusUnauthorized {
			t.Errorf("%s: a request signed with another key got %d, want 401", name, st)
		}
		req, _ = http.NewRequest(http.MethodGet, "http://"+sp.addr+sp.healthPath, nil)
		if st := httpStatus(t, req); st != http.StatusOK {
			t.Errorf("%s: health check GET %s got %d, want 200", name, sp.healthPath, st)
		}
	}
}

// sinkProc is a demo receiver running here.
type sinkProc struct {
	addr       string // host:port it listens on here
	healthPath string // the path its compose health check asks
	out        *syncBuffer
}

// startComposeSink starts the compose service u names the way its image would: its command is
// [python, (-u), <a script bind-mounted read-only from deploy/compose>, <host:port>], with the
// port u's and the service's environment. Here it listens on a free loopback port instead.
func startComposeSink(t *testing.T, p *types.Project, python string, u *url.URL) *sinkProc {
	t.Helper()
	name := u.Hostname()
	s, ok := p.Services[name]
	if !ok {
		t.Fatalf("webhook %s: no compose service %s", u, name)
	}
	cmd := slices.Clone(s.Command)
	if len(cmd) < 3 || !strings.HasPrefix(filepath.Base(cmd[0]), "python") {
		t.Fatalf("service %s: command %v, want [python <script> <host:port>]", name, cmd)
	}
	cmd = slices.DeleteFunc(cmd[1:], func(a string) bool { return a == "-u" })
	if len(cmd) != 2 {
		t.Fatalf("service %s: command %v, want [python <script> <host:port>]", name, s.Command)
	}
	script := composeBindFile(t, p, name, "its script", cmd[0])
	if _, port := splitHostPort(t, cmd[1]); strconv.Itoa(int(port)) != u.Port() {
		t.Errorf("service %s listens on %s, but the webhook URL is %s", name, cmd[1], u)
	}
	if s.HealthCheck == nil {
		t.Fatalf("service %s: no health check", name)
	}
	health := regexp.MustCompile(`http://127\.0\.0\.1:(\d+)(/[^'"\s]*)`).FindStringSubmatch(strings.Join(s.HealthCheck.Test, " "))
	if health == nil || health[1] != u.Port() {
		t.Fatalf("service %s: health check %v does not ask http://127.0.0.1:%s/…", name, s.HealthCheck.Test, u.Port())
	}

	ctx, cancel := context.WithCancel(context.Background())
	c := exec.CommandContext(ctx, python, "-u", script, "127.0.0.1:0")
	c.Env = os.Environ()
	for k, v := range envMap(s.Environment) {
		c.Env = append(c.Env, k+"="+v)
	}
	sp := &sinkProc{healthPath: health[2], out: &syncBuffer{}}
	c.Stderr = sp.out
	stdout, err := c.StdoutPipe()
	if err != nil {
		t.Fatal(err)
	}
	if err := c.Start(); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { cancel(); _ = c.Wait() })
	first := make(chan string, 1)
	go func() {
		r := bufio.NewReader(stdout)
		line, _ := r.ReadString('\n')
		sp.out.Write([]byte(line))
		first <- line
		_, _ = io.Copy(sp.out, r)
	}()
	select {
	case line := <-first:
		m := sinkListening.FindStringSubmatch(line)
		if m == nil {
			t.Fatalf("service %s (%s): first line %q, want \"… listening on host:port\"; output:\n%s", name, script, line, sp.out.String())
		}
		sp.addr = m[1]
	case <-time.After(15 * time.Second):
		t.Fatalf("service %s (%s) did not start listening within 15s; output:\n%s", name, script, sp.out.String())
	}
	return sp
}

func httpStatus(t *testing.T, req *http.Request) int {
	t.Helper()
	resp, err := (&http.Client{Timeout: 5 * time.Second}).Do(req)
	if err != nil {
		t.Errorf("%s %s: %v", req.Method, req.URL, err)
		return 0
	}
	_, _ = io.Copy(io.Discard, resp.Body)
	resp.Body.Close()
	return resp.StatusCode
}

// syncBuffer collects a process's output, safe for concurrent writers.
type syncBuffer struct {
	mu sync.Mutex
	b  bytes.Buffer
}

func (s *syncBuffer) Write(p []byte) (int, error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.b.Write(p)
}

func (s *syncBuffer) String() string {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.b.String()
}

// TestK8sForwarder: the forwarder's targets file is in a mounted Secret of deploy/k8s, and that
// placeholder is the forwarder's layout with every key a placeholder the forwarder refuses — so it
// does not start (and commit the audit topic past events as untargeted) before the real targets
// are in place — and with real keys in their place it would start. No committed key is usable.
func TestK8sForwarder(t *testing.T) {
	m := loadManifests(t)
	d := m.deploymentOf("forwarder")
	if d == nil {
		t.Fatal("no forwarder Deployment")
	}
	pod := d.Spec.Template.Spec
	env := m.containerEnv(t, d.Name, pod.Containers[0])
	file := env["BYOK_FORWARD_TARGETS_FILE"]
	if file == "" {
		t.Fatalf("%s: BYOK_FORWARD_TARGETS_FILE not set (the forwarder does not start without it)", d.Name)
	}
	v, key := secretVolumeAt(pod, file)
	if v == nil {
		t.Fatalf("%s: BYOK_FORWARD_TARGETS_FILE=%s is not in a mounted Secret (it holds HMAC keys)", d.Name, file)
	}
	s, ok := m.secrets[v.SecretName]
	if !ok {
		t.Fatalf("%s: the targets file is in Secret %s, which deploy/k8s does not hold (commit a placeholder)", d.Name, v.SecretName)
	}
	b, ok := secretData(s)[key]
	if !ok {
		t.Fatalf("%s: BYOK_FORWARD_TARGETS_FILE=%s: Secret %s has no key %s", d.Name, file, s.Name, key)
	}
	f, err := decodeTargets([]byte(b))
	if err != nil {
		t.Fatalf("Secret %s key %s: %v", s.Name, key, err)
	}
	if len(f.Tenants) == 0 {
		t.Fatalf("Secret %s key %s: no tenants, so no placeholder key: the forwarder would start and skip every event", s.Name, key)
	}
	getenv := func(name string) string { return env[name] }
	// Refused as committed; accepted with real keys in place (below): so the keys are the only
	// thing the forwarder refuses.
	if _, err := forward.ParseTargets([]byte(b), getenv); err == nil {
		t.Errorf("Secret %s key %s: the forwarder accepts the committed placeholder: it would start, skip every event as untargeted and commit past it", s.Name, key)
	}
	real := strings.Repeat("k", 2*forward.MinSecretLen)
	for id, c := range f.Tenants {
		w := c.Webhook
		if w == nil {
			continue // the parse below reports it
		}
		if w.Secret != "" && len(w.Secret) >= forward.MinSecretLen {
			t.Errorf("Secret %s: tenant %s: committed key of %d bytes would be accepted; commit a placeholder shorter than %d", s.Name, id, len(w.Secret), forward.MinSecretLen)
		}
		if w.SecretEnv != "" && len(env[w.SecretEnv]) >= forward.MinSecretLen {
			t.Errorf("%s: tenant %s: %s holds a key the forwarder would accept; commit a placeholder shorter than %d", d.Name, id, w.SecretEnv, forward.MinSecretLen)
		}
		if u, err := url.Parse(w.URL); err == nil && u.Scheme != "https" {
			t.Errorf("Secret %s: tenant %s: webhook %s: use https (the placeholder is what operators copy)", s.Name, id, w.URL)
		}
		if w.Secret != "" {
			w.Secret = real
		}
	}
	filled, _ := json.Marshal(f)
	if _, err := forward.ParseTargets(filled, func(name string) string {
		if secretEnvs(f)[name] {
			return real
		}
		return env[name]
	}); err != nil {
		t.Errorf("Secret %s key %s with real keys: %v", s.Name, key, err)
	}
}

// TestK8sConsumerGroupsAndAuditTopic: in Kubernetes as in compose, no two Deployments share a
// consumer group, every one reads and writes one audit topic, and the forwarder's fixed replica
// count stays within the audit topic's partitions.
func TestK8sConsumerGroupsAndAuditTopic(t *testing.T) {
	m := loadManifests(t)
	groups := map[string]string{}
	auditTopic := ""
	partitions := 0 // of the audit topic, as the services that create it would make it
	for _, svc := range daemons {
		d := m.deploymentOf(svc)
		if d == nil {
			continue // reported by TestK8sDeployments
		}
		ce := serviceEnv(t, svc)
		env := m.containerEnv(t, d.Name, d.Spec.Template.Spec.Containers[0])
		for name := range ce.names {
			if !strings.HasSuffix(name, "_GROUP") {
				continue
			}
			g, ok := env[name]
			if !ok {
				t.Errorf("Deployment %s: set %s explicitly, so that consumer groups can be checked", d.Name, name)
				continue
			}
			if other, dup := groups[g]; dup {
				t.Errorf("Deployments %s and %s both consume in group %s: they would split the partitions", other, d.Name, g)
			}
			groups[g] = d.Name
		}
		if ce.names["BYOK_AUDIT_TOPIC"] {
			topic, _ := ce.value(env, "BYOK_AUDIT_TOPIC")
			if auditTopic == "" {
				auditTopic = topic
			} else if topic != auditTopic {
				t.Errorf("Deployment %s: BYOK_AUDIT_TOPIC=%s, another Deployment uses %s", d.Name, topic, auditTopic)
			}
		}
		if ce.names["BYOK_PARTITIONS"] {
			n := 6 // the code's default (an int, not a string literal the scan can read)
			if v, ok := env["BYOK_PARTITIONS"]; ok {
				n, _ = strconv.Atoi(v)
			}
			if partitions == 0 || n < partitions {
				partitions = n
			}
		}
	}
	if partitions == 0 {
		partitions = 6
	}
	d := m.deploymentOf("forwarder")
	if d == nil {
		t.Fatal("no forwarder Deployment")
	}
	if d.Spec.Replicas == nil || *d.Spec.Replicas < 1 || int(*d.Spec.Replicas) > partitions {
		t.Errorf("%s: replicas %s, want 1 to the audit topic's %d partitions (set explicitly)", d.Name, ptrString(d.Spec.Replicas), partitions)
	}
}
