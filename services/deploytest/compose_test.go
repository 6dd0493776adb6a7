package deploytest

import (
	"context"
	"encoding/json"
	"net"
	"os"
	"path/filepath"
	"regexp"
	"slices"
	"strconv"
	"strings"
	"testing"

	"github.com/compose-spec/compose-go/v2/cli"
	"github.com/compose-spec/compose-go/v2/types"

	"github.com/byok-io/byok/pkg/tenant"
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
	for svc, jobs := range map[string][]string{"ingest": {"init-kafka"}, "encryptor": {"init-kafka", "init-vault"}, "auditor": {"init-kafka"}} {
		for _, j := range jobs {
			if d, ok := p.Services[svc].DependsOn[j]; !ok || d.Condition != types.ServiceConditionCompletedSuccessfully {
				t.Errorf("service %s: depends_on %s = %+v, want condition service_completed_successfully", svc, j, d)
			}
		}
	}
}

func TestComposeInitCreatesTopicsAndKey(t *testing.T) {
	p := loadCompose(t)
	script := strings.Join(append(p.Services["init-kafka"].Entrypoint, p.Services["init-kafka"].Command...), " ")
	for _, topic := range []string{"byok.messages.plaintext", "byok.messages.stored", "byok.messages.deadletter", "byok.audit"} {
		if !regexp.MustCompile(`(?m)^\s*t ` + regexp.QuoteMeta(topic) + ` \d+\s*$`).MatchString(script) {
			t.Errorf("init-kafka does not create topic %s", topic)
		}
	}
	// Every Vault tenant of the compose tenants file needs its KEK created by init-vault.
	vaultInit := strings.Join(p.Services["init-vault"].Command, " ")
	if !strings.Contains(vaultInit, "secrets enable transit") {
		t.Errorf("init-vault does not enable transit")
	}
	for id, c := range composeTenants(t, p).Tenants {
		if c.Enabled && c.Provider == "vault" && !strings.Contains(vaultInit, "transit/keys/"+c.KEKID+" ") {
			t.Errorf("tenant %s uses Vault key %s, which init-vault does not create", id, c.KEKID)
		}
	}
}

// composeTenants parses the encryptor's tenants file with the encryptor's own parser: the bind
// mount whose target is BYOK_TENANTS_FILE.
func composeTenants(t *testing.T, p *types.Project) tenant.File {
	t.Helper()
	s := p.Services["encryptor"]
	path := envMap(s.Environment)["BYOK_TENANTS_FILE"]
	if path == "" {
		t.Fatalf("encryptor: BYOK_TENANTS_FILE not set")
	}
	for _, v := range s.Volumes {
		if v.Target != path {
			continue
		}
		if v.Type != types.VolumeTypeBind || !v.ReadOnly {
			t.Errorf("encryptor: %s should be a read-only bind mount, got %s read_only=%t", path, v.Type, v.ReadOnly)
		}
		if want := filepath.Join(repoRoot(t), "deploy", "compose", "tenants.json"); v.Source != want {
			t.Errorf("encryptor: tenants file from %s, want %s", v.Source, want)
		}
		b, err := os.ReadFile(v.Source)
		if err != nil {
			t.Fatal(err)
		}
		f, err := tenant.ParseFile(b)
		if err != nil {
			t.Fatalf("%s: %v", v.Source, err)
		}
		return f
	}
	t.Fatalf("encryptor: BYOK_TENANTS_FILE=%s but no volume is mounted there", path)
	return tenant.File{}
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
	creds := credentialEnvs(composeTenants(t, p))
	for _, svc := range daemons {
		s := p.Services[svc]
		ce := serviceEnv(t, svc)
		check := func(where, name string) {
			if !ce.names[name] && !(svc == "encryptor" && creds[name]) {
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
	for name := range creds {
		if _, ok := envMap(p.Services["encryptor"].Environment)[name]; !ok {
			t.Errorf("tenants file names credential_env %s, but the encryptor's environment does not set it", name)
		}
	}
}

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

// TestComposeAddressesResolve checks every address a byok service dials: the host is a compose
// service and the port is one that service exposes.
func TestComposeAddressesResolve(t *testing.T) {
	p := loadCompose(t)
	serves := func(addr string) string {
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
	// The demo tenant's Vault credential must reach the compose Vault.
	env := envMap(p.Services["encryptor"].Environment)
	for name := range credentialEnvs(composeTenants(t, p)) {
		var cred struct{ Address, Token string }
		if err := json.Unmarshal([]byte(env[name]), &cred); err != nil || cred.Address == "" || cred.Token == "" {
			t.Errorf("encryptor: %s is not a Vault credential {address, token}: %v", name, err)
			continue
		}
		if why := serves(strings.TrimPrefix(strings.TrimPrefix(cred.Address, "http://"), "https://")); why != "" {
			t.Errorf("encryptor: %s address %s: %s", name, cred.Address, why)
		}
		if want := envMap(p.Services["vault"].Environment)["VAULT_DEV_ROOT_TOKEN_ID"]; cred.Token != want {
			t.Errorf("encryptor: %s token does not match the dev Vault's root token", name)
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
