package deploytest

import (
	"maps"
	"net"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"runtime"
	"strconv"
	"strings"
	"testing"
)

// TestDockerfiles reads each service's Dockerfile as text (no engine here to build it) and checks
// what the images promise: a Go builder on the workspace, a static binary, a non-Go final image,
// a numeric non-root user, and the service's own package as the entrypoint.
func TestDockerfiles(t *testing.T) {
	from := regexp.MustCompile(`(?m)^FROM\s+(\S+)(?:\s+AS\s+(\S+))?`)
	for _, svc := range daemons {
		b, err := os.ReadFile(filepath.Join(repoRoot(t), "services", svc, "Dockerfile"))
		if err != nil {
			t.Error(err)
			continue
		}
		df := string(b)
		froms := from.FindAllStringSubmatch(df, -1)
		if len(froms) < 2 || !strings.HasPrefix(froms[0][1], "golang:") {
			t.Errorf("%s/Dockerfile: stages %v, want a golang: builder and a final stage", svc, froms)
			continue
		}
		if last := froms[len(froms)-1][1]; strings.HasPrefix(last, "golang") {
			t.Errorf("%s/Dockerfile: final image %s still has the Go toolchain", svc, last)
		}
		for _, want := range []string{"COPY go.work", "CGO_ENABLED=0", "./services/" + svc + "\n", `ENTRYPOINT ["/usr/local/bin/` + svc + `"]`} {
			if !strings.Contains(df, want) {
				t.Errorf("%s/Dockerfile: missing %q", svc, want)
			}
		}
		u := userLine.FindAllStringSubmatch(df, -1)
		if len(u) == 0 {
			t.Errorf("%s/Dockerfile: no numeric USER (Kubernetes' runAsNonRoot can check only a numeric one)", svc)
		} else if uid, _ := strconv.Atoi(u[len(u)-1][1]); uid == 0 {
			t.Errorf("%s/Dockerfile: runs as root", svc)
		}
		for _, name := range envToken.FindAllString(df, -1) {
			if !serviceEnv(t, svc).names[name] {
				t.Errorf("%s/Dockerfile: mentions %s, which services/%s does not read", svc, name, svc)
			}
		}
		// The image's listen defaults and its EXPOSE name the same ports.
		listens := map[string]bool{}
		for _, m := range envListen.FindAllStringSubmatch(df, -1) {
			_, port, err := net.SplitHostPort(m[2])
			if err != nil {
				t.Errorf("%s/Dockerfile: ENV %s=%s is not host:port", svc, m[1], m[2])
				continue
			}
			listens[port] = true
		}
		exposed := map[string]bool{}
		for _, m := range exposeLine.FindAllStringSubmatch(df, -1) {
			for _, port := range strings.Fields(m[1]) {
				exposed[strings.TrimSuffix(port, "/tcp")] = true
			}
		}
		if !maps.Equal(listens, exposed) {
			t.Errorf("%s/Dockerfile: EXPOSE %v, but its ENV *_LISTEN defaults listen on %v", svc, keys(exposed), keys(listens))
		}
	}
}

var (
	envListen  = regexp.MustCompile(`(?m)^ENV\s+(BYOK_[A-Z0-9_]+_LISTEN)=(\S+)\s*$`)
	exposeLine = regexp.MustCompile(`(?m)^EXPOSE\s+(.+?)\s*$`)
	userLine   = regexp.MustCompile(`(?m)^USER\s+(\d+)(?::(\d+))?\s*$`)
)

// dockerfileUID is the numeric user the service's image runs as (its last USER).
func dockerfileUID(t *testing.T, svc string) int {
	t.Helper()
	b, err := os.ReadFile(filepath.Join(repoRoot(t), "services", svc, "Dockerfile"))
	if err != nil {
		t.Fatal(err)
	}
	u := userLine.FindAllStringSubmatch(string(b), -1)
	if len(u) == 0 {
		t.Fatalf("%s/Dockerfile: no numeric USER", svc)
	}
	uid, _ := strconv.Atoi(u[len(u)-1][1])
	return uid
}

// TestKafkaConnectedProbe runs the encryptor's and auditor's health check — compose's and the
// Kubernetes exec probe — with this machine's sh: it must pass while a connection to the broker
// port is open and fail when none is.
func TestKafkaConnectedProbe(t *testing.T) {
	if runtime.GOOS != "linux" {
		t.Skip("reads /proc/net/tcp")
	}
	sh, err := exec.LookPath("sh")
	if err != nil {
		t.Skip("no sh")
	}
	p := loadCompose(t)
	m := loadManifests(t)
	scripts := map[string]string{}
	for _, svc := range []string{"encryptor", "auditor"} {
		hc := p.Services[svc].HealthCheck
		if hc == nil || len(hc.Test) != 4 || hc.Test[1] != "/busybox/sh" || hc.Test[2] != "-c" {
			t.Fatalf("compose %s health check = %v, want [CMD /busybox/sh -c script]", svc, hc)
		}
		scripts["compose "+svc] = hc.Test[3]
		// Kubernetes probes are HTTP now (/readyz, /healthz on the metrics port; checked in
		// k8s_test.go); an exec probe, if one comes back, must pass this test too.
		if d := m.deploymentOf(svc); d != nil && d.Spec.Template.Spec.Containers[0].ReadinessProbe.Exec != nil {
			c := d.Spec.Template.Spec.Containers[0]
			for name, pr := range map[string][]string{"readiness": c.ReadinessProbe.Exec.Command, "liveness": c.LivenessProbe.Exec.Command} {
				if len(pr) != 3 {
					t.Fatalf("k8s %s %s probe = %v", svc, name, pr)
				}
				scripts["k8s "+svc+" "+name] = pr[2]
			}
		}
	}
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer ln.Close()
	brokers := "kafka-a:1," + ln.Addr().String() // the last entry's port is the one checked
	run := func(script string) error {
		cmd := exec.Command(sh, "-c", script)
		cmd.Env = append(os.Environ(), "BYOK_KAFKA_BROKERS="+brokers)
		return cmd.Run()
	}
	for name, script := range scripts {
		if err := run(script); err == nil {
			t.Errorf("%s: passes with no connection to %s", name, ln.Addr())
		}
	}
	conn, err := net.Dial("tcp", ln.Addr().String())
	if err != nil {
		t.Fatal(err)
	}
	defer conn.Close()
	srv, err := ln.Accept()
	if err != nil {
		t.Fatal(err)
	}
	defer srv.Close()
	for name, script := range scripts {
		if err := run(script); err != nil {
			t.Errorf("%s: fails (%v) while connected to %s", name, err, ln.Addr())
		}
	}
}
