// Package metrics is byok's Prometheus plumbing: one registry per process, the HTTP endpoints
// every service exposes (/metrics, /healthz, /readyz), and the few series shared by several
// services (KMS calls). Service-specific series are registered by each service's main from the
// counters its packages already keep (Stats()), so packages do not thread a registry around.
//
// Labels come only from small closed sets — service, provider, operation, result, topic. Never a
// tenant or chat id (unbounded), and never anything derived from a message body, a DEK or a
// credential: a label value is as visible as a log line (INVARIANTS.md 1, 2, 7).
package metrics

import (
	"context"
	"errors"
	"fmt"
	"net"
	"net/http"
	"slices"
	"strings"
	"sync"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/collectors"
	"github.com/prometheus/client_golang/prometheus/promhttp"
)

// Namespace prefixes every byok series.
const Namespace = "byok"

// Registry is one process's metrics. Every series registered through it carries the constant
// label service="<name>", so dashboards can mix services without relying on scrape config.
type Registry struct {
	prometheus.Registerer
	prometheus.Gatherer
}

// NewRegistry returns the registry of one process of service, already holding the Go runtime
// and process collectors.
func NewRegistry(service string) *Registry {
	reg := prometheus.NewRegistry()
	r := &Registry{
		Registerer: prometheus.WrapRegistererWith(prometheus.Labels{"service": service}, reg),
		Gatherer:   reg,
	}
	r.MustRegister(
		collectors.NewGoCollector(),
		collectors.NewProcessCollector(collectors.ProcessCollectorOpts{}),
	)
	return r
}

// Counter registers byok_<name> as a counter read from fn at scrape time: the way to expose a
// counter a package already keeps in its Stats().
func (r *Registry) Counter(name, help string, fn func() int64) {
	r.MustRegister(prometheus.NewCounterFunc(prometheus.CounterOpts{Namespace: Namespace, Name: name, Help: help},
		func() float64 { return float64(fn()) }))
}

// Gauge registers byok_<name> as a gauge read from fn at scrape time.
func (r *Registry) Gauge(name, help string, fn func() float64) {
	r.MustRegister(prometheus.NewGaugeFunc(prometheus.GaugeOpts{Namespace: Namespace, Name: name, Help: help}, fn))
}

// Check is one readiness condition: Fn returns nil when the dependency it names is usable.
// Name is shown to whoever calls /readyz, so it must be a fixed word ("kafka", "clickhouse"),
// never an address with credentials in it.
type Check struct {
	Name string
	Fn   func(ctx context.Context) error
}

// Health is what /healthz and /readyz answer from.
type Health struct {
	// Live reports whether the process loop is alive (nil = alive as long as it answers HTTP).
	Live func() error
	// Ready lists the readiness checks; all must pass.
	Ready []Check
	// Timeout bounds each readiness check (default 2s).
	Timeout time.Duration
}

// Handler serves /metrics from reg and /healthz and /readyz from h. Mount it on a mux, or use
// Serve for a listener of its own.
func Handler(reg prometheus.Gatherer, h Health) http.Handler {
	mux := http.NewServeMux()
	mux.Handle("GET /metrics", promhttp.HandlerFor(reg, promhttp.HandlerOpts{}))
	mux.HandleFunc("GET /healthz", h.serveLive)
	mux.HandleFunc("GET /readyz", h.serveReady)
	return mux
}

func (h Health) serveLive(w http.ResponseWriter, _ *http.Request) {
	w.Header().Set("Content-Type", "text/plain; charset=utf-8")
	if h.Live != nil {
		if err := h.Live(); err != nil {
			w.WriteHeader(http.StatusServiceUnavailable)
			fmt.Fprintln(w, "not alive")
			return
		}
	}
	fmt.Fprintln(w, "ok")
}

// Failing runs every readiness check concurrently, each bounded by the timeout, and returns the
// names of those that failed, sorted.
func (h Health) Failing(ctx context.Context) []string {
	timeout := h.Timeout
	if timeout <= 0 {
		timeout = 2 * time.Second
	}
	var (
		mu     sync.Mutex
		failed []string
		wg     sync.WaitGroup
	)
	for _, c := range h.Ready {
		wg.Go(func() {
			cctx, cancel := context.WithTimeout(ctx, timeout)
			defer cancel()
			if err := c.Fn(cctx); err != nil {
				mu.Lock()
				failed = append(failed, c.Name)
				mu.Unlock()
			}
		})
	}
	wg.Wait()
	slices.Sort(failed)
	return failed
}

// serveReady answers 200 "ready" or 503 "not ready: <failing check names>". Only the names are
// shown: a dependency's error text can carry an address or a credential.
func (h Health) serveReady(w http.ResponseWriter, r *http.Request) {
	w.Header().Set("Content-Type", "text/plain; charset=utf-8")
	if failed := h.Failing(r.Context()); len(failed) > 0 {
		w.WriteHeader(http.StatusServiceUnavailable)
		fmt.Fprintf(w, "not ready: %s\n", strings.Join(failed, ", "))
		return
	}
	fmt.Fprintln(w, "ready")
}

// Serve listens on addr and serves Handler(reg, h) until ctx ends. It returns once listening (or
// with the listen error), giving the bound address, so a start fails fast on a taken port.
func Serve(ctx context.Context, addr string, reg prometheus.Gatherer, h Health) (net.Addr, error) {
	ln, err := net.Listen("tcp", addr)
	if err != nil {
		return nil, fmt.Errorf("metrics: listen on %s: %w", addr, err)
	}
	srv := &http.Server{
		Handler:           Handler(reg, h),
		ReadHeaderTimeout: 5 * time.Second,
		WriteTimeout:      30 * time.Second,
	}
	go func() {
		if err := srv.Serve(ln); err != nil && !errors.Is(err, http.ErrServerClosed) {
			_ = err // the process's own loop reports failure; a dead metrics listener shows as a failed scrape
		}
	}()
	go func() {
		<-ctx.Done()
		sctx, cancel := context.WithTimeout(context.WithoutCancel(ctx), 2*time.Second)
		defer cancel()
		_ = srv.Shutdown(sctx)
	}()
	return ln.Addr(), nil
}

// KafkaReachable is a readiness check that dials the first broker of brokers that answers.
func KafkaReachable(brokers []string) Check {
	return Check{Name: "kafka", Fn: func(ctx context.Context) error {
		var d net.Dialer
		var errs []error
		for _, b := range brokers {
			c, err := d.DialContext(ctx, "tcp", b)
			if err == nil {
				return c.Close()
			}
			errs = append(errs, err)
		}
		return errors.Join(errs...)
	}}
}

// ParseListen reads a -metrics-listen value: "off" or "" turns metrics off (returns ""), anything
// else must be host:port.
func ParseListen(addr string) (string, error) {
	if addr == "off" {
		addr = ""
	}
	return addr, CheckListen(addr)
}

// CheckListen validates a -metrics-listen value: empty (metrics off) or host:port.
func CheckListen(addr string) error {
	if addr == "" {
		return nil
	}
	if _, _, err := net.SplitHostPort(addr); err != nil {
		return fmt.Errorf("-metrics-listen (BYOK_METRICS_LISTEN) %q is not host:port", addr)
	}
	return nil
}
