// Command forwarder sends each tenant's audit trail to the tenant's own monitoring: it consumes
// AuditEvents from the audit topic in its own consumer group (independent of the auditor) and
// delivers them to the tenant's webhook as signed JSON batches, committing offsets only after the
// receiver acknowledged them (at least once; receivers deduplicate by event_id). Retry, hold and
// commit semantics: see package forward.
package main

import (
	"context"
	"errors"
	"fmt"
	"os"
	"os/signal"
	"syscall"
	"time"

	"github.com/rs/zerolog"

	"github.com/byok-io/byok/pkg/audit"
	"github.com/byok-io/byok/pkg/flagenv"
	"github.com/byok-io/byok/pkg/logging"
	"github.com/byok-io/byok/pkg/metrics"
	"github.com/byok-io/byok/services/forwarder/forward"
)

type config struct {
	forward       forward.Config
	targets       map[string]*forward.Target
	statsInterval time.Duration
	logLevel      string
	metricsListen string
}

func parseConfig(args []string) (config, error) {
	var c config
	fs := flagenv.New("forwarder")
	brokers := fs.Strings("brokers", "BYOK_KAFKA_BROKERS", "127.0.0.1:19092", "Kafka bootstrap brokers, comma-separated")
	topic := fs.String("audit-topic", "BYOK_AUDIT_TOPIC", audit.TopicAudit, "audit topic to consume")
	group := fs.String("group", "BYOK_FORWARDER_GROUP", "byok-forwarder", "consumer group id (not the auditor's)")
	targetsFile := fs.String("targets-file", "BYOK_FORWARD_TARGETS_FILE", "", `JSON file: {"tenants": {"<tenant id>": {"webhook": {"url", "secret_env" or "secret", "headers"}}}} (required)`)
	batchSize := fs.Int("batch-size", "BYOK_FORWARDER_BATCH_SIZE", 500, "events per webhook request, at most")
	batchWait := fs.Duration("batch-wait", "BYOK_FORWARDER_BATCH_WAIT", time.Second, "send a tenant's batch this long after its first event")
	timeout := fs.Duration("timeout", "BYOK_FORWARDER_TIMEOUT", 10*time.Second, "bound on one webhook request")
	retryMax := fs.Duration("retry-max", "BYOK_FORWARDER_RETRY_MAX", 30*time.Second, "longest backoff between retries of a failing receiver")
	rejectedRetry := fs.Duration("rejected-retry", "BYOK_FORWARDER_REJECTED_RETRY", time.Minute, "pause before re-sending a batch the receiver rejected (4xx)")
	maxHeld := fs.Int("max-held", "BYOK_FORWARDER_MAX_HELD", 100_000, "events waiting for delivery before fetching pauses")
	session := fs.Duration("session-timeout", "BYOK_SESSION_TIMEOUT", 10*time.Second, "consumer group session timeout")
	shutdown := fs.Duration("shutdown-timeout", "BYOK_SHUTDOWN_TIMEOUT", 15*time.Second, "bound on finishing deliveries and committing at stop")
	stats := fs.Duration("stats-interval", "BYOK_STATS_INTERVAL", 10*time.Second, "how often to log counters")
	level := fs.String("log-level", "BYOK_LOG_LEVEL", "info", "debug, info, warn or error")
	metricsListen := fs.String("metrics-listen", "BYOK_METRICS_LISTEN", "127.0.0.1:9103", "address of /metrics, /healthz and /readyz (empty: off)")
	if err := fs.Parse(args); err != nil {
		return c, err
	}
	if err := metrics.CheckListen(*metricsListen); err != nil {
		return c, fmt.Errorf("invalid configuration: %w", err)
	}
	c.metricsListen = *metricsListen
	switch {
	case len(*brokers) == 0:
		return c, errors.New("invalid configuration: -brokers (BYOK_KAFKA_BROKERS) is required")
	case *topic == "":
		return c, errors.New("invalid configuration: -audit-topic (BYOK_AUDIT_TOPIC) is required")
	case *group == "":
		return c, errors.New("invalid configuration: -group (BYOK_FORWARDER_GROUP) is required")
	case *targetsFile == "":
		return c, errors.New("invalid configuration: -targets-file (BYOK_FORWARD_TARGETS_FILE) is required")
	case *batchSize < 1:
		return c, errors.New("invalid configuration: -batch-size (BYOK_FORWARDER_BATCH_SIZE) must be at least 1")
	case *batchWait <= 0:
		return c, errors.New("invalid configuration: -batch-wait (BYOK_FORWARDER_BATCH_WAIT) must be positive")
	case *timeout <= 0:
		return c, errors.New("invalid configuration: -timeout (BYOK_FORWARDER_TIMEOUT) must be positive")
	case *retryMax <= 0:
		return c, errors.New("invalid configuration: -retry-max (BYOK_FORWARDER_RETRY_MAX) must be positive")
	case *rejectedRetry <= 0:
		return c, errors.New("invalid configuration: -rejected-retry (BYOK_FORWARDER_REJECTED_RETRY) must be positive")
	case *maxHeld < *batchSize:
		return c, errors.New("invalid configuration: -max-held (BYOK_FORWARDER_MAX_HELD) must be at least -batch-size")
	case *session < 6*time.Second:
		return c, errors.New("invalid configuration: -session-timeout (BYOK_SESSION_TIMEOUT) must be at least 6s (brokers' group.min.session.timeout.ms)")
	case *shutdown <= 0:
		return c, errors.New("invalid configuration: -shutdown-timeout (BYOK_SHUTDOWN_TIMEOUT) must be positive")
	case *stats <= 0:
		return c, errors.New("invalid configuration: -stats-interval (BYOK_STATS_INTERVAL) must be positive")
	}
	if _, err := zerolog.ParseLevel(*level); err != nil || *level == "" {
		return c, fmt.Errorf("invalid configuration: -log-level (BYOK_LOG_LEVEL) %q must be debug, info, warn or error", *level)
	}
	targets, err := forward.LoadTargets(*targetsFile)
	if err != nil {
		return c, fmt.Errorf("invalid configuration: -targets-file (BYOK_FORWARD_TARGETS_FILE): %w", err)
	}
	c.forward = forward.Config{
		Brokers: *brokers, Topic: *topic, GroupID: *group,
		BatchSize: *batchSize, BatchWait: *batchWait, Timeout: *timeout,
		RetryMax: *retryMax, RejectedRetry: *rejectedRetry, MaxHeld: *maxHeld,
		SessionTimeout: *session, ShutdownTimeout: *shutdown,
	}
	if err := c.forward.Validate(); err != nil {
		return c, fmt.Errorf("invalid configuration: %w", err)
	}
	c.targets, c.statsInterval, c.logLevel = targets, *stats, *level
	return c, nil
}

func main() {
	cfg, err := parseConfig(os.Args[1:])
	if err != nil {
		fmt.Fprintln(os.Stderr, "forwarder:", err)
		os.Exit(2)
	}
	log := logging.New("forwarder", cfg.logLevel, nil)
	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
	defer stop()
	if err := run(ctx, cfg, log); err != nil && !errors.Is(err, context.Canceled) {
		log.Error().Err(err).Msg("forwarder failed")
		os.Exit(1)
	}
}

func run(ctx context.Context, cfg config, log zerolog.Logger) error {
	f, err := forward.New(cfg.forward, cfg.targets, log)
	if err != nil {
		return err
	}
	for _, t := range cfg.targets {
		log.Info().Str("tenant_id", t.TenantID).Str("target", t.Redacted()).Msg("forwarding target")
	}
	reg := metrics.NewRegistry("forwarder")
	registerMetrics(reg, f)
	if cfg.metricsListen != "" {
		health := metrics.Health{Ready: []metrics.Check{metrics.KafkaReachable(cfg.forward.Brokers)}}
		addr, err := metrics.Serve(ctx, cfg.metricsListen, reg, health)
		if err != nil {
			return err
		}
		log.Info().Str("addr", addr.String()).Msg("serving /metrics, /healthz, /readyz")
	}
	go every(ctx, cfg.statsInterval, func() { log.Info().Interface("stats", f.Stats()).Msg("stats") })
	return f.Run(ctx)
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
