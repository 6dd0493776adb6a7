// Command settings is byok's settings service: the customer's "Encryption settings" page and its
// API, where a tenant's admins switch byok on or off, set the provider, KMS Key ID and
// credential, and revoke or un-revoke chats and day ranges. Saving validates with a real round
// trip through the tenant's KMS; credentials are sealed with the operator's settings key; every
// change is audited on the audit topic and then published to the compacted control topics that
// every worker follows (pkg/control). The API, the page and their logic live in
// services/settings/api; this file reads configuration, opens the settings key, admins file,
// audit sink and control store, and serves until SIGINT or SIGTERM.
//
// Run one instance: writes of a tenant are serialised within the process (revisions count up
// without gaps), not across processes.
package main

import (
	"context"
	"errors"
	"flag"
	"fmt"
	"net"
	"os"
	"os/signal"
	"slices"
	"strings"
	"syscall"
	"time"

	"github.com/rs/zerolog"

	"github.com/byok-io/byok/pkg/audit"
	"github.com/byok-io/byok/pkg/control"
	"github.com/byok-io/byok/pkg/deccache"
	"github.com/byok-io/byok/pkg/flagenv"
	"github.com/byok-io/byok/pkg/kms/registry"
	"github.com/byok-io/byok/pkg/logging"
	"github.com/byok-io/byok/pkg/metrics"
	"github.com/byok-io/byok/pkg/settings"
	"github.com/byok-io/byok/services/settings/api"
)

type config struct {
	listen, metricsListen, logLevel string
	brokers                         []string
	auditTopic, workerID            string
	control                         control.Topics
	keyFile, adminsFile             string
	providers                       []string
	kms                             registry.Options
	maxDEKCacheTTL                  time.Duration
}

func parseConfig(args []string) (config, error) {
	fs := flagenv.New("settings")
	listen := fs.String("listen", "BYOK_SETTINGS_LISTEN", "127.0.0.1:8091", "HTTP listen address of the page and API")
	brokers := fs.Strings("brokers", "BYOK_KAFKA_BROKERS", "127.0.0.1:19092", "comma-separated Kafka bootstrap brokers")
	auditTopic := fs.String("audit-topic", "BYOK_AUDIT_TOPIC", audit.TopicAudit, "topic settings changes, revocations and validation KMS calls are recorded to")
	settingsTopic := fs.String("settings-topic", "BYOK_SETTINGS_TOPIC", control.TopicSettings, "compacted topic of tenant settings")
	revocationsTopic := fs.String("revocations-topic", "BYOK_REVOCATIONS_TOPIC", control.TopicRevocations, "compacted topic of granular revocations")
	keyFile := fs.String("settings-key-file", "BYOK_SETTINGS_KEY_FILE", "", "the operator's settings key (32 bytes, base64) that seals stored credentials; the workers need the same file")
	adminsFile := fs.String("admins-file", "BYOK_SETTINGS_ADMINS_FILE", "", `admins file: {"callers": {"<name>": {"token_sha256": "<hex>", "tenants": [...]}}}`)
	providers := fs.Strings("providers", "BYOK_SETTINGS_PROVIDERS", strings.Join(api.DefaultProviders, ","), "providers tenants may choose (local: development only)")
	metricsListen := fs.String("metrics-listen", "BYOK_METRICS_LISTEN", "127.0.0.1:9105", `where /metrics, /healthz and /readyz are served (host:port, or "" or "off")`)
	logLevel := fs.String("log-level", "BYOK_LOG_LEVEL", "info", "debug, info, warn or error")
	workerID := fs.String("worker-id", "BYOK_WORKER_ID", "", "this process's name in audit events (default settings-<hostname>)")
	maxTTL := fs.Duration("max-dek-cache-ttl", "BYOK_SETTINGS_MAX_DEK_CACHE_TTL", deccache.DefaultTTL, "the largest DEK cache TTL a customer may save: set it to the readers' -dek-ttl")
	insecure := fs.Bool("kms-insecure-loopback", "BYOK_KMS_INSECURE_LOOPBACK", false, "let gRPC KMS providers use plaintext to loopback endpoints (emulators; never in production)")
	if err := fs.Parse(args); err != nil {
		return config{}, err
	}
	if fs.NArg() > 0 {
		return config{}, fmt.Errorf("unexpected argument %q", fs.Arg(0))
	}
	c := config{listen: *listen, brokers: *brokers, auditTopic: strings.TrimSpace(*auditTopic),
		control: control.Topics{Settings: strings.TrimSpace(*settingsTopic), Revocations: strings.TrimSpace(*revocationsTopic)},
		keyFile: *keyFile, adminsFile: *adminsFile, providers: *providers, metricsListen: *metricsListen, maxDEKCacheTTL: *maxTTL,
		logLevel: strings.ToLower(*logLevel), workerID: *workerID, kms: registry.Options{InsecureLoopback: *insecure}}
	if _, _, err := net.SplitHostPort(c.listen); err != nil {
		return config{}, fmt.Errorf("-listen (BYOK_SETTINGS_LISTEN) %q is not host:port", c.listen)
	}
	if len(c.brokers) == 0 {
		return config{}, errors.New("-brokers (BYOK_KAFKA_BROKERS) is empty")
	}
	if c.auditTopic == "" {
		return config{}, errors.New("-audit-topic (BYOK_AUDIT_TOPIC) is empty")
	}
	if c.control.Settings == "" || c.control.Revocations == "" || c.control.Settings == c.control.Revocations {
		return config{}, fmt.Errorf("-settings-topic (BYOK_SETTINGS_TOPIC) %q and -revocations-topic (BYOK_REVOCATIONS_TOPIC) %q must be set and differ",
			c.control.Settings, c.control.Revocations)
	}
	if c.keyFile == "" {
		return config{}, errors.New("-settings-key-file (BYOK_SETTINGS_KEY_FILE) is required (create one: head -c 32 /dev/urandom | base64 > settings.key; chmod 600 settings.key)")
	}
	if c.adminsFile == "" {
		return config{}, errors.New("-admins-file (BYOK_SETTINGS_ADMINS_FILE) is required")
	}
	known := registry.Providers()
	if c.maxDEKCacheTTL <= 0 {
		return config{}, fmt.Errorf("-max-dek-cache-ttl (BYOK_SETTINGS_MAX_DEK_CACHE_TTL) %s must be positive", c.maxDEKCacheTTL)
	}
	if len(c.providers) == 0 {
		return config{}, errors.New("-providers (BYOK_SETTINGS_PROVIDERS) is empty")
	}
	for _, p := range c.providers {
		if !slices.Contains(known, p) {
			return config{}, fmt.Errorf("-providers (BYOK_SETTINGS_PROVIDERS): %q is not one of %s", p, strings.Join(known, ", "))
		}
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
		c.workerID = "settings-" + host
	}
	return c, nil
}

func main() {
	cfg, err := parseConfig(os.Args[1:])
	if err != nil {
		if !errors.Is(err, flag.ErrHelp) {
			fmt.Fprintf(os.Stderr, "settings: invalid configuration: %v\n", err)
		}
		os.Exit(2)
	}
	log := logging.New("settings", cfg.logLevel, nil)
	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
	defer stop()
	if err := run(ctx, cfg, log); err != nil {
		log.Error().Err(err).Msg("exiting")
		os.Exit(1)
	}
}

func run(ctx context.Context, cfg config, log zerolog.Logger) error {
	key, err := settings.LoadKey(cfg.keyFile)
	if err != nil {
		return fmt.Errorf("-settings-key-file (BYOK_SETTINGS_KEY_FILE): %w", err)
	}
	admins, err := api.LoadAdmins(cfg.adminsFile)
	if err != nil {
		return fmt.Errorf("-admins-file (BYOK_SETTINGS_ADMINS_FILE): %w", err)
	}
	sink := audit.NewKafkaSink(cfg.brokers, cfg.auditTopic)
	defer sink.Close()
	log.Info().Strs("brokers", cfg.brokers).Str("settings_topic", cfg.control.Settings).Str("revocations_topic", cfg.control.Revocations).
		Msg("catching up with the control topics")
	store, err := control.OpenStore(ctx, cfg.brokers, cfg.control, log)
	if err != nil {
		return fmt.Errorf("control topics: %w", err)
	}
	defer store.Close()

	reg := metrics.NewRegistry("settings")
	counts := newChangeCounts()
	h, err := api.NewHandler(api.Config{
		Store: store, Admins: admins, Key: key, Audit: audit.NewLog(sink, cfg.workerID), KMS: cfg.kms,
		Providers: cfg.providers, MaxDEKCacheTTL: cfg.maxDEKCacheTTL, WorkerID: cfg.workerID, Log: log, OnChange: counts.add,
	})
	if err != nil {
		return err
	}
	counts.register(reg)
	if cfg.metricsListen != "" {
		addr, err := metrics.Serve(ctx, cfg.metricsListen, reg, metrics.Health{Ready: []metrics.Check{metrics.KafkaReachable(cfg.brokers)}})
		if err != nil {
			return err
		}
		log.Info().Str("addr", addr.String()).Msg("serving /metrics, /healthz, /readyz")
	}
	ln, err := net.Listen("tcp", cfg.listen)
	if err != nil {
		return fmt.Errorf("listen on %s (-listen, BYOK_SETTINGS_LISTEN): %w", cfg.listen, err)
	}
	log.Info().Str("settings_key_id", key.ID()).Strs("providers", cfg.providers).Str("audit_topic", cfg.auditTopic).Msg("starting")
	return api.Serve(ctx, ln, h, log)
}
