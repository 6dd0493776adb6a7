// Command reader is byok's read path over HTTP: POST /v1/decrypt opens stored envelopes for
// authenticated callers, with DEKs unwrapped through each tenant's KMS (audited on the audit
// topic) and kept for at most -dek-ttl. The API and its logic live in services/reader/api; this
// file reads configuration, builds the tenant directory, audit log, DEK cache and metrics, and
// serves until SIGINT or SIGTERM.
package main

import (
	"context"
	"errors"
	"flag"
	"fmt"
	"net"
	"os"
	"os/signal"
	"strings"
	"syscall"
	"time"

	"github.com/rs/zerolog"

	"github.com/byok-io/byok/pkg/audit"
	"github.com/byok-io/byok/pkg/callers"
	"github.com/byok-io/byok/pkg/control"
	"github.com/byok-io/byok/pkg/deccache"
	"github.com/byok-io/byok/pkg/flagenv"
	"github.com/byok-io/byok/pkg/kms/registry"
	"github.com/byok-io/byok/pkg/logging"
	"github.com/byok-io/byok/pkg/metrics"
	"github.com/byok-io/byok/pkg/settings"
	"github.com/byok-io/byok/pkg/tenant"
	"github.com/byok-io/byok/services/reader/api"
)

type config struct {
	listen, metricsListen, logLevel string
	brokers                         []string
	auditTopic, workerID            string
	tenantsFile, callersFile        string
	settingsKeyFile                 string
	cache                           deccache.Config
	kms                             registry.Options
	control                         control.Topics
	maxStaleness                    time.Duration
	cachedAudit                     string
}

func parseConfig(args []string) (config, error) {
	fs := flagenv.New("reader")
	listen := fs.String("listen", "BYOK_READER_LISTEN", "127.0.0.1:8090", "HTTP listen address")
	brokers := fs.Strings("brokers", "BYOK_KAFKA_BROKERS", "127.0.0.1:19092", "comma-separated Kafka bootstrap brokers")
	auditTopic := fs.String("audit-topic", "BYOK_AUDIT_TOPIC", audit.TopicAudit, "topic every KMS access (and refused or cached read) is recorded to")
	tenantsFile := fs.String("tenants-file", "BYOK_TENANTS_FILE", "", "tenants file (JSON), re-read when it changes (optional: settings saved in the settings service win)")
	settingsKeyFile := fs.String("settings-key-file", "BYOK_SETTINGS_KEY_FILE", "", "the operator's settings key (base64), to open credentials saved through the settings service")
	callersFile := fs.String("callers-file", "BYOK_READER_CALLERS_FILE", "", `callers file: {"callers": {"<name>": {"token_sha256": "<hex>", "tenants": [...]}}}`)
	ttl := fs.Duration("dek-ttl", "BYOK_READER_DEK_TTL", deccache.DefaultTTL, "how long an unwrapped DEK serves reads: the default and the ceiling of every tenant's TTL, and so the longest a KMS-level revocation can be outlived")
	tenantTTL := fs.String("dek-ttl-tenants", "BYOK_READER_DEK_TTL_TENANTS", "", "per-tenant TTL overrides, tenant=duration,… (clamped to -dek-ttl)")
	cacheSize := fs.Int("dek-cache-size", "BYOK_READER_DEK_CACHE_SIZE", deccache.DefaultMaxEntries, "most unwrapped DEKs cached")
	metricsListen := fs.String("metrics-listen", "BYOK_METRICS_LISTEN", "127.0.0.1:9104", `where /metrics, /healthz and /readyz are served (host:port, or "" or "off")`)
	logLevel := fs.String("log-level", "BYOK_LOG_LEVEL", "info", "debug, info, warn or error")
	workerID := fs.String("worker-id", "BYOK_WORKER_ID", "", "this process's name in audit events (default reader-<hostname>)")
	settingsTopic := fs.String("settings-topic", "BYOK_SETTINGS_TOPIC", control.TopicSettings, "compacted topic of tenant settings saved by the settings service")
	revocationsTopic := fs.String("revocations-topic", "BYOK_REVOCATIONS_TOPIC", control.TopicRevocations, "compacted topic of granular revocations, followed to refuse revoked chats and date ranges")
	maxStaleness := fs.Duration("revocations-max-staleness", "BYOK_REVOCATIONS_MAX_STALENESS", 5*time.Second, "reads fail closed when the revocation list was last confirmed current longer ago than this")
	cachedAudit := fs.String("cached-read-audit", "BYOK_READER_CACHED_READ_AUDIT", api.CachedAuditSync, "sync: a cache hit is answered once its read_cached audit event is acknowledged; async: answered at once, event written in the background (lower latency; events in flight are lost if the process crashes)")
	insecure := fs.Bool("kms-insecure-loopback", "BYOK_KMS_INSECURE_LOOPBACK", false, "let gRPC KMS providers use plaintext to loopback endpoints (emulators; never in production)")
	if err := fs.Parse(args); err != nil {
		return config{}, err
	}
	if fs.NArg() > 0 {
		return config{}, fmt.Errorf("unexpected argument %q", fs.Arg(0))
	}
	c := config{listen: *listen, brokers: *brokers, auditTopic: strings.TrimSpace(*auditTopic), tenantsFile: *tenantsFile,
		callersFile: *callersFile, settingsKeyFile: *settingsKeyFile, metricsListen: *metricsListen, logLevel: strings.ToLower(*logLevel), workerID: *workerID,
		kms: registry.Options{InsecureLoopback: *insecure}, maxStaleness: *maxStaleness, cachedAudit: *cachedAudit,
		control: control.Topics{Settings: strings.TrimSpace(*settingsTopic), Revocations: strings.TrimSpace(*revocationsTopic)}}
	if _, _, err := net.SplitHostPort(c.listen); err != nil {
		return config{}, fmt.Errorf("-listen (BYOK_READER_LISTEN) %q is not host:port", c.listen)
	}
	if len(c.brokers) == 0 {
		return config{}, errors.New("-brokers (BYOK_KAFKA_BROKERS) is empty")
	}
	if c.auditTopic == "" {
		return config{}, errors.New("-audit-topic (BYOK_AUDIT_TOPIC) is empty")
	}
	if c.callersFile == "" {
		return config{}, errors.New("-callers-file (BYOK_READER_CALLERS_FILE) is required")
	}
	if c.control.Settings == "" || c.control.Revocations == "" || c.control.Settings == c.control.Revocations {
		return config{}, errors.New("-settings-topic (BYOK_SETTINGS_TOPIC) and -revocations-topic (BYOK_REVOCATIONS_TOPIC) must be two distinct topic names")
	}
	if c.cachedAudit != api.CachedAuditSync && c.cachedAudit != api.CachedAuditAsync {
		return config{}, fmt.Errorf("-cached-read-audit (BYOK_READER_CACHED_READ_AUDIT) %q is not sync or async", c.cachedAudit)
	}
	if c.maxStaleness <= 0 {
		return config{}, fmt.Errorf("-revocations-max-staleness (BYOK_REVOCATIONS_MAX_STALENESS) %s must be positive", c.maxStaleness)
	}
	if *ttl <= 0 {
		return config{}, fmt.Errorf("-dek-ttl (BYOK_READER_DEK_TTL) %s must be positive", *ttl)
	}
	if *cacheSize <= 0 {
		return config{}, fmt.Errorf("-dek-cache-size (BYOK_READER_DEK_CACHE_SIZE) %d must be positive", *cacheSize)
	}
	c.cache = deccache.Config{MaxTTL: *ttl, TTL: *ttl, MaxEntries: *cacheSize, TenantTTL: map[string]time.Duration{}}
	for p := range strings.SplitSeq(*tenantTTL, ",") {
		if p = strings.TrimSpace(p); p == "" {
			continue
		}
		id, d, ok := strings.Cut(p, "=")
		dur, err := time.ParseDuration(d)
		if !ok || id == "" || err != nil || dur <= 0 {
			return config{}, fmt.Errorf("-dek-ttl-tenants (BYOK_READER_DEK_TTL_TENANTS): %q is not tenant=duration", p)
		}
		c.cache.TenantTTL[id] = dur
	}
	var err error
	if c.metricsListen, err = metrics.ParseListen(c.metricsListen); err != nil {
		return config{}, err
	}
	if err := logging.CheckLevel(c.logLevel); err != nil {
		return config{}, err
	}
	if c.workerID == "" {
		host, _ := os.Hostname()
		c.workerID = "reader-" + host
	}
	return c, nil
}

func main() {
	cfg, err := parseConfig(os.Args[1:])
	if err != nil {
		if !errors.Is(err, flag.ErrHelp) {
			fmt.Fprintf(os.Stderr, "reader: invalid configuration: %v\n", err)
		}
		os.Exit(2)
	}
	log := logging.New("reader", cfg.logLevel, nil)
	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
	defer stop()
	if err := run(ctx, cfg, log); err != nil {
		log.Error().Err(err).Msg("exiting")
		os.Exit(1)
	}
}

func run(ctx context.Context, cfg config, log zerolog.Logger) error {
	set, err := callers.Load(cfg.callersFile)
	if err != nil {
		return fmt.Errorf("-callers-file (BYOK_READER_CALLERS_FILE): %w", err)
	}
	cache, err := deccache.New(cfg.cache)
	if err != nil {
		return fmt.Errorf("-dek-ttl / -dek-ttl-tenants: %w", err)
	}
	defer cache.Close()
	dir := tenant.NewDirectory(log)
	dir.SetKMSOptions(cfg.kms)
	dir.OnChange(func(ids []string) {
		for _, id := range ids {
			cache.DropTenant(id) // a changed KMS configuration invalidates what the old one unwrapped
		}
	})
	if cfg.tenantsFile != "" {
		if err := dir.LoadFile(cfg.tenantsFile); err != nil {
			return fmt.Errorf("-tenants-file (BYOK_TENANTS_FILE): %w", err)
		}
		go dir.WatchFile(ctx, cfg.tenantsFile, 2*time.Second)
	}
	var settingsKey *settings.Key
	if cfg.settingsKeyFile != "" {
		if settingsKey, err = settings.LoadKey(cfg.settingsKeyFile); err != nil {
			return fmt.Errorf("-settings-key-file (BYOK_SETTINGS_KEY_FILE): %w", err)
		}
	}

	// Know every revocation before serving the first read, then follow.
	view, err := control.Follow(ctx, cfg.brokers, cfg.control, log, control.FollowOptions{})
	if err != nil {
		return err
	}
	settings.Apply(view, dir, settingsKey, log)
	api.FollowCacheTTL(view, cache) // the DEK cache TTL each customer saved
	view.Subscribe(func(c control.Change) {
		if c.Revoked != nil {
			if rule, err := control.Compile(c.Revoked); err == nil {
				n := cache.DropScopes(c.TenantID, rule.Matches)
				log.Info().Str("tenant_id", c.TenantID).Str("revocation_id", c.Revoked.RevocationId).Int("deks_dropped", n).Msg("revocation applied")
			}
		}
	})

	sink := audit.NewKafkaSink(cfg.brokers, cfg.auditTopic)
	defer sink.Close()
	reg := metrics.NewRegistry("reader")
	log2 := audit.NewLog(sink, cfg.workerID)
	reader := &api.Reader{
		Resolver: &audit.Resolver{Inner: dir, Log: log2, Observe: metrics.NewKMS(reg).Observe},
		Log:      log2,
		Cache:    cache,

		Revocations:  view,
		MaxStaleness: cfg.maxStaleness,
		CachedAudit:  cfg.cachedAudit,
	}
	defer func() { // background audit writes finish before the sink closes
		fctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
		defer cancel()
		_ = reader.Flush(fctx)
	}()
	registerMetrics(reg, reader, cache)
	if cfg.metricsListen != "" {
		addr, err := metrics.Serve(ctx, cfg.metricsListen, reg, metrics.Health{Ready: []metrics.Check{metrics.KafkaReachable(cfg.brokers),
			{Name: "revocations", Fn: func(context.Context) error {
				if !view.SyncedWithin(cfg.maxStaleness) {
					return errors.New("revocation list not confirmed current")
				}
				return nil
			}}}})
		if err != nil {
			return err
		}
		log.Info().Str("addr", addr.String()).Msg("serving /metrics, /healthz, /readyz")
	}
	ln, err := net.Listen("tcp", cfg.listen)
	if err != nil {
		return fmt.Errorf("listen on %s (-listen, BYOK_READER_LISTEN): %w", cfg.listen, err)
	}
	log.Info().Strs("brokers", cfg.brokers).Str("audit_topic", cfg.auditTopic).Dur("dek_ttl", cfg.cache.MaxTTL).Msg("starting")
	return api.Serve(ctx, ln, api.NewHandler(reader, set, log), log)
}

func registerMetrics(reg *metrics.Registry, r *api.Reader, c *deccache.Cache) {
	reg.Counter("reader_items_ok_total", "Envelopes opened.", func() int64 { return r.Stats().ItemsOK })
	reg.Counter("reader_items_failed_total", "Envelopes not opened (any reason).", func() int64 { return r.Stats().ItemsFailed })
	reg.Counter("reader_items_refused_total", "Envelopes refused by policy (tenant not allowed for the caller).", func() int64 { return r.Stats().Refused })
	reg.Counter("reader_items_revoked_total", "Envelopes failed because the key owner revoked access.", func() int64 { return r.Stats().Revoked })
	reg.Counter("reader_items_scope_revoked_total", "Envelopes refused by a granular revocation (chat or date range).", func() int64 { return r.Stats().ScopeRevoked })
	reg.Counter("reader_items_stale_total", "Envelopes refused because the revocation list was not confirmed current.", func() int64 { return r.Stats().Stale })
	reg.Counter("reader_cached_read_events_total", "read_cached audit events recorded.", func() int64 { return r.Stats().CachedEvents })
	reg.Counter("reader_cached_read_events_lost_total", "read_cached audit events written in the background (async mode) that failed.", func() int64 { return r.Stats().CachedEventsLost })
	reg.Counter("reader_dek_cache_hits_total", "DEK cache hits.", func() int64 { return c.Stats().Hits })
	reg.Counter("reader_dek_cache_misses_total", "DEK cache misses.", func() int64 { return c.Stats().Misses })
	reg.Counter("reader_dek_cache_expired_total", "Cached DEKs zeroed at their TTL.", func() int64 { return c.Stats().Expired })
	reg.Counter("reader_dek_cache_evicted_total", "Cached DEKs zeroed to stay within -dek-cache-size.", func() int64 { return c.Stats().Evicted })
	reg.Gauge("reader_dek_cache_entries", "DEKs cached now.", func() float64 { return float64(c.Stats().Entries) })
}
