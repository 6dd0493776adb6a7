package worker

import (
	"reflect"
	"testing"
)

func TestOffsetsCommitOnlyContiguousDone(t *testing.T) {
	o := newOffsets()
	for off := int64(10); off < 15; off++ {
		o.add(0, off)
	}
	o.add(1, 100)
	o.done(0, 10)
	o.done(0, 11)
	o.done(0, 13) // 12 still pending (held): 13 must not be committed yet
	o.done(1, 100)
	if got, want := o.committable(), map[int]int64{0: 11, 1: 100}; !reflect.DeepEqual(got, want) {
		t.Fatalf("committable = %v, want %v", got, want)
	}
	if got := o.committable(); len(got) != 0 {
		t.Fatalf("committable again = %v, want nothing new", got)
	}
	o.done(0, 12)
	if got, want := o.committable(), map[int]int64{0: 13}; !reflect.DeepEqual(got, want) {
		t.Fatalf("committable after held record finished = %v, want %v", got, want)
	}
	if n := o.inFlight(); n != 1 {
		t.Fatalf("inFlight = %d, want 1 (offset 14)", n)
	}
}

func TestOffsetsRewindResetsPartition(t *testing.T) {
	o := newOffsets()
	o.add(0, 5)
	o.add(0, 6)
	if o.add(0, 5) {
		t.Fatal("add(rewound offset) = true, want false")
	}
	o.done(0, 5)
	if got, want := o.committable(), map[int]int64{0: 5}; !reflect.DeepEqual(got, want) {
		t.Fatalf("committable after rewind = %v, want %v", got, want)
	}
}
