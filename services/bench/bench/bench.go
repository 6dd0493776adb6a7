// Package bench runs byok's benchmarks: the encryptor against an identity pass-through of the
// same consume→produce path, and the DEK manager's memory as distinct scopes grow. Rounds
// alternate the order of the two modes so that drift on a shared, noisy machine hits both; the
// report quotes medians and ratios.
package bench

import (
	"context"
	"crypto/rand"
	"encoding/json"
	"fmt"
	"io"
	"os"
	"path/filepath"
	"runtime"
	"sort"
	"strings"
	"sync/atomic"
	"time"

	"github.com/rs/zerolog"
	"github.com/segmentio/kafka-go"
	"github.com/twmb/franz-go/pkg/kfake"
	"google.golang.org/protobuf/types/known/timestamppb"

	"github.com/byok-io/byok/pkg/dek"
	"github.com/byok-io/byok/pkg/flagenv"
	byokv1 "github.com/byok-io/byok/pkg/gen/byokv1"
	"github.com/byok-io/byok/pkg/kafkax"
	"github.com/byok-io/byok/pkg/kms"
	"github.com/byok-io/byok/pkg/kms/local"
	"github.com/byok-io/byok/pkg/logging"
	"github.com/byok-io/byok/pkg/message"
	"github.com/byok-io/byok/pkg/scope"
	"github.com/byok-io/byok/pkg/tenant"
	"github.com/byok-io/byok/services/encryptor/worker"
)

// Config is the benchmark's settings.
type Config struct {
	Brokers    []string // empty: an embedded in-process broker
	Messages   int
	Tenants    int
	Chats      int // distinct chats over all tenants = distinct scopes (one day)
	BodySize   int
	Rounds     int
	Partitions int
	BatchSize  int
	KMS        string // local | vault
	VaultAddr  string
	VaultToken string
	// AuditClickHouse, if set, makes the encrypt mode audit every KMS call to a Kafka topic and
	// runs an auditor into this ClickHouse (host:port), to measure audit lag under load.
	AuditClickHouse string
	// ScopeSteps, if set, runs the memory table: DEK manager heap after each step of distinct
	// scopes, e.g. 100000 steps up to ScopeMax.
	ScopeMax, ScopeStep int
}

// ParseFlags reads the settings from flags and env.
func ParseFlags(args []string) (Config, error) {
	var c Config
	fs := flagenv.New("bench")
	brokers := fs.Strings("brokers", "BYOK_KAFKA_BROKERS", "", "Kafka brokers (empty: embedded in-process broker)")
	fs.IntVar(&c.Messages, "messages", 200_000, "messages per round and mode")
	fs.IntVar(&c.Tenants, "tenants", 3, "tenants")
	fs.IntVar(&c.Chats, "chats", 1000, "distinct chats (= distinct scopes) over all tenants")
	fs.IntVar(&c.BodySize, "body-size", 200, "message body size in bytes")
	fs.IntVar(&c.Rounds, "rounds", 3, "rounds (each runs both modes, alternating which goes first)")
	fs.IntVar(&c.Partitions, "partitions", 6, "input and output partitions")
	fs.IntVar(&c.BatchSize, "batch-size", 1000, "encryptor batch size (records processed together)")
	kmsName := fs.String("kms", "BYOK_BENCH_KMS", "local", "KMS provider for the encrypt mode: local or vault")
	vaultAddr := fs.String("vault-addr", "BYOK_TEST_VAULT_ADDR", "", "Vault address (with -kms vault)")
	vaultToken := fs.String("vault-token", "BYOK_TEST_VAULT_TOKEN", "root", "Vault token allowed to create transit keys")
	fs.StringVar(&c.AuditClickHouse, "audit-clickhouse", "", "ClickHouse host:port: audit the encrypt mode and measure audit lag (empty: no audit)")
	fs.IntVar(&c.ScopeMax, "scopes-max", 0, "memory table: grow distinct scopes to this many (0: skip), e.g. 1000000")
	fs.IntVar(&c.ScopeStep, "scopes-step", 100_000, "memory table: step")
	if err := fs.Parse(args); err != nil {
		return c, err
	}
	c.Brokers, c.KMS, c.VaultAddr, c.VaultToken = *brokers, *kmsName, *vaultAddr, *vaultToken
	if c.KMS != "local" && c.KMS != "vault" {
		return c, fmt.Errorf("-kms: %q is not local or vault", c.KMS)
	}
	if c.KMS == "vault" && c.VaultAddr == "" {
		return c, fmt.Errorf("-kms vault needs -vault-addr (BYOK_TEST_VAULT_ADDR)")
	}
	if c.Messages < 1 || c.Tenants < 1 || c.Chats < c.Tenants || c.Rounds < 1 {
		return c, fmt.Errorf("-messages, -rounds must be ≥1 and -chats ≥ -tenants")
	}
	return c, nil
}

// result is one run of one mode.
type result struct {
	mode      string
	msgsPerS  float64
	kmsCalls  int64
	scopes    int
	peakHeapB uint64
}

// Run runs the benchmark and writes the tables to out, progress to progress.
func Run(ctx context.Context, cfg Config, out, progress io.Writer) error {
	brokers := cfg.Brokers
	if len(brokers) == 0 {
		c, err := kfake.NewCluster(kfake.NumBrokers(1), kfake.DefaultNumPartitions(cfg.Partitions), kfake.AllowAutoTopicCreation())
		if err != nil {
			return err
		}
		defer c.Close()
		brokers = c.ListenAddrs()
		fmt.Fprintln(progress, "broker: embedded in-process (kfake); pass -brokers for a real Kafka")
	}
	run := fmt.Sprintf("bench-%d", time.Now().UnixNano())
	input := run + ".in"
	if err := kafkax.EnsureTopics(ctx, brokers, kafkax.TopicSpec{Name: input, Partitions: cfg.Partitions}); err != nil {
		return err
	}
	fmt.Fprintf(progress, "producing %d messages (%d B bodies, %d tenants, %d chats) to %s\n", cfg.Messages, cfg.BodySize, cfg.Tenants, cfg.Chats, input)
	if err := produce(ctx, brokers, input, cfg); err != nil {
		return err
	}
	dir, cleanup, err := tenants(ctx, cfg, run)
	if err != nil {
		return err
	}
	defer cleanup()

	// Create every output topic before any writer starts: kafka-go's shared transport caches
	// topic metadata for a few seconds and would not see topics created later.
	var outputs []kafkax.TopicSpec
	for r := 0; r < cfg.Rounds; r++ {
		for _, mode := range []string{worker.ModeIdentity, worker.ModeEncrypt} {
			outputs = append(outputs, kafkax.TopicSpec{Name: fmt.Sprintf("%s.%s.%d", run, mode, r), Partitions: cfg.Partitions})
			if mode == worker.ModeEncrypt && cfg.AuditClickHouse != "" {
				outputs = append(outputs, kafkax.TopicSpec{Name: fmt.Sprintf("%s.%s.%d.audit", run, mode, r), Partitions: cfg.Partitions})
			}
		}
	}
	if err := kafkax.EnsureTopics(ctx, brokers, outputs...); err != nil {
		return err
	}
	var results []result
	for r := 0; r < cfg.Rounds; r++ {
		modes := []string{worker.ModeIdentity, worker.ModeEncrypt}
		if r%2 == 1 {
			modes = []string{worker.ModeEncrypt, worker.ModeIdentity}
		}
		for _, mode := range modes {
			res, err := runMode(ctx, cfg, brokers, input, fmt.Sprintf("%s.%s.%d", run, mode, r), mode, dir, progress)
			if err != nil {
				return err
			}
			fmt.Fprintf(progress, "round %d %-8s %9.0f msgs/s  KMS calls %d  peak heap %.1f MiB\n", r+1, mode, res.msgsPerS, res.kmsCalls, mib(res.peakHeapB))
			results = append(results, res)
		}
	}
	report(out, cfg, brokers, results)
	if cfg.ScopeMax > 0 {
		return scopeMemory(ctx, cfg, dir, out, progress)
	}
	return nil
}

func mib(b uint64) float64 { return float64(b) / (1 << 20) }

func produce(ctx context.Context, brokers []string, topic string, cfg Config) error {
	w := kafkax.NewWriter(brokers, topic, 10_000, 10*time.Millisecond)
	defer w.Close()
	body := make([]byte, cfg.BodySize)
	_, _ = rand.Read(body)
	for i := range body {
		body[i] = 'a' + body[i]%26
	}
	created := timestamppb.New(time.Now())
	batch := make([]kafka.Message, 0, 10_000)
	for i := 0; i < cfg.Messages; i++ {
		chat := i % cfg.Chats
		ev := &byokv1.MessageEvent{
			SchemaVersion: 1, TenantId: fmt.Sprintf("tenant-%d", chat%cfg.Tenants+1),
			ChatId: fmt.Sprintf("chat-%d", chat), MessageId: fmt.Sprintf("m-%d", i), SenderId: "u-1",
			CreatedAt: created, ContentType: "text/plain", Body: body,
		}
		v, err := message.Marshal(ev)
		if err != nil {
			return err
		}
		batch = append(batch, kafka.Message{Key: kafkax.RecordKey(ev.TenantId, ev.ChatId), Value: v})
		if len(batch) == cap(batch) || i == cfg.Messages-1 {
			if err := w.WriteMessages(ctx, batch...); err != nil {
				return err
			}
			batch = batch[:0]
		}
	}
	return nil
}

// tenants sets up a KMS per tenant: local key file, or one transit key per tenant in Vault.
func tenants(ctx context.Context, cfg Config, run string) (*tenant.Directory, func(), error) {
	tmp, err := os.MkdirTemp("", "byok-bench-")
	if err != nil {
		return nil, nil, err
	}
	cleanup := func() { os.RemoveAll(tmp) }
	f := tenant.File{Tenants: map[string]tenant.Config{}}
	var ids []string
	for t := 1; t <= cfg.Tenants; t++ {
		ids = append(ids, fmt.Sprintf("tenant-%d", t))
	}
	switch cfg.KMS {
	case "local":
		keyFile := filepath.Join(tmp, "keys.json")
		if err := local.WriteKeyFile(keyFile, ids...); err != nil {
			return nil, cleanup, err
		}
		cred, _ := json.Marshal(map[string]string{"key_file": keyFile})
		for _, id := range ids {
			f.Tenants[id] = tenant.Config{Enabled: true, Provider: "local", KEKID: id, Credential: cred}
		}
	case "vault":
		cred, _ := json.Marshal(map[string]string{"address": cfg.VaultAddr, "token": cfg.VaultToken})
		for _, id := range ids {
			key := run + "-" + id
			if err := createTransitKey(ctx, cfg.VaultAddr, cfg.VaultToken, key); err != nil {
				return nil, cleanup, err
			}
			f.Tenants[id] = tenant.Config{Enabled: true, Provider: "vault", KEKID: strings.ReplaceAll(key, ".", "-"), Credential: cred}
		}
	}
	dir := tenant.NewDirectory(zerolog.Nop())
	dir.Apply(f)
	return dir, cleanup, nil
}

// countingResolver counts KMS calls made through it.
type countingResolver struct {
	dek.Resolver
	calls atomic.Int64
}

type countingKMS struct {
	kms.KMS
	calls *atomic.Int64
}

func (c countingKMS) Wrap(ctx context.Context, r []kms.WrapRequest) ([]kms.WrapResult, error) {
	c.calls.Add(1)
	return c.KMS.Wrap(ctx, r)
}

func (c *countingResolver) KMSFor(t string) (kms.KMS, error) {
	k, err := c.Resolver.KMSFor(t)
	if err != nil {
		return nil, err
	}
	return countingKMS{KMS: k, calls: &c.calls}, nil
}

func runMode(ctx context.Context, cfg Config, brokers []string, input, output, mode string, dir *tenant.Directory, progress io.Writer) (result, error) {
	res := &countingResolver{Resolver: dir}
	var resolver dek.Resolver = res
	var ap *auditPipeline
	if mode == worker.ModeEncrypt && cfg.AuditClickHouse != "" {
		var err error
		if ap, err = startAudit(ctx, cfg, brokers, output+".audit", progress); err != nil {
			return result{}, err
		}
		resolver = ap.resolver(res, output)
	}
	deks := dek.New(resolver, dek.Config{})
	defer deks.Close()
	w, err := worker.New(worker.Config{
		Brokers: brokers, InputTopic: input, StorageTopic: output, DeadLetterTopic: output,
		GroupID: output, WorkerID: output, Mode: mode, SessionTimeout: 6 * time.Second,
		BatchSize: cfg.BatchSize,
	}, dir, deks, logging.New("bench", "warn", progress))
	if err != nil {
		return result{}, err
	}
	runtime.GC()
	var peak atomic.Uint64
	rctx, cancel := context.WithCancel(ctx)
	defer cancel()
	done := make(chan error, 1)
	go func() { done <- w.Run(rctx) }()
	// Steady state: the clock runs from the moment 5% of the records are written to the moment
	// all are, so the group join, topic metadata warm-up and first DEK wraps (one-time costs,
	// reported separately as KMS calls) do not swamp the comparison.
	var start, lastTrace time.Time
	warm := int64(cfg.Messages) / 20
	var startWritten int64
	trace := os.Getenv("BYOK_BENCH_TRACE") != ""
	var ms runtime.MemStats
	var elapsed time.Duration
	tick := time.NewTicker(20 * time.Millisecond)
	defer tick.Stop()
	for elapsed == 0 {
		select {
		case err := <-done:
			return result{}, fmt.Errorf("%s worker stopped early: %v", mode, err)
		case <-ctx.Done():
			return result{}, ctx.Err()
		case <-tick.C:
			runtime.ReadMemStats(&ms)
			if ms.HeapInuse > peak.Load() {
				peak.Store(ms.HeapInuse)
			}
			st := w.Stats()
			if trace && time.Since(lastTrace) >= 250*time.Millisecond {
				fmt.Fprintf(progress, "  t=%v consumed=%d written=%d commits=%d\n", time.Since(start).Round(time.Millisecond), st.Consumed, st.Written, st.Commits)
				lastTrace = time.Now()
			}
			if start.IsZero() && st.Written >= warm {
				start, startWritten = time.Now(), st.Written
			}
			if st.Written >= int64(cfg.Messages) {
				elapsed = time.Since(start)
			}
		}
	}
	cancel()
	if err := <-done; err != nil {
		return result{}, err
	}
	if ap != nil {
		ap.finish(res.calls.Load(), progress)
	}
	return result{
		mode: mode, msgsPerS: float64(int64(cfg.Messages)-startWritten) / elapsed.Seconds(),
		kmsCalls: res.calls.Load(), scopes: cfg.Chats, peakHeapB: peak.Load(),
	}, nil
}

func median(xs []float64) float64 {
	s := append([]float64(nil), xs...)
	sort.Float64s(s)
	if len(s)%2 == 1 {
		return s[len(s)/2]
	}
	return (s[len(s)/2-1] + s[len(s)/2]) / 2
}

func report(out io.Writer, cfg Config, brokers []string, results []result) {
	var ident, enc, ratios []float64
	var kmsCalls int64
	var peakI, peakE uint64
	for i, r := range results {
		if r.mode == worker.ModeIdentity {
			ident = append(ident, r.msgsPerS)
			peakI = max(peakI, r.peakHeapB)
		} else {
			enc = append(enc, r.msgsPerS)
			kmsCalls = max(kmsCalls, r.kmsCalls)
			peakE = max(peakE, r.peakHeapB)
		}
		// Each round ran both modes back to back: pair them.
		if i%2 == 1 {
			a, b := results[i-1], r
			if a.mode == worker.ModeEncrypt {
				a, b = b, a
			}
			ratios = append(ratios, b.msgsPerS/a.msgsPerS)
		}
	}
	fmt.Fprintf(out, "\nbyok bench: %d messages x %d rounds, %d B bodies, %d tenants, %d chats (= distinct scopes), %d partitions, KMS %s, brokers %v, GOMAXPROCS %d\n\n",
		cfg.Messages, cfg.Rounds, cfg.BodySize, cfg.Tenants, cfg.Chats, cfg.Partitions, cfg.KMS, brokers, runtime.GOMAXPROCS(0))
	fmt.Fprintf(out, "| mode | msgs/s (median) | msgs/s (all rounds) | peak heap |\n|---|---|---|---|\n")
	fmt.Fprintf(out, "| identity pass-through | %.0f | %s | %.1f MiB |\n", median(ident), list(ident), mib(peakI))
	fmt.Fprintf(out, "| encrypt | %.0f | %s | %.1f MiB |\n", median(enc), list(enc), mib(peakE))
	fmt.Fprintf(out, "\n| metric | value |\n|---|---|\n")
	fmt.Fprintf(out, "| encrypt ÷ pass-through (median of per-round ratios) | %.3f (rounds: %s) |\n", median(ratios), listf(ratios, "%.3f"))
	fmt.Fprintf(out, "| KMS wrap calls per run | %d |\n", kmsCalls)
	fmt.Fprintf(out, "| KMS calls per message | %.6f |\n", float64(kmsCalls)/float64(cfg.Messages))
	fmt.Fprintf(out, "| KMS calls per distinct scope | %.4f (1 per %.0f scopes) |\n", float64(kmsCalls)/float64(cfg.Chats), float64(cfg.Chats)/float64(max(kmsCalls, 1)))
}

func list(xs []float64) string { return listf(xs, "%.0f") }

func listf(xs []float64, f string) string {
	s := make([]string, len(xs))
	for i, x := range xs {
		s[i] = fmt.Sprintf(f, x)
	}
	return strings.Join(s, ", ")
}

// scopeMemory grows distinct scopes through one DEK manager (default cache bound) and prints the
// heap after each step: it must stay flat once the cache is full.
func scopeMemory(ctx context.Context, cfg Config, dir *tenant.Directory, out, progress io.Writer) error {
	res := &countingResolver{Resolver: dir}
	m := dek.New(res, dek.Config{})
	defer m.Close()
	fmt.Fprintf(out, "\nDEK manager memory as distinct scopes grow (cache bound %d DEKs, KMS %s)\n\n", 100_000, cfg.KMS)
	fmt.Fprintf(out, "| distinct scopes | heap in use after GC | DEKs cached | KMS calls | scopes per KMS call |\n|---|---|---|---|---|\n")
	const chunk = 2000
	scopes := make([]scope.Scope, 0, chunk)
	for n := 0; n < cfg.ScopeMax; {
		scopes = scopes[:0]
		for i := 0; i < chunk && n < cfg.ScopeMax; i++ {
			scopes = append(scopes, scope.Scope{TenantID: fmt.Sprintf("tenant-%d", n%cfg.Tenants+1), ChatID: fmt.Sprintf("mem-chat-%d", n), Day: 20426})
			n++
		}
		if _, errs := m.Keys(ctx, scopes); errs[0] != nil {
			return errs[0]
		}
		if n%cfg.ScopeStep == 0 || n == cfg.ScopeMax {
			runtime.GC()
			var ms runtime.MemStats
			runtime.ReadMemStats(&ms)
			s := m.Stats()
			fmt.Fprintf(out, "| %d | %.1f MiB | %d | %d | %.0f |\n", n, mib(ms.HeapInuse), s.Cached, res.calls.Load(), float64(n)/float64(max(res.calls.Load(), 1)))
			fmt.Fprintf(progress, "scopes %d\n", n)
		}
	}
	return nil
}
