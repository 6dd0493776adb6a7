package kafkax

import (
	"testing"
	"time"

	"github.com/segmentio/kafka-go"
)

func TestLagSumsPartitionsAndForgetsStaleOnes(t *testing.T) {
	now := time.Date(2026, 12, 4, 10, 0, 0, 0, time.UTC)
	l := NewLag(time.Minute)
	l.now = func() time.Time { return now }
	l.Observe(kafka.Message{Partition: 0, Offset: 9, HighWaterMark: 110})  // 100 behind
	l.Observe(kafka.Message{Partition: 1, Offset: 49, HighWaterMark: 60})  // 10 behind
	l.Observe(kafka.Message{Partition: 0, Offset: 99, HighWaterMark: 110}) // now 10 behind
	if got := l.Total(); got != 20 {
		t.Fatalf("Total = %d, want 20 (10 + 10)", got)
	}
	now = now.Add(45 * time.Second)
	l.Observe(kafka.Message{Partition: 1, Offset: 59, HighWaterMark: 60}) // caught up
	now = now.Add(30 * time.Second)                                       // partition 0 not seen for 75s
	if got := l.Total(); got != 0 {
		t.Fatalf("Total = %d, want 0 (partition 0 forgotten, partition 1 caught up)", got)
	}
	var nilLag *Lag
	nilLag.Observe(kafka.Message{}) // a nil Lag ignores records
}
