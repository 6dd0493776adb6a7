package chstore_test

import (
	"context"
	"fmt"
	"time"

	"github.com/byok-io/byok/pkg/chstore"
	byokv1 "github.com/byok-io/byok/pkg/gen/byokv1"
)

// Open, migrate, insert a batch, count each event once. (Needs a server: scripts/clickhouse.sh start.)
func ExampleStore_Insert() {
	ctx := context.Background()
	s, err := chstore.Open(ctx, "127.0.0.1:19000", "byok")
	if err != nil {
		panic(err)
	}
	defer s.Close()
	if _, err := s.Migrate(ctx); err != nil {
		panic(err)
	}
	var events []*byokv1.AuditEvent // decoded from the audit topic
	if err := s.Insert(ctx, events); err != nil {
		panic(err) // retry the same batch: replays collapse by event_id
	}
	c, _ := s.Count(ctx, "acme")
	fmt.Println("acme events:", c.Final)
	perMinute, _ := s.PerMinute(ctx, "acme", time.Now().Add(-time.Hour), time.Now())
	fmt.Println("minutes with activity:", len(perMinute))
}
