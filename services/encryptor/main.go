// Command encryptor consumes plaintext message events, encrypts each body with a DEK of its
// scope wrapped by the tenant's own KMS, and writes envelopes to the storage topic. Run as many
// processes as the input topic has partitions to scale out; they share one consumer group.
package main

import (
	"context"
	"fmt"
	"os"
	"os/signal"
	"strings"
	"syscall"
	"time"

	"github.com/rs/zerolog"

	"github.com/byok-io/byok/pkg/audit"
	"github.com/byok-io/byok/pkg/control"
	"github.com/byok-io/byok/pkg/dek"
	"github.com/byok-io/byok/pkg/flagenv"
	"github.com/byok-io/byok/pkg/kafkax"
	"github.com/byok-io/byok/pkg/kms/registry"
	"github.com/byok-io/byok/pkg/logging"
	"github.com/byok-io/byok/pkg/metrics"
	"github.com/byok-io/byok/pkg/settings"
	"github.com/byok-io/byok/pkg/tenant"
	"github.com/byok-io/byok/services/encryptor/worker"
)

type config struct {
	worker        worker.Config
	dek           dek.Config
	tenantsFile   string
	tenantsJSON   string
	auditTopic    string
	kms           registry.Options
	createTopics  bool
	partitions    int
	statsInterval time.Duration
	logLevel      string
	metricsListen string
	control       control.Topics
	// settingsKeyFile opens credentials saved through the settings service ("": none can be opened).
	settingsKeyFile string
}

func parseConfig(args []string) (config, error) {
	var c config
	fs := flagenv.New("encryptor")
	brokers := fs.Strings("brokers", "BYOK_KAFKA_BROKERS", "127.0.0.1:19092", "Kafka bootstrap brokers, comma-separated")
	input := fs.String("plaintext-topic", "BYOK_PLAINTEXT_TOPIC", kafkax.TopicPlaintext, "plaintext topic to consume")
	storage := fs.String("storage-topic", "BYOK_STORAGE_TOPIC", kafkax.TopicStored, "topic envelopes are written to")
	dlq := fs.String("deadletter-topic", "BYOK_DEADLETTER_TOPIC", kafkax.TopicDeadLetter, "topic for input that cannot be processed")
	auditTopic := fs.String("audit-topic", "BYOK_AUDIT_TOPIC", audit.TopicAudit, "topic every KMS access is recorded to")
	group := fs.String("group", "BYOK_ENCRYPTOR_GROUP", "byok-encryptor", "consumer group id")
	host, _ := os.Hostname()
	workerID := fs.String("worker-id", "BYOK_WORKER_ID", fmt.Sprintf("%s-%d", host, os.Getpid()), "this process's name in logs and audit")
	batch := fs.Int("batch-size", "BYOK_BATCH_SIZE", 1000, "most records processed together")
	batchWait := fs.Duration("batch-wait", "BYOK_BATCH_WAIT", 10*time.Millisecond, "how long a batch waits to fill")
	unenc := fs.String("unencrypted-tenants", "BYOK_UNENCRYPTED_TENANTS", worker.Reject, "tenants without byok: reject (dead-letter) or passthrough")
	maxHeld := fs.Int("max-held", "BYOK_MAX_HELD", 100_000, "records held for failing KMSs before fetching pauses")
	session := fs.Duration("session-timeout", "BYOK_SESSION_TIMEOUT", 10*time.Second, "consumer group session timeout")
	shutdown := fs.Duration("shutdown-timeout", "BYOK_SHUTDOWN_TIMEOUT", 15*time.Second, "bound on finishing in-flight work at stop")
	maxAge := fs.Duration("dek-max-age", "BYOK_DEK_MAX_AGE", time.Hour, "how long one DEK seals new messages")
	maxUses := fs.Int("dek-max-uses", "BYOK_DEK_MAX_USES", 1<<24, "how many messages one DEK seals")
	maxEntries := fs.Int("dek-cache-size", "BYOK_DEK_CACHE_SIZE", 100_000, "most DEKs kept in memory")
	window := fs.Duration("kms-batch-window", "BYOK_KMS_BATCH_WINDOW", 5*time.Millisecond, "how long a new scope waits to share a KMS call")
	maxBatch := fs.Int("kms-max-batch", "BYOK_KMS_MAX_BATCH", 500, "most DEKs wrapped in one KMS call")
	tenantsFile := fs.String("tenants-file", "BYOK_TENANTS_FILE", "", "JSON file of tenant KMS settings, re-read when it changes (optional: settings saved in the settings service win)")
	settingsKeyFile := fs.String("settings-key-file", "BYOK_SETTINGS_KEY_FILE", "", "the operator's settings key (base64), to open credentials saved through the settings service")
	tenantsJSON := fs.String("tenants", "BYOK_TENANTS", "", "tenant KMS settings as inline JSON (instead of -tenants-file)")
	settingsTopic := fs.String("settings-topic", "BYOK_SETTINGS_TOPIC", control.TopicSettings, "compacted topic of tenant settings saved by the settings service")
	revocationsTopic := fs.String("revocations-topic", "BYOK_REVOCATIONS_TOPIC", control.TopicRevocations, "compacted topic of granular revocations (cached DEKs of revoked scopes are dropped)")
	createTopics := fs.Bool("create-topics", "BYOK_CREATE_TOPICS", true, "create missing topics at start")
	insecureLoopback := fs.Bool("kms-insecure-loopback", "BYOK_KMS_INSECURE_LOOPBACK", false, "dev/test only: plaintext gRPC to a KMS endpoint on a loopback address (emulators)")
	partitions := fs.Int("partitions", "BYOK_PARTITIONS", 6, "partitions of topics created at start")
	stats := fs.Duration("stats-interval", "BYOK_STATS_INTERVAL", 10*time.Second, "how often to log counters")
	level := fs.String("log-level", "BYOK_LOG_LEVEL", "info", "debug, info, warn or error")
	metricsListen := fs.String("metrics-listen", "BYOK_METRICS_LISTEN", "127.0.0.1:9101", "address of /metrics, /healthz and /readyz (empty: off)")
	if err := fs.Parse(args); err != nil {
		return c, err
	}
	if err := metrics.CheckListen(*metricsListen); err != nil {
		return c, fmt.Errorf("invalid configuration: %w", err)
	}
	c.metricsListen = *metricsListen
	c.worker = worker.Config{
		Brokers: *brokers, InputTopic: *input, StorageTopic: *storage, DeadLetterTopic: *dlq,
		GroupID: *group, WorkerID: *workerID, BatchSize: *batch, BatchWait: *batchWait,
		Unencrypted: *unenc, MaxHeld: *maxHeld, SessionTimeout: *session, ShutdownTimeout: *shutdown,
	}
	if err := c.worker.Validate(); err != nil {
		return c, fmt.Errorf("invalid configuration: %w", err)
	}
	c.dek = dek.Config{MaxAge: *maxAge, MaxUses: int64(*maxUses), MaxEntries: *maxEntries, BatchWindow: *window, MaxBatch: *maxBatch}
	if *tenantsFile != "" && *tenantsJSON != "" {
		return c, fmt.Errorf("invalid configuration: set at most one of -tenants-file (BYOK_TENANTS_FILE) or -tenants (BYOK_TENANTS)")
	}
	if *partitions < 1 {
		return c, fmt.Errorf("invalid configuration: -partitions (BYOK_PARTITIONS) must be at least 1")
	}
	c.tenantsFile, c.tenantsJSON, c.createTopics, c.partitions = *tenantsFile, *tenantsJSON, *createTopics, *partitions
	c.settingsKeyFile = *settingsKeyFile
	c.auditTopic = *auditTopic
	c.control = control.Topics{Settings: strings.TrimSpace(*settingsTopic), Revocations: strings.TrimSpace(*revocationsTopic)}
	if c.control.Settings == "" || c.control.Revocations == "" || c.control.Settings == c.control.Revocations {
		return c, fmt.Errorf("invalid configuration: -settings-topic (BYOK_SETTINGS_TOPIC) and -revocations-topic (BYOK_REVOCATIONS_TOPIC) must be two distinct topic names")
	}
	c.kms = registry.Options{InsecureLoopback: *insecureLoopback}
	c.statsInterval, c.logLevel = *stats, *level
	return c, nil
}

func main() {
	cfg, err := parseConfig(os.Args[1:])
	if err != nil {
		fmt.Fprintln(os.Stderr, "encryptor:", err)
		os.Exit(2)
	}
	log := logging.New("encryptor", cfg.logLevel, nil)
	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
	defer stop()
	if err := run(ctx, cfg, log); err != nil {
		log.Error().Err(err).Msg("encryptor failed")
		os.Exit(1)
	}
}

func run(ctx context.Context, cfg config, log zerolog.Logger) error {
	dir := tenant.NewDirectory(log)
	defer dir.Close()
	dir.SetKMSOptions(cfg.kms)
	if cfg.tenantsFile != "" {
		if err := dir.LoadFile(cfg.tenantsFile); err != nil {
			return err
		}
		go dir.WatchFile(ctx, cfg.tenantsFile, 2*time.Second)
	} else if cfg.tenantsJSON != "" {
		f, err := tenant.ParseFile([]byte(cfg.tenantsJSON))
		if err != nil {
			return err
		}
		dir.Apply(f)
	}
	// Metrics are served from the start, so /readyz can say what start-up waits for; series
	// of the worker join the registry once it exists.
	reg := metrics.NewRegistry("encryptor")
	cfg.worker.ObserveSeal = sealObserver(reg)
	if cfg.metricsListen != "" {
		addr, err := metrics.Serve(ctx, cfg.metricsListen, reg, readiness(cfg.worker.Brokers, dir))
		if err != nil {
			return err
		}
		log.Info().Str("addr", addr.String()).Msg("serving /metrics, /healthz, /readyz")
	}
	// Every KMS call goes through the audit wrapper: recorded on the audit topic (acks=all)
	// before its result is used, or not used at all.
	auditSink := audit.NewKafkaSink(cfg.worker.Brokers, cfg.auditTopic)
	defer auditSink.Close()
	resolver := &audit.Resolver{
		Inner:    dir,
		Log:      audit.NewLog(auditSink, cfg.worker.WorkerID),
		Fallback: audit.Access{ActorService: "encryptor", Purpose: "encrypt"},
		Observe:  metrics.NewKMS(reg).Observe,
	}
	deks := dek.New(resolver, cfg.dek)
	defer deks.Close()
	dir.OnChange(func(ids []string) {
		for _, id := range ids {
			deks.DropTenant(id)
		}
	})
	// Saved tenant settings apply as they change. A granular revocation drops the cached DEKs
	// of the scopes it covers: their next messages are sealed under fresh DEKs, and no DEK of a
	// revoked scope stays in memory.
	var settingsKey *settings.Key
	if cfg.settingsKeyFile != "" {
		var err error
		if settingsKey, err = settings.LoadKey(cfg.settingsKeyFile); err != nil {
			return fmt.Errorf("-settings-key-file (BYOK_SETTINGS_KEY_FILE): %w", err)
		}
	}
	view, err := control.Follow(ctx, cfg.worker.Brokers, cfg.control, log, control.FollowOptions{})
	if err != nil {
		return err
	}
	settings.Apply(view, dir, settingsKey, log)
	view.Subscribe(func(c control.Change) {
		if c.Revoked != nil {
			if rule, err := control.Compile(c.Revoked); err == nil {
				n := deks.DropScopes(c.TenantID, rule.Matches)
				log.Info().Str("tenant_id", c.TenantID).Str("revocation_id", c.Revoked.RevocationId).Int("deks_dropped", n).Msg("revocation applied")
			}
		}
	})

	if cfg.createTopics {
		tctx, cancel := context.WithTimeout(ctx, 60*time.Second)
		err := kafkax.EnsureTopics(tctx, cfg.worker.Brokers,
			kafkax.TopicSpec{Name: cfg.worker.InputTopic, Partitions: cfg.partitions},
			kafkax.TopicSpec{Name: cfg.worker.StorageTopic, Partitions: cfg.partitions},
			kafkax.TopicSpec{Name: cfg.worker.DeadLetterTopic, Partitions: 1},
			kafkax.TopicSpec{Name: cfg.auditTopic, Partitions: cfg.partitions})
		cancel()
		if err != nil {
			return err
		}
	}

	w, err := worker.New(cfg.worker, dir, deks, log)
	if err != nil {
		return err
	}
	registerMetrics(reg, w, deks, cfg.worker.InputTopic)
	go func() {
		t := time.NewTicker(cfg.statsInterval)
		defer t.Stop()
		for {
			select {
			case <-ctx.Done():
				return
			case <-t.C:
				log.Info().Interface("worker", w.Stats()).Interface("dek", deks.Stats()).Msg("stats")
			}
		}
	}()
	return w.Run(ctx)
}
