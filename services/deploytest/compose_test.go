package deploytest

import (
	"context"
	"encoding/json"
	"maps"
	"net"
	"net/url"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"slices"
	"strconv"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/compose-spec/compose-go/v2/cli"
	"github.com/compose-spec/compose-go/v2/types"
	"github.com/segmentio/kafka-go"
	"github.com/twmb/franz-go/pkg/kfake"

	"github.com/byok-io/byok/pkg/callers"
	"github.com/byok-io/byok/pkg/control"
	"github.com/byok-io/byok/pkg/settings"
	"github.com/byok-io/byok/pkg/tenant"
	settingsapi "github.com/byok-io/byok/services/settings/api"
)

// loadCompose loads docker-compose.yml as `docker compose` would from the repository root,
// with an empty environment so that the file's own defaults (${VAR:-default}) apply.
func loadCompose(t *testing.T) *types.Project {
	t.Helper()
	root := repoRoot(t)
	opts, err := cli.NewProjectOptions([]string{filepath.Join(root, "docker-compose.yml")},
		cli.WithWorkingDirectory(root), cli.WithEnv(nil), cli.WithName("byok"))
	if err != nil {
		t.Fatal(err)
	}
	p, err := opts.LoadProject(context.Background())
	if err != nil {
		t.Fatalf("load docker-compose.yml: %v", err)
	}
	return p
}

func envMap(m types.MappingWithEquals) map[string]string {
	out := map[string]string{}
	for k, v := range m {
		if v != nil {
			out[k] = *v
		}
	}
	return out
}

func TestComposeServicesBuildFromDockerfiles(t *testing.T) {
	p := loadCompose(t)
	root := repoRoot(t)
	for _, svc := range daemons {
		s, ok := p.Services[svc]
		if !ok {
			t.Errorf("docker-compose.yml has no service %s", svc)
			continue
		}
		if s.Build == nil {
			t.Errorf("service %s: no build section", svc)
			continue
		}
		if s.Build.Context != root {
			t.Errorf("service %s: build context %q, want the repository root %q (the go.work workspace)", svc, s.Build.Context, root)
		}
		df := filepath.Join(s.Build.Context, s.Build.Dockerfile)
		if want := filepath.Join(root, "services", svc, "Dockerfile"); df != want {
			t.Errorf("service %s: Dockerfile %s, want %s", svc, df, want)
		}
		if _, err := os.Stat(df); err != nil {
			t.Errorf("service %s: %v", svc, err)
		}
	}
}

func TestComposeHealthChecksAndDependencies(t *testing.T) {
	p := loadCompose(t)
	for _, svc := range daemons {
		s := p.Services[svc]
		if hc := s.HealthCheck; hc == nil || hc.Disable || len(hc.Test) < 2 || !slices.Contains([]string{"CMD", "CMD-SHELL"}, hc.Test[0]) {
			t.Errorf("service %s: health check = %+v, want a CMD or CMD-SHELL test", svc, s.HealthCheck)
		}
		if len(s.DependsOn) == 0 {
			t.Errorf("service %s: no depends_on", svc)
		}
	}
	for name, s := range p.Services {
		for dep, d := range s.DependsOn {
			ds, ok := p.Services[dep]
			if !ok {
				t.Errorf("service %s depends on unknown service %s", name, dep)
				continue
			}
			switch d.Condition {
			case types.ServiceConditionHealthy:
				if ds.HealthCheck == nil || ds.HealthCheck.Disable {
					t.Errorf("service %s waits for %s to be healthy, but %s has no health check", name, dep, dep)
				}
			case types.ServiceConditionCompletedSuccessfully:
				if ds.Restart != "no" {
					t.Errorf("service %s waits for one-shot %s to complete, but its restart is %q, want \"no\"", name, dep, ds.Restart)
				}
			default:
				t.Errorf("service %s depends on %s with condition %q, want service_healthy or service_completed_successfully", name, dep, d.Condition)
			}
		}
	}
	// The init jobs must run before the services that rely on the topics and the Vault key.
	// (The settings key's init job: TestComposeSettingsKey.)
	for svc, jobs := range map[string][]string{"ingest": {"init-kafka"}, "encryptor": {"init-kafka", "init-vault"}, "auditor": {"init-kafka"},
		"reader": {"init-kafka"}, "settings": {"init-kafka"}, "forwarder": {"init-kafka"}} {
		for _, j := range jobs {
			if d, ok := p.Services[svc].DependsOn[j]; !ok || d.Condition != types.ServiceConditionCompletedSuccessfully {
				t.Errorf("service %s: depends_on %s = %+v, want condition service_completed_successfully", svc, j, d)
			}
		}
	}
}

func TestComposeInitCreatesTopicsAndKey(t *testing.T) {
	p := loadCompose(t)
	topics := initKafkaTopics(t, p)
	for _, topic := range []string{"byok.messages.plaintext", "byok.messages.stored", "byok.messages.deadletter", "byok.audit",
		"byok.settings", "byok.revocations"} {
		if _, ok := topics[topic]; !ok {
			t.Errorf("init-kafka does not create topic %s", topic)
		}
	}
	// Every topic a service is configured with exists before it starts (the encryptor and auditor
	// run with BYOK_CREATE_TOPICS=false).
	for _, svc := range daemons {
		env := envMap(p.Services[svc].Environment)
		for name := range serviceEnv(t, svc).names {
			if !strings.HasSuffix(name, "_TOPIC") {
				continue
			}
			v, ok := env[name]
			if !ok {
				t.Errorf("service %s: set %s explicitly, so that its topic can be checked against init-kafka", svc, name)
			} else if _, ok := topics[v]; !ok {
				t.Errorf("service %s: %s=%s, a topic init-kafka does not create", svc, name, v)
			}
		}
	}
	// Every Vault tenant of the compose tenants file needs its KEK created by init-vault.
	vaultInit := strings.Join(p.Services["init-vault"].Command, " ")
	if !strings.Contains(vaultInit, "secrets enable transit") {
		t.Errorf("init-vault does not enable transit")
	}
	for id, c := range mustComposeTenants(t, p, "encryptor").Tenants {
		if c.Enabled && c.Provider == "vault" && !strings.Contains(vaultInit, "transit/keys/"+c.KEKID+" ") {
			t.Errorf("tenant %s uses Vault key %s, which init-vault does not create", id, c.KEKID)
		}
	}
}

// topicSpec is a topic as init-kafka creates it.
type topicSpec struct {
	partitions int
	config     map[string]string
}

var (
	topicHelper = regexp.MustCompile(`(?s)\bt\(\)\s*\{(.*?)\}`)
	topicLine   = regexp.MustCompile(`(?m)^\s*t (\S+) (\d+)((?:\s+--config\s+\S+=\S+)*)\s*$`)
	configFlag  = regexp.MustCompile(`--config\s+([^=\s]+)=(\S+)`)
)

// initKafkaTopics reads init-kafka's script: the --config pairs of its t() helper apply to every
// topic, and each line `t <topic> <partitions> [--config k=v]...` creates one topic.
func initKafkaTopics(t *testing.T, p *types.Project) map[string]topicSpec {
	t.Helper()
	s := p.Services["init-kafka"]
	script := strings.Join(append(s.Entrypoint, s.Command...), "\n")
	helper := topicHelper.FindStringSubmatch(script)
	if helper == nil {
		t.Fatalf("init-kafka: no t() helper in its script")
	}
	common := map[string]string{}
	for _, m := range configFlag.FindAllStringSubmatch(helper[1], -1) {
		common[m[1]] = m[2]
	}
	out := map[string]topicSpec{}
	for _, m := range topicLine.FindAllStringSubmatch(script, -1) {
		n, _ := strconv.Atoi(m[2])
		spec := topicSpec{partitions: n, config: maps.Clone(common)}
		for _, c := range configFlag.FindAllStringSubmatch(m[3], -1) {
			spec.config[c[1]] = c[2]
		}
		if _, dup := out[m[1]]; dup {
			t.Errorf("init-kafka creates %s twice", m[1])
		}
		out[m[1]] = spec
	}
	if len(out) == 0 {
		t.Fatalf("init-kafka: no `t <topic> <partitions>` lines in its script")
	}
	return out
}

// TestComposeControlTopicsAsTheCodeMakesThem creates the control topics with the code that
// creates them when they are missing (control.EnsureTopics) on an in-process Kafka (kfake), and
// checks that init-kafka makes them the same: partitions and every topic config the code sets.
// A compacted topic that init-kafka made with cleanup.policy=delete would lose settings and
// revocations at retention.
func TestComposeControlTopicsAsTheCodeMakesThem(t *testing.T) {
	p := loadCompose(t)
	specs := initKafkaTopics(t, p)
	var topics control.Topics // as the services are configured
	for _, svc := range daemons {
		env := envMap(p.Services[svc].Environment)
		for name, topic := range map[string]*string{"BYOK_SETTINGS_TOPIC": &topics.Settings, "BYOK_REVOCATIONS_TOPIC": &topics.Revocations} {
			if v, ok := env[name]; ok && *topic == "" {
				*topic = v
			} else if ok && v != *topic {
				t.Errorf("service %s: %s=%s, another service uses %s", svc, name, v, *topic)
			}
		}
	}
	if topics.Settings == "" || topics.Revocations == "" {
		t.Fatalf("no service sets BYOK_SETTINGS_TOPIC and BYOK_REVOCATIONS_TOPIC")
	}
	cluster, err := kfake.NewCluster(kfake.NumBrokers(1))
	if err != nil {
		t.Fatal(err)
	}
	defer cluster.Close()
	brokers := cluster.ListenAddrs()
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	if err := control.EnsureTopics(ctx, brokers, topics); err != nil {
		t.Fatalf("control.EnsureTopics: %v", err)
	}
	client := &kafka.Client{Addr: kafka.TCP(brokers...), Timeout: 10 * time.Second}
	for _, topic := range []string{topics.Settings, topics.Revocations} {
		md, err := client.Metadata(ctx, &kafka.MetadataRequest{Topics: []string{topic}})
		if err != nil || len(md.Topics) != 1 || md.Topics[0].Error != nil {
			t.Fatalf("metadata of %s: %v %+v", topic, err, md)
		}
		dc, err := client.DescribeConfigs(ctx, &kafka.DescribeConfigsRequest{Resources: []kafka.DescribeConfigRequestResource{
			{ResourceType: kafka.ResourceTypeTopic, ResourceName: topic}}})
		if err != nil || len(dc.Resources) != 1 || dc.Resources[0].Error != nil {
			t.Fatalf("describe configs of %s: %v %+v", topic, err, dc)
		}
		want := topicSpec{partitions: len(md.Topics[0].Partitions), config: map[string]string{}}
		for _, e := range dc.Resources[0].ConfigEntries {
			if e.ConfigSource == configSourceDynamicTopic {
				want.config[e.ConfigName] = e.ConfigValue
			}
		}
		if want.config["cleanup.policy"] != "compact" {
			t.Fatalf("control.EnsureTopics made %s with config %v: no cleanup.policy=compact; is this test reading the configs right?", topic, want.config)
		}
		got, ok := specs[topic]
		if !ok {
			t.Errorf("init-kafka does not create control topic %s", topic)
			continue
		}
		if got.partitions != want.partitions || !maps.Equal(got.config, want.config) {
			t.Errorf("init-kafka creates %s with %d partitions and config %v; control.EnsureTopics: %d and %v",
				topic, got.partitions, got.config, want.partitions, want.config)
		}
	}
}

// configSourceDynamicTopic is Kafka's DescribeConfigs source of a config set on the topic itself.
const configSourceDynamicTopic = 1

// composeTenants parses a service's tenants file, the bind mount whose target is
// BYOK_TENANTS_FILE, with the services' own parser; false when the service sets no tenants file.
// Every service that has one mounts the same deploy/compose/tenants.json.
func composeTenants(t *testing.T, p *types.Project, svc string) (tenant.File, bool) {
	t.Helper()
	path, ok := envMap(p.Services[svc].Environment)["BYOK_TENANTS_FILE"]
	if !ok {
		return tenant.File{}, false
	}
	src := composeBindFile(t, p, svc, "BYOK_TENANTS_FILE", path)
	if want := filepath.Join(repoRoot(t), "deploy", "compose", "tenants.json"); src != want {
		t.Errorf("%s: tenants file from %s, want %s", svc, src, want)
	}
	b, err := os.ReadFile(src)
	if err != nil {
		t.Fatal(err)
	}
	f, err := tenant.ParseFile(b)
	if err != nil {
		t.Fatalf("%s: %v", src, err)
	}
	return f, true
}

func mustComposeTenants(t *testing.T, p *types.Project, svc string) tenant.File {
	t.Helper()
	f, ok := composeTenants(t, p, svc)
	if !ok {
		t.Fatalf("%s: BYOK_TENANTS_FILE not set", svc)
	}
	return f
}

// composeBindFile returns the host file behind path (the value of setting name) in a service:
// it must be a read-only bind mount of a file under deploy/compose.
func composeBindFile(t *testing.T, p *types.Project, svc, name, path string) string {
	t.Helper()
	for _, v := range p.Services[svc].Volumes {
		if v.Target != path {
			continue
		}
		if v.Type != types.VolumeTypeBind || !v.ReadOnly {
			t.Errorf("%s: %s=%s should be a read-only bind mount, got %s read_only=%t", svc, name, path, v.Type, v.ReadOnly)
		}
		if dir := filepath.Join(repoRoot(t), "deploy", "compose"); filepath.Dir(v.Source) != dir {
			t.Errorf("%s: %s from %s, want a file in %s", svc, name, v.Source, dir)
		}
		return v.Source
	}
	t.Fatalf("%s: %s=%s but no volume is mounted there", svc, name, path)
	return ""
}

// composeDemoTokens are the demo bearer tokens docker-compose.yml documents; deploy/compose holds
// only their SHA-256.
var composeDemoTokens = []struct {
	svc, setting, caller, token string
	documented                  []string // what docker-compose.yml must say for the demo to be usable
}{
	{"reader", "BYOK_READER_CALLERS_FILE", "demo-reader", "demo-reader-token", []string{"demo-reader-token", `"actor":"demo-reader"`}},
	{"settings", "BYOK_SETTINGS_ADMINS_FILE", "demo-admin", "demo-admin-token", []string{"demo-admin-token"}},
}

// TestComposeCallersFiles parses the reader's callers file and the settings service's admins file
// with the services' own parsers and checks that the documented demo tokens work: the reader's
// caller may read every enabled demo tenant, the admin may manage every demo tenant.
func TestComposeCallersFiles(t *testing.T) {
	p := loadCompose(t)
	raw, err := os.ReadFile(filepath.Join(repoRoot(t), "docker-compose.yml"))
	if err != nil {
		t.Fatal(err)
	}
	demo := mustComposeTenants(t, p, "encryptor")
	for _, d := range composeDemoTokens {
		path, ok := envMap(p.Services[d.svc].Environment)[d.setting]
		if !ok {
			t.Errorf("%s: %s not set (the service does not start without it)", d.svc, d.setting)
			continue
		}
		src := composeBindFile(t, p, d.svc, d.setting, path)
		for _, word := range d.documented {
			if !strings.Contains(string(raw), word) {
				t.Errorf("docker-compose.yml does not document %s (%s)", word, filepath.Base(src))
			}
		}
		var name string
		var allowed func(string) bool
		switch d.svc {
		case "reader":
			set, err := callers.Load(src)
			if err != nil {
				t.Errorf("%s: %v", src, err)
				continue
			}
			c, ok := set.Authenticate(d.token)
			if !ok {
				t.Errorf("%s: the demo token %s is not accepted", src, d.token)
				continue
			}
			name, allowed = c.Name, c.Allowed
		case "settings":
			admins, err := settingsapi.LoadAdmins(src)
			if err != nil {
				t.Errorf("%s: %v", src, err)
				continue
			}
			a, ok := admins.Authenticate(d.token)
			if !ok {
				t.Errorf("%s: the demo token %s is not accepted", src, d.token)
				continue
			}
			name, allowed = a.Name, func(id string) bool { return slices.Contains(a.Tenants, id) }
		}
		if name != d.caller {
			t.Errorf("%s: demo token %s belongs to %q, want %q (the name docker-compose.yml documents)", src, d.token, name, d.caller)
		}
		for id, c := range demo.Tenants {
			if (c.Enabled || d.svc == "settings") && !allowed(id) {
				t.Errorf("%s: %s may not act on demo tenant %s", src, name, id)
			}
		}
	}
}

// TestComposeSettingsKey checks the settings key's path through compose: every service that reads
// BYOK_SETTINGS_KEY_FILE gets it from one named volume, read-only, after the one-shot job that
// writes it; that job's script, run here with this machine's sh, makes a key the services' own
// loader accepts, readable only by the services' user, and keeps it on a second run. No key is
// committed. (The image runs the script with busybox; here it is dash or bash with coreutils. It
// uses only POSIX sh and head, base64, wc, mv, chown, chmod, which both have.)
func TestComposeSettingsKey(t *testing.T) {
	p := loadCompose(t)
	var volume, target, file string
	uid := -1 // of the images that read the key: the one user a 0400 file serves
	for _, svc := range daemons {
		if !serviceEnv(t, svc).names["BYOK_SETTINGS_KEY_FILE"] {
			continue
		}
		if u := dockerfileUID(t, svc); uid == -1 {
			uid = u
		} else if u != uid {
			t.Errorf("%s/Dockerfile: USER %d, but another service reading the settings key runs as %d", svc, u, uid)
		}
		s := p.Services[svc]
		path, ok := envMap(s.Environment)["BYOK_SETTINGS_KEY_FILE"]
		if !ok {
			t.Errorf("%s: BYOK_SETTINGS_KEY_FILE not set: credentials saved on the settings page would not open there", svc)
			continue
		}
		if file == "" {
			file = path
		} else if path != file {
			t.Errorf("%s: BYOK_SETTINGS_KEY_FILE=%s, the others use %s", svc, path, file)
		}
		found := false
		for _, v := range s.Volumes {
			if v.Target != filepath.Dir(path) {
				continue
			}
			found = true
			if v.Type != types.VolumeTypeVolume || !v.ReadOnly {
				t.Errorf("%s: %s should be a read-only named volume, got %s read_only=%t", svc, v.Target, v.Type, v.ReadOnly)
			}
			if volume == "" {
				volume, target = v.Source, v.Target
			} else if v.Source != volume {
				t.Errorf("%s: settings key from volume %s, the others use %s", svc, v.Source, volume)
			}
		}
		if !found {
			t.Errorf("%s: BYOK_SETTINGS_KEY_FILE=%s but no volume is mounted at %s", svc, path, filepath.Dir(path))
		}
	}
	if volume == "" {
		t.Fatal("no service mounts the settings key")
	}
	if _, ok := p.Volumes[volume]; !ok {
		t.Errorf("volume %s is not declared under volumes:", volume)
	}
	// The job that writes it: the one-shot service mounting the volume writable.
	var job string
	for name, s := range p.Services {
		for _, v := range s.Volumes {
			if v.Type == types.VolumeTypeVolume && v.Source == volume && !v.ReadOnly {
				if job != "" {
					t.Errorf("services %s and %s both write volume %s", job, name, volume)
				}
				job = name
				if v.Target != target {
					t.Fatalf("%s mounts %s at %s, the services at %s", name, volume, v.Target, target)
				}
			}
		}
	}
	if job == "" {
		t.Fatalf("no service writes the settings key volume %s", volume)
	}
	if p.Services[job].Restart != "no" {
		t.Errorf("%s: restart %q, want \"no\" (a one-shot job)", job, p.Services[job].Restart)
	}
	for name, s := range p.Services {
		if _, reads := envMap(s.Environment)["BYOK_SETTINGS_KEY_FILE"]; !reads {
			continue
		}
		if d, ok := s.DependsOn[job]; !ok || d.Condition != types.ServiceConditionCompletedSuccessfully {
			t.Errorf("%s: depends_on %s = %+v, want condition service_completed_successfully", name, job, d)
		}
	}

	// Run the job's script against a temporary directory in place of the volume.
	sh, err := exec.LookPath("sh")
	if err != nil {
		t.Skip("no sh to run the init script")
	}
	s := p.Services[job]
	if len(s.Entrypoint) != 2 || s.Entrypoint[1] != "-ec" || len(s.Command) != 1 {
		t.Fatalf("%s: entrypoint %v command %v, want [/bin/sh -ec] and one script", job, s.Entrypoint, s.Command)
	}
	dir := t.TempDir()
	script := strings.ReplaceAll(s.Command[0], target, dir)
	keyFile := filepath.Join(dir, filepath.Base(file))
	env := os.Environ()
	if os.Geteuid() != 0 {
		// Only root may chown to the services' user; a stub keeps the rest of the script honest.
		bin := t.TempDir()
		if err := os.WriteFile(filepath.Join(bin, "chown"), []byte("#!/bin/sh\nexit 0\n"), 0o755); err != nil {
			t.Fatal(err)
		}
		env = append(env, "PATH="+bin+string(os.PathListSeparator)+os.Getenv("PATH"))
	}
	run := func() {
		t.Helper()
		cmd := exec.Command(sh, "-ec", script)
		cmd.Env = env
		if out, err := cmd.CombinedOutput(); err != nil {
			t.Fatalf("%s script: %v\n%s", job, err, out)
		}
	}
	run()
	key, err := settings.LoadKey(keyFile)
	if err != nil {
		t.Fatalf("%s wrote a key the services refuse: %v", job, err)
	}
	st, err := os.Stat(keyFile)
	if err != nil {
		t.Fatal(err)
	}
	if perm := st.Mode().Perm(); perm&0o077 != 0 || perm&0o400 == 0 {
		t.Errorf("%s: key file mode %v, want readable by its owner alone", job, perm)
	}
	if sys, ok := st.Sys().(*syscall.Stat_t); ok && os.Geteuid() == 0 && int(sys.Uid) != uid {
		t.Errorf("%s: key file owned by uid %d, want %d (the USER of the services' images)", job, sys.Uid, uid)
	}
	run()
	again, err := settings.LoadKey(keyFile)
	if err != nil {
		t.Fatal(err)
	}
	if again.ID() != key.ID() {
		t.Errorf("%s replaced the key on its second run: every saved credential would be lost", job)
	}
	// Nothing committed under deploy/compose is a key the services would load.
	committed, _ := filepath.Glob(filepath.Join(repoRoot(t), "deploy", "compose", "*"))
	for _, f := range committed {
		if _, err := settings.LoadKey(f); err == nil {
			t.Errorf("%s is a settings key: generate it at start, never commit it", f)
		}
	}
}

// credentialEnvs are the variables a tenants file names in credential_env: the code reads them
// by a name that is data, not a literal, so they are allowed on top of the code's own names.
func credentialEnvs(f tenant.File) map[string]bool {
	out := map[string]bool{}
	for _, c := range f.Tenants {
		if c.CredentialEnv != "" {
			out[c.CredentialEnv] = true
		}
	}
	return out
}

func TestComposeEnvIsReadByCode(t *testing.T) {
	p := loadCompose(t)
	creds := map[string]bool{} // of every service's tenants file and forwarder targets file
	for _, svc := range daemons {
		s := p.Services[svc]
		ce := serviceEnv(t, svc)
		f, _ := composeTenants(t, p, svc)
		own := credentialEnvs(f)
		if tf, ok := composeTargets(t, p, svc); ok {
			for name := range secretEnvs(tf) {
				own[name] = true // a webhook's HMAC key, read by a name that is data, as credential_env
			}
		}
		maps.Copy(creds, own)
		for name := range own {
			if _, ok := envMap(s.Environment)[name]; !ok {
				t.Errorf("%s: its tenants or targets file names %s (credential_env, secret_env), but its environment does not set it", svc, name)
			}
		}
		check := func(where, name string) {
			if !ce.names[name] && !own[name] {
				t.Errorf("compose service %s: %s names %s, which no Go source of services/%s (or a byok package it imports) reads", svc, where, name, svc)
			}
		}
		for name := range s.Environment {
			if strings.HasPrefix(name, "BYOK_") {
				check("environment", name)
			}
		}
		if s.HealthCheck != nil {
			for _, name := range envToken.FindAllString(strings.Join(s.HealthCheck.Test, " "), -1) {
				check("healthcheck", name)
			}
		}
		for _, name := range envToken.FindAllString(strings.Join(append(s.Entrypoint, s.Command...), " "), -1) {
			check("command", name)
		}
	}
	// And anywhere else in the file (another service, a comment): a name some service reads.
	raw, err := os.ReadFile(filepath.Join(repoRoot(t), "docker-compose.yml"))
	if err != nil {
		t.Fatal(err)
	}
	all := allCodeEnv(t)
	for _, name := range envToken.FindAllString(string(raw), -1) {
		if !all[name] && !creds[name] {
			t.Errorf("docker-compose.yml mentions %s, which no byok service reads", name)
		}
	}
}

var healthURL = regexp.MustCompile(`^http://(?:127\.0\.0\.1|localhost):(\d+)(/\S*)$`)

func TestComposePorts(t *testing.T) {
	p := loadCompose(t)
	for _, svc := range daemons {
		s := p.Services[svc]
		ce := serviceEnv(t, svc)
		env := envMap(s.Environment)
		listen := map[uint32]string{}
		for _, name := range ce.listenVars() {
			addr, ok := ce.value(env, name)
			if !ok {
				t.Errorf("service %s: %s neither set nor defaulted in code", svc, name)
				continue
			}
			host, port := splitHostPort(t, addr)
			if ip := net.ParseIP(host); host == "localhost" || (ip != nil && ip.IsLoopback()) {
				t.Errorf("service %s: %s=%s listens on loopback inside the container; set it to 0.0.0.0:%d", svc, name, addr, port)
			}
			listen[port] = name
		}
		for _, pc := range s.Ports {
			if _, ok := listen[pc.Target]; !ok {
				t.Errorf("service %s: port %d targeted, but the service listens on %v (from %v)", svc, pc.Target, keys(listen), ce.listenVars())
			}
		}
		for _, e := range s.Expose {
			if n, _ := strconv.Atoi(e); listen[uint32(n)] == "" {
				t.Errorf("service %s: exposes %s, but the service listens on %v", svc, e, keys(listen))
			}
		}
		// An HTTP health check asks the service itself: a port it listens on, a health endpoint.
		if s.HealthCheck != nil {
			for _, arg := range s.HealthCheck.Test {
				m := healthURL.FindStringSubmatch(arg)
				if m == nil {
					continue
				}
				if n, _ := strconv.Atoi(m[1]); listen[uint32(n)] == "" {
					t.Errorf("service %s: health check %s, but the service listens on %v", svc, arg, keys(listen))
				}
				if m[2] != "/healthz" && m[2] != "/readyz" {
					t.Errorf("service %s: health check %s, want /healthz or /readyz", svc, arg)
				}
			}
		}
	}
	// The demo holds a root token and test data: nothing is published beyond this machine.
	for name, s := range p.Services {
		for _, pc := range s.Ports {
			if pc.Published != "" && pc.HostIP != "127.0.0.1" {
				t.Errorf("service %s publishes %s:%d on %q, want host_ip 127.0.0.1", name, pc.Published, pc.Target, pc.HostIP)
			}
		}
	}
}

// composeServes says why addr (host:port) is not served inside the compose network: the host must
// be a compose service and the port one that service exposes or publishes. "" when it is.
func composeServes(t *testing.T, p *types.Project, addr string) string {
	t.Helper()
	host, port := splitHostPort(t, addr)
	s, ok := p.Services[host]
	if !ok {
		return "no compose service " + host
	}
	for _, e := range s.Expose {
		if e == strconv.Itoa(int(port)) {
			return ""
		}
	}
	for _, pc := range s.Ports {
		if pc.Target == port {
			return ""
		}
	}
	return "service " + host + " does not expose port " + strconv.Itoa(int(port))
}

// TestComposeAddressesResolve checks every address a byok service dials: the host is a compose
// service and the port is one that service exposes.
func TestComposeAddressesResolve(t *testing.T) {
	p := loadCompose(t)
	serves := func(addr string) string { return composeServes(t, p, addr) }
	for _, svc := range daemons {
		env := envMap(p.Services[svc].Environment)
		for _, name := range []string{"BYOK_KAFKA_BROKERS", "BYOK_CLICKHOUSE_ADDR"} {
			v, ok := env[name]
			if !ok {
				if serviceEnv(t, svc).names[name] {
					t.Errorf("service %s: %s not set; its default points at the host, not a container", svc, name)
				}
				continue
			}
			for addr := range strings.SplitSeq(v, ",") {
				if why := serves(strings.TrimSpace(addr)); why != "" {
					t.Errorf("service %s: %s=%s: %s", svc, name, v, why)
				}
			}
		}
	}
	// The demo tenant's Vault credential must reach the compose Vault, wherever it is set.
	for _, svc := range daemons {
		f, ok := composeTenants(t, p, svc)
		if !ok {
			continue
		}
		env := envMap(p.Services[svc].Environment)
		for name := range credentialEnvs(f) {
			var cred struct{ Address, Token string }
			if err := json.Unmarshal([]byte(env[name]), &cred); err != nil || cred.Address == "" || cred.Token == "" {
				t.Errorf("%s: %s is not a Vault credential {address, token}: %v", svc, name, err)
				continue
			}
			if why := serves(strings.TrimPrefix(strings.TrimPrefix(cred.Address, "http://"), "https://")); why != "" {
				t.Errorf("%s: %s address %s: %s", svc, name, cred.Address, why)
			}
			if want := envMap(p.Services["vault"].Environment)["VAULT_DEV_ROOT_TOKEN_ID"]; cred.Token != want {
				t.Errorf("%s: %s token does not match the dev Vault's root token", svc, name)
			}
		}
	}
	// The forwarder's webhooks: the demo stack's receivers are compose services too (nothing
	// leaves this machine).
	for _, svc := range daemons {
		tf, ok := composeTargets(t, p, svc)
		if !ok {
			continue
		}
		for id, c := range tf.Tenants {
			if c.Webhook == nil {
				continue // refused by the forwarder's parser: TestComposeForwarder
			}
			u, err := url.Parse(c.Webhook.URL)
			if err != nil || u.Port() == "" {
				t.Errorf("%s: tenant %s: webhook url %q: want scheme://host:port/path (%v)", svc, id, c.Webhook.URL, err)
				continue
			}
			if why := serves(u.Host); why != "" {
				t.Errorf("%s: tenant %s: webhook %s: %s", svc, id, c.Webhook.URL, why)
			}
		}
	}
}

func splitHostPort(t *testing.T, addr string) (string, uint32) {
	t.Helper()
	host, port, err := net.SplitHostPort(addr)
	if err != nil {
		t.Fatalf("%q is not host:port: %v", addr, err)
	}
	n, err := strconv.ParseUint(port, 10, 16)
	if err != nil {
		t.Fatalf("%q: port %v", addr, err)
	}
	return host, uint32(n)
}

func keys[K comparable, V any](m map[K]V) []K {
	out := make([]K, 0, len(m))
	for k := range m {
		out = append(out, k)
	}
	return out
}
