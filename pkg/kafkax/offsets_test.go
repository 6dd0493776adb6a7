package kafkax

import (
	"reflect"
	"testing"
)

func TestOffsetsCommitOnlyContiguousDone(t *testing.T) {
	o := NewOffsets()
	for off := int64(10); off < 15; off++ {
		o.Add(0, off)
	}
	o.Add(1, 100)
	o.Done(0, 10)
	o.Done(0, 11)
	o.Done(0, 13) // 12 still pending (held): 13 must not be committed yet
	o.Done(1, 100)
	if got, want := o.Committable(), map[int]int64{0: 11, 1: 100}; !reflect.DeepEqual(got, want) {
		t.Fatalf("committable = %v, want %v", got, want)
	}
	if got := o.Committable(); len(got) != 0 {
		t.Fatalf("committable again = %v, want nothing new", got)
	}
	o.Done(0, 12)
	if got, want := o.Committable(), map[int]int64{0: 13}; !reflect.DeepEqual(got, want) {
		t.Fatalf("committable after held record finished = %v, want %v", got, want)
	}
	if n := o.InFlight(); n != 1 {
		t.Fatalf("inFlight = %d, want 1 (offset 14)", n)
	}
}

func TestOffsetsRewindResetsPartition(t *testing.T) {
	o := NewOffsets()
	o.Add(0, 5)
	o.Add(0, 6)
	if o.Add(0, 5) {
		t.Fatal("add(rewound offset) = true, want false")
	}
	o.Done(0, 5)
	if got, want := o.Committable(), map[int]int64{0: 5}; !reflect.DeepEqual(got, want) {
		t.Fatalf("committable after rewind = %v, want %v", got, want)
	}
}
