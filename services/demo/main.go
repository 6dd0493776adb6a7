// Command demo runs the encrypt path end to end and shows it: messages go into the ingest API as
// plaintext, two encryptors seal them with DEKs wrapped by each tenant's KMS, and the storage
// topic holds only envelopes, which open again through the KMS. It prints one message at each
// step and a summary with the KMS call count.
//
// With no flags it needs nothing: an in-process Kafka-protocol broker and a local key file.
// `make run` starts a real Kafka and a real Vault and passes them in.
package main

import (
	"context"
	"fmt"
	"os"
	"os/signal"
	"syscall"

	"github.com/byok-io/byok/services/demo/demo"
)

func main() {
	cfg, err := demo.ParseFlags(os.Args[1:])
	if err != nil {
		fmt.Fprintln(os.Stderr, "demo:", err)
		os.Exit(2)
	}
	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
	defer stop()
	if err := demo.Run(ctx, cfg, os.Stdout); err != nil {
		fmt.Fprintln(os.Stderr, "demo:", err)
		os.Exit(1)
	}
}
