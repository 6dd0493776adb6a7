// Command bench measures the encrypt path against an identity pass-through of the same
// consume→produce path, in one process on one broker, and prints a table: msgs/s of both, their
// ratio (median over rounds), KMS calls per message and per distinct scope, and peak memory. A
// second table shows DEK-manager memory as distinct scopes grow.
//
//	go run ./services/bench -messages 200000 -chats 1000 -rounds 3
package main

import (
	"context"
	"fmt"
	"os"
	"os/signal"
	"runtime/pprof"
	"syscall"

	"github.com/byok-io/byok/services/bench/bench"
)

func main() {
	cfg, err := bench.ParseFlags(os.Args[1:])
	if err != nil {
		fmt.Fprintln(os.Stderr, "bench:", err)
		os.Exit(2)
	}
	if p := os.Getenv("BYOK_BENCH_CPUPROFILE"); p != "" {
		f, err := os.Create(p)
		if err == nil && pprof.StartCPUProfile(f) == nil {
			defer pprof.StopCPUProfile()
		}
	}
	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
	defer stop()
	if err := bench.Run(ctx, cfg, os.Stdout, os.Stderr); err != nil {
		fmt.Fprintln(os.Stderr, "bench:", err)
		stop()
		pprof.StopCPUProfile()
		os.Exit(1)
	}
}
