package deploytest

import (
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"runtime"
	"sort"
	"strings"
	"sync"
	"testing"
)

// daemons are the services that run as long-lived processes and so are deployed.
var daemons = []string{"ingest", "encryptor", "auditor", "reader", "settings", "forwarder"}

// repoRoot is the repository root: this package lives in services/deploytest.
func repoRoot(t *testing.T) string {
	t.Helper()
	_, file, _, ok := runtime.Caller(0)
	if !ok {
		t.Fatal("runtime.Caller failed")
	}
	return filepath.Clean(filepath.Join(filepath.Dir(file), "..", ".."))
}

var (
	envLiteral = regexp.MustCompile(`"(BYOK_[A-Z0-9_]+)"`)
	// envDefault catches both ways the services declare a string setting:
	// flagenv's fs.String("listen", "BYOK_X", "default", …) and ingest's env("BYOK_X", "default").
	envDefault = regexp.MustCompile(`"(BYOK_[A-Z0-9_]+)",\s*"([^"]*)"`)
	envToken   = regexp.MustCompile(`BYOK_[A-Z0-9_]+`)
)

// codeEnv is what a service's code reads: every "BYOK_*" string literal in the non-test Go files
// of the service's package and of every byok package it imports (go list -deps), with the
// literal default where the declaration has one. Simple and honest: a name that appears in no
// literal is not read.
type codeEnv struct {
	names    map[string]bool
	defaults map[string]string
}

var (
	codeEnvMu    sync.Mutex
	codeEnvCache = map[string]codeEnv{}
)

func serviceEnv(t *testing.T, svc string) codeEnv {
	t.Helper()
	codeEnvMu.Lock()
	defer codeEnvMu.Unlock()
	if ce, ok := codeEnvCache[svc]; ok {
		return ce
	}
	cmd := exec.Command("go", "list", "-deps", "-f", "{{.ImportPath}}\t{{.Dir}}\t{{join .GoFiles \"\\t\"}}", "./"+svc)
	cmd.Dir = filepath.Join(repoRoot(t), "services")
	out, err := cmd.Output()
	if err != nil {
		if ee, ok := err.(*exec.ExitError); ok {
			t.Fatalf("go list -deps ./%s: %v\n%s", svc, err, ee.Stderr)
		}
		t.Fatalf("go list -deps ./%s: %v", svc, err)
	}
	ce := codeEnv{names: map[string]bool{}, defaults: map[string]string{}}
	pkgs := 0
	for line := range strings.SplitSeq(strings.TrimSpace(string(out)), "\n") {
		f := strings.Split(line, "\t")
		if !strings.HasPrefix(f[0], "github.com/byok-io/byok/") || len(f) < 3 {
			continue
		}
		pkgs++
		for _, name := range f[2:] {
			src, err := os.ReadFile(filepath.Join(f[1], name))
			if err != nil {
				t.Fatal(err)
			}
			for _, m := range envLiteral.FindAllStringSubmatch(string(src), -1) {
				ce.names[m[1]] = true
			}
			for _, m := range envDefault.FindAllStringSubmatch(string(src), -1) {
				ce.defaults[m[1]] = m[2]
			}
		}
	}
	if pkgs == 0 || len(ce.names) == 0 {
		t.Fatalf("go list -deps ./%s found %d byok packages and %d BYOK_* names; the scan is broken", svc, pkgs, len(ce.names))
	}
	codeEnvCache[svc] = ce
	return ce
}

// value is what the service sees for name: the deployment's setting, else the code's default.
func (ce codeEnv) value(set map[string]string, name string) (string, bool) {
	if v, ok := set[name]; ok {
		return v, true
	}
	v, ok := ce.defaults[name]
	return v, ok
}

// listenVars are the settings a service listens on (by convention they end in _LISTEN).
func (ce codeEnv) listenVars() []string {
	var out []string
	for n := range ce.names {
		if strings.HasSuffix(n, "_LISTEN") {
			out = append(out, n)
		}
	}
	sort.Strings(out)
	return out
}

// allCodeEnv is the union over all daemons: what any deployed service reads.
func allCodeEnv(t *testing.T) map[string]bool {
	all := map[string]bool{}
	for _, svc := range daemons {
		for n := range serviceEnv(t, svc).names {
			all[n] = true
		}
	}
	return all
}

func TestCodeEnvScanFindsKnownSettings(t *testing.T) {
	// Guards the scan itself: if these stop being found, every other check passes vacuously.
	want := map[string][]string{
		"ingest":    {"BYOK_INGEST_LISTEN", "BYOK_KAFKA_BROKERS"},
		"encryptor": {"BYOK_TENANTS_FILE", "BYOK_ENCRYPTOR_GROUP", "BYOK_KAFKA_BROKERS"},
		"auditor":   {"BYOK_CLICKHOUSE_ADDR", "BYOK_AUDITOR_GROUP"},
		"reader":    {"BYOK_READER_LISTEN", "BYOK_READER_CALLERS_FILE", "BYOK_SETTINGS_KEY_FILE", "BYOK_TENANTS_FILE"},
		"settings":  {"BYOK_SETTINGS_LISTEN", "BYOK_SETTINGS_ADMINS_FILE", "BYOK_SETTINGS_KEY_FILE", "BYOK_SETTINGS_PROVIDERS"},
		"forwarder": {"BYOK_FORWARD_TARGETS_FILE", "BYOK_FORWARDER_GROUP", "BYOK_AUDIT_TOPIC", "BYOK_METRICS_LISTEN"},
	}
	for svc, names := range want {
		ce := serviceEnv(t, svc)
		for _, n := range names {
			if !ce.names[n] {
				t.Errorf("scan of services/%s did not find %s", svc, n)
			}
		}
	}
	for _, svc := range []string{"ingest", "forwarder"} {
		if got := serviceEnv(t, svc).names["BYOK_TENANTS_FILE"]; got {
			t.Errorf("scan of services/%s found BYOK_TENANTS_FILE, which %s does not read (the scan reaches too far)", svc, svc)
		}
	}
	for svc, want := range map[string]map[string]string{
		"ingest":    {"BYOK_INGEST_LISTEN": "127.0.0.1:8080"},
		"reader":    {"BYOK_READER_LISTEN": "127.0.0.1:8090", "BYOK_METRICS_LISTEN": "127.0.0.1:9104"},
		"settings":  {"BYOK_SETTINGS_LISTEN": "127.0.0.1:8091", "BYOK_METRICS_LISTEN": "127.0.0.1:9105"},
		"forwarder": {"BYOK_METRICS_LISTEN": "127.0.0.1:9103", "BYOK_FORWARDER_GROUP": "byok-forwarder"},
	} {
		for name, def := range want {
			if got := serviceEnv(t, svc).defaults[name]; got != def {
				t.Errorf("services/%s: default of %s = %q, want %s", svc, name, got, def)
			}
		}
	}
}
