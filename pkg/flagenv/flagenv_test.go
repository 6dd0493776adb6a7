package flagenv

import (
	"strings"
	"testing"
	"time"
)

func TestPrecedenceAndErrors(t *testing.T) {
	t.Setenv("T_ADDR", "env-addr")
	t.Setenv("T_WAIT", "3s")
	t.Setenv("T_LIST", "a, b,,c")
	s := New("t")
	addr := s.String("addr", "T_ADDR", "def", "address")
	wait := s.Duration("wait", "T_WAIT", time.Second, "wait")
	n := s.Int("n", "T_N", 7, "n")
	list := s.Strings("list", "T_LIST", "", "list")
	if err := s.Parse([]string{"-addr", "flag-addr"}); err != nil {
		t.Fatal(err)
	}
	if *addr != "flag-addr" || *wait != 3*time.Second || *n != 7 || strings.Join(*list, "|") != "a|b|c" {
		t.Fatalf("got addr=%s wait=%v n=%d list=%v", *addr, *wait, *n, *list)
	}

	t.Setenv("T_WAIT", "soon")
	s = New("t")
	s.Duration("wait", "T_WAIT", time.Second, "wait")
	err := s.Parse(nil)
	if err == nil || !strings.Contains(err.Error(), "T_WAIT") || !strings.Contains(err.Error(), "-wait") {
		t.Fatalf("Parse(bad env) err = %v, want it to name T_WAIT and -wait", err)
	}
}
