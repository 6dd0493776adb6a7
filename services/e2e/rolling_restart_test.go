package e2e

import (
	"bufio"
	"bytes"
	"context"
	"encoding/json"
	"fmt"
	"net/http"
	"os"
	"path/filepath"
	"sort"
	"strconv"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/segmentio/kafka-go"
	"google.golang.org/protobuf/proto"

	"github.com/byok-io/byok/pkg/envelope"
	byokv1 "github.com/byok-io/byok/pkg/gen/byokv1"
	"github.com/byok-io/byok/pkg/kafkax"
	"github.com/byok-io/byok/pkg/tenant"
)

// TestRollingRestartLosesNothing restarts every encryptor of a group of three, one at a time
// with SIGTERM, while 20,000 messages over 200 chats and 2 Vault tenants flow through the
// ingest API at a steady rate. Each stopped encryptor must exit 0 within its shutdown bound and
// say "encryptor stopped"; every message must reach the storage topic sealed (no plaintext);
// duplicates are counted and reported; and within each chat the first occurrences of message
// ids must appear in send order.
func TestRollingRestartLosesNothing(t *testing.T) {
	brokers := strings.Split(env(t, "BYOK_TEST_KAFKA_BROKERS"), ",")
	vaultAddr := env(t, "BYOK_TEST_VAULT_ADDR")
	rootToken := os.Getenv("BYOK_TEST_VAULT_TOKEN")
	if rootToken == "" {
		rootToken = "root"
	}
	const (
		messages  = 20_000
		chats     = 200
		tenants   = 2
		batchSize = 100
		// 200 batches, one every 175 ms: the load runs for about 35 s.
		batchEvery = 175 * time.Millisecond
		// The encryptor's default BYOK_SHUTDOWN_TIMEOUT bounds finishing in-flight work; the
		// process then closes its Kafka clients (leaving the group), so allow a little more.
		shutdownBound = 15 * time.Second
		exitSlack     = 3 * time.Second
		bodyCanary    = "CANARY-BODY-rolling"
	)
	testStart := time.Now()
	run := fmt.Sprintf("e2e-roll-%d", time.Now().UnixNano())
	ctx, cancel := context.WithTimeout(context.Background(), 3*time.Minute)
	defer cancel()
	topics := newPipelineTopics(t, ctx, brokers, run)

	// Vault: a derived transit key per tenant and a token allowed only those keys.
	admin := vaultAdmin(t, vaultAddr, rootToken)
	token := "roll-token-" + strings.ReplaceAll(run, "-", "")
	tenantIDs := make([]string, tenants)
	keys := make([]string, tenants)
	for i := range tenantIDs {
		tenantIDs[i] = fmt.Sprintf("tenant-%d", i+1)
		keys[i] = run + "-" + tenantIDs[i]
	}
	derivedKeysAndToken(t, admin, run, token, keys...)
	cred, _ := json.Marshal(map[string]string{"address": vaultAddr, "token": token})
	tf := tenant.File{Tenants: map[string]tenant.Config{}}
	for i, id := range tenantIDs {
		tf.Tenants[id] = tenant.Config{Enabled: true, Provider: "vault", KEKID: keys[i], Credential: cred}
	}
	tenantsFile := filepath.Join(t.TempDir(), "tenants.json")
	b, _ := json.Marshal(tf)
	if err := os.WriteFile(tenantsFile, b, 0o600); err != nil {
		t.Fatal(err)
	}

	// Processes: ingest, and three encryptors in one consumer group (default shutdown timeout).
	common := []string{"BYOK_KAFKA_BROKERS=" + strings.Join(brokers, ","), "BYOK_PLAINTEXT_TOPIC=" + topics.in}
	listen := freePort(t)
	ingest := start(t, "ingest", binary(t, "ingest"), append(common, "BYOK_INGEST_LISTEN="+listen)...)
	waitHTTP(t, "http://"+listen+"/healthz", 30*time.Second)
	encEnv := append(common, "BYOK_STORAGE_TOPIC="+topics.stored, "BYOK_DEADLETTER_TOPIC="+topics.dead, "BYOK_AUDIT_TOPIC="+topics.audit,
		"BYOK_ENCRYPTOR_GROUP="+run, "BYOK_TENANTS_FILE="+tenantsFile, "BYOK_SESSION_TIMEOUT=6s",
		"BYOK_STATS_INTERVAL=500ms", "BYOK_CREATE_TOPICS=false", "BYOK_KMS_INSECURE_LOOPBACK=true",
		// Several encryptors share this host: each serves /metrics on a port of its own.
		"BYOK_METRICS_LISTEN=127.0.0.1:0")
	encBin := binary(t, "encryptor")
	startEnc := func(id string) *proc {
		return start(t, id, encBin, append(encEnv, "BYOK_WORKER_ID="+id)...)
	}
	live := []*proc{startEnc("enc-1"), startEnc("enc-2"), startEnc("enc-3")}
	all := append([]*proc(nil), live...)

	// The sender: 20,000 messages at a steady rate; message ids encode the send index.
	sentChat := make(map[string]string, messages) // message id → tenant/chat key
	for i := 0; i < messages; i++ {
		chat := i % chats
		sentChat[rollID(run, i)] = tenantIDs[chat%tenants] + "/" + fmt.Sprintf("chat-%d", chat)
	}
	sendDone := make(chan error, 1)
	sendStart := time.Now()
	go func() {
		tick := time.NewTicker(batchEvery)
		defer tick.Stop()
		for batch := 0; batch < messages/batchSize; batch++ {
			var req struct {
				Messages []map[string]string `json:"messages"`
			}
			for i := batch * batchSize; i < (batch+1)*batchSize; i++ {
				chat := i % chats
				req.Messages = append(req.Messages, map[string]string{
					"tenant_id": tenantIDs[chat%tenants], "chat_id": fmt.Sprintf("chat-%d", chat), "message_id": rollID(run, i),
					"sender_id": "user-1", "body": fmt.Sprintf("%s %d: привет, message %d of chat %d", bodyCanary, i, i, chat),
				})
			}
			if err := postBatchErr(ctx, listen, req); err != nil {
				sendDone <- fmt.Errorf("batch %d: %w", batch, err)
				return
			}
			<-tick.C
		}
		sendDone <- nil
	}()
	sent := func() int { // messages posted so far (approximate, for the log)
		return int(time.Since(sendStart) / batchEvery * batchSize)
	}

	// Let all three work, then restart them one at a time, spread over the load (~6 s, ~15 s, ~24 s).
	for _, p := range live {
		p := p
		waitFor(t, 45*time.Second, p.name+" to write records", func() bool { return written(p.out.Bytes()) > 0 })
	}
	t.Logf("all 3 encryptors writing %v after the load began", time.Since(sendStart).Round(time.Millisecond))
	for i := range live {
		old := live[i]
		time.Sleep(time.Until(sendStart.Add(6*time.Second + time.Duration(i)*9*time.Second)))
		time.Sleep(time.Second) // at least: let the group settle after the previous restart
		t0 := time.Now()
		if err := old.cmd.Process.Signal(syscall.SIGTERM); err != nil {
			t.Fatal(err)
		}
		var exitErr error
		select {
		case exitErr = <-old.done:
		case <-time.After(shutdownBound + exitSlack):
			t.Fatalf("%s did not exit within %v of the stop signal", old.name, shutdownBound+exitSlack)
		}
		took := time.Since(t0)
		if exitErr != nil {
			t.Fatalf("%s exited with %v after the stop signal", old.name, exitErr)
		}
		logs := old.out.Bytes()
		if !bytes.Contains(logs, []byte(`"encryptor stopped"`)) {
			t.Fatalf("%s exited without logging \"encryptor stopped\"", old.name)
		}
		for _, l := range logLines(logs, `"level":"error"`, `"level":"warn"`) {
			t.Logf("%s while stopping: %s", old.name, l)
		}
		repl := startEnc(fmt.Sprintf("enc-%d-r", i+1))
		all = append(all, repl)
		t1 := time.Now()
		waitFor(t, 45*time.Second, repl.name+" to write records", func() bool { return written(repl.out.Bytes()) > 0 })
		t.Logf("restart %d at ~%d messages posted: %s exited 0 in %v (wrote %d records); %s wrote its first records %v after start",
			i+1, sent(), old.name, took.Round(time.Millisecond), written(logs), repl.name, time.Since(t1).Round(time.Millisecond))
		live[i] = repl
	}
	restartsDone := time.Since(sendStart)
	select {
	case err := <-sendDone:
		if err != nil {
			t.Fatalf("sending: %v", err)
		}
	case <-ctx.Done():
		t.Fatal("sending did not finish")
	}
	sendTook := time.Since(sendStart)
	t.Logf("posted %d messages over %d chats in %v; the 3 restarts were done %v after the load began",
		messages, chats, sendTook.Round(time.Millisecond), restartsDone.Round(time.Millisecond))
	if restartsDone > sendTook {
		t.Logf("note: the restarts outlasted the load by %v", (restartsDone - sendTook).Round(time.Millisecond))
	}

	// Every message id reaches the storage topic.
	records := readPartitions(t, ctx, brokers, topics.stored, 6, sentChat, 60*time.Second)
	drained := time.Since(sendStart)
	for _, p := range live {
		p.stop(t, shutdownBound+exitSlack)
		if !bytes.Contains(p.out.Bytes(), []byte(`"encryptor stopped"`)) {
			t.Errorf("%s exited without logging \"encryptor stopped\"", p.name)
		}
	}
	ingest.stop(t, 30*time.Second)

	// Sealed, keyed tenant/chat, no plaintext; count duplicates.
	seen := map[string]int{}
	lastIndex := map[string]int{} // tenant/chat → send index of the last first occurrence
	for _, m := range records {
		var sm byokv1.StoredMessage
		if err := proto.Unmarshal(m.Value, &sm); err != nil {
			t.Fatalf("storage record at %d/%d is not a StoredMessage: %v", m.Partition, m.Offset, err)
		}
		if bytes.Contains(m.Value, []byte(bodyCanary)) || bytes.Contains(m.Value, []byte("привет")) || sm.GetPlaintextBody() != nil || sm.GetEnvelope() == nil {
			t.Fatalf("message %s: a plaintext body appears in the storage topic", sm.MessageId)
		}
		for _, h := range m.Headers {
			if bytes.Contains(h.Value, []byte(bodyCanary)) {
				t.Fatalf("message %s: a plaintext body appears in a storage header", sm.MessageId)
			}
		}
		key := string(m.Key)
		if want, ok := sentChat[sm.MessageId]; !ok || key != want || key != sm.TenantId+"/"+sm.ChatId {
			t.Fatalf("record %d/%d: message %q keyed %q (sent as %q)", m.Partition, m.Offset, sm.MessageId, key, want)
		}
		e, err := envelope.Parse(sm.GetEnvelope())
		if err != nil {
			t.Fatalf("message %s: envelope: %v", sm.MessageId, err)
		}
		if e.Scope.TenantID+"/"+e.Scope.ChatID != key {
			t.Fatalf("message %s: envelope scope %s/%s, record key %s", sm.MessageId, e.Scope.TenantID, e.Scope.ChatID, key)
		}
		seen[sm.MessageId]++
		if seen[sm.MessageId] > 1 {
			continue // a replayed duplicate: order is judged on first occurrences
		}
		idx := rollIndex(t, run, sm.MessageId)
		if last, ok := lastIndex[key]; ok && idx < last {
			t.Fatalf("chat %s: message %d first appears at %d/%d after message %d (per-chat order broken)", key, idx, m.Partition, m.Offset, last)
		}
		lastIndex[key] = idx
	}
	dups, dupMsgs := 0, 0
	for id := range sentChat {
		if seen[id] == 0 {
			t.Fatalf("message %s never reached the storage topic", id)
		}
		if seen[id] > 1 {
			dups += seen[id] - 1
			dupMsgs++
		}
	}
	if len(lastIndex) != chats {
		t.Fatalf("storage topic holds %d chats, want %d", len(lastIndex), chats)
	}
	if n := countTopic(t, ctx, brokers, topics.dead); n != 0 {
		t.Fatalf("%d records dead-lettered, want 0", n)
	}
	t.Logf("storage topic: %d records for %d messages: all present, %d duplicates (%d messages written more than once, %.2f%%); per-chat order kept in all %d chats; no plaintext; 0 dead letters",
		len(records), messages, dups, dupMsgs, 100*float64(dups)/messages, chats)
	var per []string
	for _, p := range all {
		per = append(per, fmt.Sprintf("%s=%d", p.name, written(p.out.Bytes())))
	}
	t.Logf("records written per process: %s", strings.Join(per, " "))
	for _, p := range all {
		ls := logLines(p.out.Bytes(), `"level":"error"`, `"level":"warn"`)
		for i, l := range ls {
			if i == 3 {
				t.Logf("%s: %d more warnings/errors", p.name, len(ls)-i)
				break
			}
			t.Logf("%s: %s", p.name, l)
		}
	}
	t.Logf("timings: all stored %v after the load began; test took %v", drained.Round(time.Millisecond), time.Since(testStart).Round(time.Millisecond))
}

func rollID(run string, i int) string { return fmt.Sprintf("%s-m%05d", run, i) }

func rollIndex(t *testing.T, run, id string) int {
	t.Helper()
	n, err := strconv.Atoi(strings.TrimPrefix(id, run+"-m"))
	if err != nil {
		t.Fatalf("message id %q does not encode a send index", id)
	}
	return n
}

// postBatchErr is postBatch for use off the test goroutine: it returns the error.
func postBatchErr(ctx context.Context, listen string, req any) error {
	b, _ := json.Marshal(req)
	var err error
	for attempt := 0; attempt < 5; attempt++ {
		if attempt > 0 {
			time.Sleep(time.Second)
		}
		var hreq *http.Request
		hreq, err = http.NewRequestWithContext(ctx, http.MethodPost, "http://"+listen+"/v1/messages:batch", bytes.NewReader(b))
		if err != nil {
			return err
		}
		hreq.Header.Set("Content-Type", "application/json")
		var resp *http.Response
		resp, err = httpClient.Do(hreq)
		if err == nil {
			resp.Body.Close()
			if resp.StatusCode == http.StatusAccepted {
				return nil
			}
			err = fmt.Errorf("HTTP %d", resp.StatusCode)
		}
	}
	return err
}

// logLines returns the log lines that contain any of the needles.
func logLines(logs []byte, needles ...string) []string {
	var out []string
	sc := bufio.NewScanner(bytes.NewReader(logs))
	sc.Buffer(make([]byte, 1<<20), 1<<20)
	for sc.Scan() {
		for _, n := range needles {
			if bytes.Contains(sc.Bytes(), []byte(n)) {
				out = append(out, sc.Text())
				break
			}
		}
	}
	return out
}

// countTopic counts the records of a one-partition topic.
func countTopic(t *testing.T, ctx context.Context, brokers []string, topic string) int {
	t.Helper()
	r := kafka.NewReader(kafka.ReaderConfig{Brokers: brokers, Topic: topic, Partition: 0, MaxWait: 100 * time.Millisecond})
	defer r.Close()
	rctx, cancel := context.WithTimeout(ctx, 2*time.Second)
	defer cancel()
	n := 0
	for {
		if _, err := r.ReadMessage(rctx); err != nil {
			return n
		}
		n++
	}
}

// readPartitions reads every partition of topic from its start, without a consumer group, until
// every id in want was seen; then it drains what else is there (late duplicates) briefly. The
// records come back in partition order, each partition in offset order.
func readPartitions(t *testing.T, ctx context.Context, brokers []string, topic string, partitions int, want map[string]string, within time.Duration) []kafka.Message {
	t.Helper()
	rctx, cancel := context.WithTimeout(ctx, within)
	defer cancel()
	type rec struct {
		m   kafka.Message
		err error
	}
	ch := make(chan rec, 1024)
	readers := make([]*kafka.Reader, partitions)
	for p := range readers {
		readers[p] = kafka.NewReader(kafka.ReaderConfig{Brokers: brokers, Topic: topic, Partition: p,
			MaxWait: 200 * time.Millisecond, MaxBytes: 10 << 20})
		go func(r *kafka.Reader) {
			for {
				m, err := r.ReadMessage(rctx)
				select {
				case ch <- rec{m, err}:
				case <-rctx.Done():
					return
				}
				if err != nil {
					return
				}
			}
		}(readers[p])
	}
	defer func() {
		cancel()
		for _, r := range readers {
			r.Close()
		}
	}()
	var out []kafka.Message
	missing := make(map[string]bool, len(want))
	for id := range want {
		missing[id] = true
	}
	var drain <-chan time.Time
	for {
		select {
		case r := <-ch:
			if r.err != nil {
				if drain != nil {
					continue
				}
				t.Fatalf("storage topic: %d of %d messages arrived before %v", len(want)-len(missing), len(want), r.err)
			}
			out = append(out, r.m)
			delete(missing, kafkax.Header(r.m, kafkax.HeaderMessageID))
			if len(missing) == 0 && drain == nil {
				drain = time.After(2 * time.Second)
			}
		case <-drain:
			return sorted(out)
		case <-rctx.Done():
			if drain != nil {
				return sorted(out)
			}
			t.Fatalf("storage topic: %d of %d messages arrived within %v", len(want)-len(missing), len(want), within)
		}
	}
}

func sorted(ms []kafka.Message) []kafka.Message {
	sort.SliceStable(ms, func(i, j int) bool {
		if ms[i].Partition != ms[j].Partition {
			return ms[i].Partition < ms[j].Partition
		}
		return ms[i].Offset < ms[j].Offset
	})
	return ms
}
