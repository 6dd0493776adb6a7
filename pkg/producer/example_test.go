package producer_test

import (
	"context"
	"fmt"
	"log"

	"github.com/byok-io/byok/pkg/message"
	"github.com/byok-io/byok/pkg/producer"
)

// A messenger service publishes each message as it is written. Publish returns once all
// in-sync replicas have the record; from then on byok is responsible for it.
func Example() {
	p, err := producer.New([]string{"127.0.0.1:19092"})
	if err != nil {
		log.Fatal(err)
	}
	defer p.Close()

	e := producer.NewEvent("acme", "general", "user-42", "text/plain", []byte("hello"))
	if err := p.Publish(context.Background(), e); err != nil {
		// Safe to retry with the same event: consumers deduplicate by message id.
		log.Fatal(err)
	}
}

func ExampleNewEvent() {
	e := producer.NewEvent("acme", "general", "user-42", "text/plain", []byte("hello"))
	fmt.Println(e.SchemaVersion, e.TenantId, e.ChatId, e.SenderId, e.ContentType, string(e.Body))
	fmt.Println("valid:", message.Validate(e) == nil)
	// Output:
	// 1 acme general user-42 text/plain hello
	// valid: true
}
