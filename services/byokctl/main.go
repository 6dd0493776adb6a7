// Command byokctl is the tool of the customer's security team and of ops. Today it verifies the
// audit trail:
//
//	byokctl audit verify [-brokers 127.0.0.1:19092] [-audit-topic byok.audit]
//
// reads every event on the audit topic, checks each hash chain (tenant × emitting worker) and
// prints one line per chain; it exits 1 if any chain has a broken or missing link.
package main

import (
	"context"
	"fmt"
	"io"
	"os"
	"os/signal"
	"syscall"
	"time"

	"github.com/byok-io/byok/pkg/audit"
	"github.com/byok-io/byok/pkg/flagenv"
)

func main() {
	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
	defer stop()
	os.Exit(run(ctx, os.Args[1:], os.Stdout, os.Stderr))
}

func usage(w io.Writer) {
	fmt.Fprintln(w, "usage: byokctl audit verify [-brokers host:port,...] [-audit-topic name]")
}

func run(ctx context.Context, args []string, out, errOut io.Writer) int {
	if len(args) < 2 || args[0] != "audit" || args[1] != "verify" {
		usage(errOut)
		return 2
	}
	fs := flagenv.New("byokctl audit verify")
	fs.SetOutput(errOut)
	brokers := fs.Strings("brokers", "BYOK_KAFKA_BROKERS", "127.0.0.1:19092", "Kafka bootstrap brokers")
	topic := fs.String("audit-topic", "BYOK_AUDIT_TOPIC", audit.TopicAudit, "audit topic")
	timeout := fs.Duration("timeout", "BYOK_CTL_TIMEOUT", 5*time.Minute, "give up after")
	if err := fs.Parse(args[2:]); err != nil {
		fmt.Fprintln(errOut, "byokctl:", err)
		return 2
	}
	ctx, cancel := context.WithTimeout(ctx, *timeout)
	defer cancel()
	events, err := audit.ReadTopic(ctx, *brokers, *topic)
	if err != nil {
		fmt.Fprintln(errOut, "byokctl:", err)
		return 1
	}
	reports := audit.Verify(events)
	broken := 0
	for _, r := range reports {
		status := "ok"
		if r.Problem != "" {
			status, broken = "BROKEN: "+r.Problem, broken+1
		}
		fmt.Fprintf(out, "tenant %-20s worker %-28s %6d events  %s\n", r.TenantID, r.WorkerID, r.Events, status)
	}
	fmt.Fprintf(out, "%d events, %d chains, %d broken\n", len(events), len(reports), broken)
	if broken > 0 {
		return 1
	}
	return 0
}
