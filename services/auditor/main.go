// Command auditor stores byok's audit trail: it consumes AuditEvents from the audit topic as a
// consumer group and inserts them into ClickHouse in batches, committing offsets only after the
// insert succeeded (at least once from Kafka, deduplicated by event id in ClickHouse). At start it
// applies the ClickHouse migrations and the retention setting; -migrate-only does just that.
package main

import (
	"context"
	"errors"
	"fmt"
	"os"
	"os/signal"
	"regexp"
	"syscall"
	"time"

	"github.com/rs/zerolog"

	"github.com/byok-io/byok/pkg/audit"
	"github.com/byok-io/byok/pkg/chstore"
	"github.com/byok-io/byok/pkg/flagenv"
	"github.com/byok-io/byok/pkg/kafkax"
	"github.com/byok-io/byok/pkg/logging"
	"github.com/byok-io/byok/pkg/metrics"
	"github.com/byok-io/byok/services/auditor/consumer"
)

type config struct {
	consumer      consumer.Config
	chAddr        string
	chDatabase    string
	chUser        string
	chPassword    string
	retentionDays int
	migrateOnly   bool
	createTopic   bool
	partitions    int
	statsInterval time.Duration
	logLevel      string
	metricsListen string
}

var databaseName = regexp.MustCompile(`^[A-Za-z_][A-Za-z0-9_]*$`)

func parseConfig(args []string) (config, error) {
	var c config
	fs := flagenv.New("auditor")
	brokers := fs.Strings("brokers", "BYOK_KAFKA_BROKERS", "127.0.0.1:19092", "Kafka bootstrap brokers, comma-separated")
	topic := fs.String("audit-topic", "BYOK_AUDIT_TOPIC", audit.TopicAudit, "audit topic to consume")
	group := fs.String("group", "BYOK_AUDITOR_GROUP", "byok-auditor", "consumer group id")
	chAddr := fs.String("clickhouse", "BYOK_CLICKHOUSE_ADDR", "127.0.0.1:19000", "ClickHouse native protocol address host:port")
	chDB := fs.String("clickhouse-database", "BYOK_CLICKHOUSE_DATABASE", "byok", "ClickHouse database (created if missing)")
	chUser := fs.String("clickhouse-user", "BYOK_CLICKHOUSE_USER", "default", "ClickHouse user")
	chPassword := fs.String("clickhouse-password", "BYOK_CLICKHOUSE_PASSWORD", "", "ClickHouse password (prefer the env var)")
	flushCount := fs.Int("flush-count", "BYOK_AUDITOR_FLUSH_COUNT", 10_000, "insert when a batch holds this many records")
	flushBytes := fs.Int("flush-bytes", "BYOK_AUDITOR_FLUSH_BYTES", 8<<20, "insert when a batch holds this many bytes")
	flushInterval := fs.Duration("flush-interval", "BYOK_AUDITOR_FLUSH_INTERVAL", time.Second, "insert this long after a batch's first record")
	retention := fs.Int("retention-days", "BYOK_AUDIT_RETENTION_DAYS", 0, "delete audit data older than this many days (0 keeps everything)")
	migrateOnly := fs.Bool("migrate-only", "BYOK_AUDITOR_MIGRATE_ONLY", false, "apply ClickHouse migrations and retention, then exit")
	session := fs.Duration("session-timeout", "BYOK_SESSION_TIMEOUT", 10*time.Second, "consumer group session timeout")
	shutdown := fs.Duration("shutdown-timeout", "BYOK_SHUTDOWN_TIMEOUT", 15*time.Second, "bound on flushing and committing at stop")
	createTopic := fs.Bool("create-topics", "BYOK_CREATE_TOPICS", true, "create the audit topic at start if missing")
	partitions := fs.Int("partitions", "BYOK_PARTITIONS", 6, "partitions of a created audit topic")
	stats := fs.Duration("stats-interval", "BYOK_STATS_INTERVAL", 10*time.Second, "how often to log counters")
	level := fs.String("log-level", "BYOK_LOG_LEVEL", "info", "debug, info, warn or error")
	metricsListen := fs.String("metrics-listen", "BYOK_METRICS_LISTEN", "127.0.0.1:9102", "address of /metrics, /healthz and /readyz (empty: off)")
	if err := fs.Parse(args); err != nil {
		return c, err
	}
	if err := metrics.CheckListen(*metricsListen); err != nil {
		return c, fmt.Errorf("invalid configuration: %w", err)
	}
	c.metricsListen = *metricsListen
	c.consumer = consumer.Config{
		Brokers: *brokers, Topic: *topic, GroupID: *group,
		FlushCount: *flushCount, FlushBytes: *flushBytes, FlushInterval: *flushInterval,
		SessionTimeout: *session, ShutdownTimeout: *shutdown,
	}
	switch {
	case *flushCount < 1:
		return c, fmt.Errorf("invalid configuration: -flush-count (BYOK_AUDITOR_FLUSH_COUNT) must be at least 1")
	case *flushBytes < 1:
		return c, fmt.Errorf("invalid configuration: -flush-bytes (BYOK_AUDITOR_FLUSH_BYTES) must be at least 1")
	case *flushInterval <= 0:
		return c, fmt.Errorf("invalid configuration: -flush-interval (BYOK_AUDITOR_FLUSH_INTERVAL) must be positive")
	case *chAddr == "":
		return c, fmt.Errorf("invalid configuration: -clickhouse (BYOK_CLICKHOUSE_ADDR) is required")
	case !databaseName.MatchString(*chDB):
		return c, fmt.Errorf("invalid configuration: -clickhouse-database (BYOK_CLICKHOUSE_DATABASE) %q must be letters, digits and _", *chDB)
	case *retention < 0:
		return c, fmt.Errorf("invalid configuration: -retention-days (BYOK_AUDIT_RETENTION_DAYS) must not be negative")
	case *session < 6*time.Second:
		return c, fmt.Errorf("invalid configuration: -session-timeout (BYOK_SESSION_TIMEOUT) must be at least 6s (brokers' group.min.session.timeout.ms)")
	case *partitions < 1:
		return c, fmt.Errorf("invalid configuration: -partitions (BYOK_PARTITIONS) must be at least 1")
	}
	if err := c.consumer.Validate(); err != nil {
		return c, fmt.Errorf("invalid configuration: %w", err)
	}
	c.chAddr, c.chDatabase, c.chUser, c.chPassword = *chAddr, *chDB, *chUser, *chPassword
	c.retentionDays, c.migrateOnly, c.createTopic, c.partitions = *retention, *migrateOnly, *createTopic, *partitions
	c.statsInterval, c.logLevel = *stats, *level
	return c, nil
}

func main() {
	cfg, err := parseConfig(os.Args[1:])
	if err != nil {
		fmt.Fprintln(os.Stderr, "auditor:", err)
		os.Exit(2)
	}
	log := logging.New("auditor", cfg.logLevel, nil)
	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
	defer stop()
	if err := run(ctx, cfg, log); err != nil && !errors.Is(err, context.Canceled) {
		log.Error().Err(err).Msg("auditor failed")
		os.Exit(1)
	}
}

func run(ctx context.Context, cfg config, log zerolog.Logger) error {
	store, err := openStore(ctx, cfg, log)
	if err != nil {
		return err
	}
	defer store.Close()
	keep := time.Duration(cfg.retentionDays) * 24 * time.Hour
	if err := retention(ctx, store, keep, log); err != nil {
		return err
	}
	if cfg.migrateOnly {
		return nil
	}
	if cfg.createTopic {
		tctx, cancel := context.WithTimeout(ctx, 60*time.Second)
		err := kafkax.EnsureTopics(tctx, cfg.consumer.Brokers, kafkax.TopicSpec{Name: cfg.consumer.Topic, Partitions: cfg.partitions})
		cancel()
		if err != nil {
			return err
		}
	}
	reg := metrics.NewRegistry("auditor")
	c, err := consumer.New(cfg.consumer, newTimedStore(store, reg), log)
	if err != nil {
		return err
	}
	registerMetrics(reg, c)
	if cfg.metricsListen != "" {
		health := metrics.Health{Ready: []metrics.Check{
			metrics.KafkaReachable(cfg.consumer.Brokers),
			{Name: "clickhouse", Fn: store.Ping},
		}}
		addr, err := metrics.Serve(ctx, cfg.metricsListen, reg, health)
		if err != nil {
			return err
		}
		log.Info().Str("addr", addr.String()).Msg("serving /metrics, /healthz, /readyz")
	}
	go every(ctx, cfg.statsInterval, func() { log.Info().Interface("stats", c.Stats()).Msg("stats") })
	if keep > 0 {
		go every(ctx, 24*time.Hour, func() {
			if err := retention(ctx, store, keep, log); err != nil {
				log.Warn().Err(err).Msg("retention failed; retrying tomorrow")
			}
		})
	}
	return c.Run(ctx)
}

// openStore connects and migrates, retrying with backoff while ClickHouse is unreachable, so an
// auditor started before its database waits for it instead of exiting.
func openStore(ctx context.Context, cfg config, log zerolog.Logger) (*chstore.Store, error) {
	backoff := 200 * time.Millisecond
	for {
		store, err := chstore.Open(ctx, cfg.chAddr, cfg.chDatabase, chstore.WithAuth(cfg.chUser, cfg.chPassword))
		if err == nil {
			var ran []chstore.Migration
			if ran, err = store.Migrate(ctx); err == nil {
				for _, m := range ran {
					log.Info().Uint32("version", m.Version).Str("name", m.Name).Msg("clickhouse migration applied")
				}
				log.Info().Str("server", store.ServerVersion().String()).Str("database", store.Database()).Msg("clickhouse ready")
				return store, nil
			}
			store.Close()
			if !chstore.IsUnavailable(err) {
				return nil, err
			}
		} else if !chstore.IsUnavailable(err) {
			return nil, err
		}
		log.Warn().Err(err).Dur("backoff", backoff).Msg("clickhouse not reachable; retrying")
		select {
		case <-time.After(backoff):
		case <-ctx.Done():
			return nil, ctx.Err()
		}
		backoff = min(backoff*2, 10*time.Second)
	}
}

func retention(ctx context.Context, store *chstore.Store, keep time.Duration, log zerolog.Logger) error {
	if keep <= 0 {
		return nil
	}
	rep, err := store.ApplyRetention(ctx, keep, time.Now())
	if err != nil {
		return err
	}
	log.Info().Dur("keep", keep).Bool("ttl", rep.TTL).Strs("dropped", rep.Dropped).Msg("audit retention applied")
	return nil
}

func every(ctx context.Context, d time.Duration, fn func()) {
	t := time.NewTicker(d)
	defer t.Stop()
	for {
		select {
		case <-ctx.Done():
			return
		case <-t.C:
			fn()
		}
	}
}
