package envelope

import (
	"bytes"
	"crypto/aes"
	"crypto/cipher"
	"encoding/hex"
	"encoding/json"
	"errors"
	"flag"
	"os"
	"path/filepath"
	"testing"

	"github.com/byok-io/byok/pkg/scope"
)

var update = flag.Bool("update", false, "rewrite golden vectors in testdata/")

func newAEAD(t testing.TB, key []byte) cipher.AEAD {
	t.Helper()
	block, err := aes.NewCipher(key)
	if err != nil {
		t.Fatal(err)
	}
	aead, err := cipher.NewGCM(block)
	if err != nil {
		t.Fatal(err)
	}
	return aead
}

var (
	testKey   = bytes.Repeat([]byte{0x42}, 32)
	testScope = scope.Scope{TenantID: "acme", ChatID: "general", Day: 20426}
	testRef   = KeyRef{Provider: "vault", KEKID: "byok-acme", KEKVersion: "1", WrappedDEK: []byte("vault:v1:c2VjcmV0LXdyYXBwZWQ=")}
)

func TestSealOpenRoundTrip(t *testing.T) {
	aead := newAEAD(t, testKey)
	for _, body := range [][]byte{{}, []byte("hello"), bytes.Repeat([]byte("x"), MaxBodyLen)} {
		raw, err := Seal(aead, testRef, testScope, "m-1", body)
		if err != nil {
			t.Fatalf("Seal(%d bytes) err = %v", len(body), err)
		}
		e, err := Parse(raw)
		if err != nil {
			t.Fatalf("Parse err = %v", err)
		}
		if e.Scope != testScope || e.Key.KEKID != testRef.KEKID || !bytes.Equal(e.Key.WrappedDEK, testRef.WrappedDEK) {
			t.Fatalf("Parse = %+v, want scope %+v key %+v", e, testScope, testRef)
		}
		got, err := Open(aead, e, "m-1")
		if err != nil || !bytes.Equal(got, body) {
			t.Fatalf("Open = %d bytes, %v; want %d bytes", len(got), err, len(body))
		}
		if !bytes.Equal(e.Marshal(), raw) {
			t.Fatal("Marshal(Parse(raw)) != raw")
		}
	}
}

func TestNonceIsFreshPerMessage(t *testing.T) {
	aead := newAEAD(t, testKey)
	seen := map[[NonceSize]byte]bool{}
	for i := 0; i < 1000; i++ {
		raw, _ := Seal(aead, testRef, testScope, "m", []byte("same body"))
		e, err := Parse(raw)
		if err != nil {
			t.Fatal(err)
		}
		if seen[e.Nonce] {
			t.Fatalf("nonce repeated after %d seals", i)
		}
		seen[e.Nonce] = true
	}
}

// TestMovedEnvelopeFailsToOpen is invariant 5: an envelope copied to another chat, tenant, day
// or message does not open.
func TestMovedEnvelopeFailsToOpen(t *testing.T) {
	aead := newAEAD(t, testKey)
	raw, err := Seal(aead, testRef, testScope, "m-1", []byte("secret body"))
	if err != nil {
		t.Fatal(err)
	}
	moves := map[string]func(e *Envelope) string{
		"other message": func(e *Envelope) string { return "m-2" },
		"other chat":    func(e *Envelope) string { e.Scope.ChatID = "random"; return "m-1" },
		"other tenant":  func(e *Envelope) string { e.Scope.TenantID = "globex"; return "m-1" },
		"other day":     func(e *Envelope) string { e.Scope.Day++; return "m-1" },
	}
	for name, move := range moves {
		t.Run(name, func(t *testing.T) {
			e, err := Parse(raw)
			if err != nil {
				t.Fatal(err)
			}
			id := move(e)
			// Re-serialise as an attacker would when copying the record elsewhere.
			moved, err := Parse(e.Marshal())
			if err != nil {
				t.Fatal(err)
			}
			if _, err := Open(aead, moved, id); !errors.Is(err, ErrOpen) {
				t.Fatalf("Open(moved) err = %v, want ErrOpen", err)
			}
		})
	}
}

func TestTamperedByteFailsToOpen(t *testing.T) {
	aead := newAEAD(t, testKey)
	raw, _ := Seal(aead, testRef, testScope, "m-1", []byte("secret body"))
	hdr := (&Envelope{Scope: testScope, Key: testRef}).headerLen()
	// Flip every byte of nonce and ciphertext: each must fail authentication.
	for i := hdr; i < len(raw); i++ {
		c := bytes.Clone(raw)
		c[i] ^= 0x01
		e, err := Parse(c)
		if err != nil {
			t.Fatalf("Parse(flip %d) err = %v", i, err)
		}
		if _, err := Open(aead, e, "m-1"); !errors.Is(err, ErrOpen) {
			t.Fatalf("Open(flip byte %d) err = %v, want ErrOpen", i, err)
		}
	}
}

func TestParseRejects(t *testing.T) {
	aead := newAEAD(t, testKey)
	raw, _ := Seal(aead, testRef, testScope, "m-1", []byte("body"))
	// Every truncation is malformed (never a panic) down to header+nonce+tag; below the tag's end
	// the parse succeeds but authentication fails.
	minLen := (&Envelope{Scope: testScope, Key: testRef}).headerLen() + NonceSize + TagSize
	for n := 0; n < len(raw); n++ {
		e, err := Parse(raw[:n])
		if n < minLen {
			if !errors.Is(err, ErrMalformed) {
				t.Fatalf("Parse(first %d of %d bytes) err = %v, want ErrMalformed", n, len(raw), err)
			}
			continue
		}
		if err != nil {
			t.Fatalf("Parse(first %d of %d bytes) err = %v", n, len(raw), err)
		}
		if _, err := Open(aead, e, "m-1"); !errors.Is(err, ErrOpen) {
			t.Fatalf("Open(first %d of %d bytes) err = %v, want ErrOpen", n, len(raw), err)
		}
	}
	set := func(i int, v byte) []byte { c := bytes.Clone(raw); c[i] = v; return c }
	tests := []struct {
		name string
		in   []byte
		want error
	}{
		{"bad magic", set(0, 'X'), ErrMalformed},
		{"version 2", set(2, 2), ErrUnsupported},
		{"algorithm 9", set(3, 9), ErrUnsupported},
		{"key ref by id", set(4, 2), ErrUnsupported},
		{"empty provider", set(5, 0), ErrMalformed},
		{"provider too long", set(5, MaxProviderLen+1), ErrMalformed},
	}
	for _, tt := range tests {
		if _, err := Parse(tt.in); !errors.Is(err, tt.want) {
			t.Errorf("Parse(%s) err = %v, want %v", tt.name, err, tt.want)
		}
	}
}

func TestSealRejectsBadArgs(t *testing.T) {
	aead := newAEAD(t, testKey)
	noWrapped := testRef
	noWrapped.WrappedDEK = nil
	cases := map[string]func() error{
		"empty message id": func() error { _, err := Seal(aead, testRef, testScope, "", nil); return err },
		"no wrapped DEK":   func() error { _, err := Seal(aead, noWrapped, testScope, "m", nil); return err },
		"no tenant":        func() error { _, err := Seal(aead, testRef, scope.Scope{ChatID: "c"}, "m", nil); return err },
		"body too big":     func() error { _, err := Seal(aead, testRef, testScope, "m", make([]byte, MaxBodyLen+1)); return err },
	}
	for name, f := range cases {
		if f() == nil {
			t.Errorf("Seal(%s) err = nil, want error", name)
		}
	}
}

// golden is one vector of testdata/golden-v1.json: a fixed DEK and envelope bytes that this and
// every future build must open to the same body (the format is a promise to stored data).
type golden struct {
	Name      string `json:"name"`
	DEKHex    string `json:"dek_hex"`
	MessageID string `json:"message_id"`
	Body      string `json:"body"`
	Envelope  string `json:"envelope_hex"`
}

func TestGoldenVectors(t *testing.T) {
	path := filepath.Join("testdata", "golden-v1.json")
	if *update {
		var vs []golden
		for _, c := range []struct{ name, id, body string }{
			{"short text", "msg-0001", "Привет, мир"},
			{"empty body", "msg-0002", ""},
			{"200 bytes", "msg-0003", string(bytes.Repeat([]byte("a"), 200))},
		} {
			raw, err := Seal(newAEAD(t, testKey), testRef, testScope, c.id, []byte(c.body))
			if err != nil {
				t.Fatal(err)
			}
			vs = append(vs, golden{c.name, hex.EncodeToString(testKey), c.id, c.body, hex.EncodeToString(raw)})
		}
		b, _ := json.MarshalIndent(vs, "", "  ")
		if err := os.WriteFile(path, append(b, '\n'), 0o644); err != nil {
			t.Fatal(err)
		}
	}
	b, err := os.ReadFile(path)
	if err != nil {
		t.Fatal(err)
	}
	var vs []golden
	if err := json.Unmarshal(b, &vs); err != nil {
		t.Fatal(err)
	}
	if len(vs) == 0 {
		t.Fatal("no golden vectors")
	}
	for _, v := range vs {
		key, _ := hex.DecodeString(v.DEKHex)
		raw, _ := hex.DecodeString(v.Envelope)
		e, err := Parse(raw)
		if err != nil {
			t.Fatalf("%s: Parse err = %v", v.Name, err)
		}
		got, err := Open(newAEAD(t, key), e, v.MessageID)
		if err != nil || string(got) != v.Body {
			t.Fatalf("%s: Open = %q, %v; want %q", v.Name, got, err, v.Body)
		}
		if e.Scope != testScope || e.Key.Provider != "vault" || e.Key.KEKVersion != "1" {
			t.Fatalf("%s: parsed header %+v", v.Name, e)
		}
		if !bytes.Equal(e.Marshal(), raw) {
			t.Fatalf("%s: Marshal(Parse) differs from the golden bytes", v.Name)
		}
	}
}

// FuzzParse checks that Parse never panics and that whatever it accepts re-serialises to the
// same bytes (no two encodings of one envelope).
func FuzzParse(f *testing.F) {
	aead := newAEAD(f, testKey)
	raw, _ := Seal(aead, testRef, testScope, "m-1", []byte("seed body"))
	f.Add(raw)
	f.Add([]byte{})
	f.Add([]byte("BY\x01\x01\x01"))
	f.Fuzz(func(t *testing.T, b []byte) {
		e, err := Parse(b)
		if err != nil {
			if !errors.Is(err, ErrMalformed) && !errors.Is(err, ErrUnsupported) {
				t.Fatalf("Parse err = %v, want ErrMalformed or ErrUnsupported", err)
			}
			return
		}
		if !bytes.Equal(e.Marshal(), b) {
			t.Fatalf("Marshal(Parse(b)) != b")
		}
		_, _ = Open(aead, e, "m-1")
	})
}

func BenchmarkSeal200(b *testing.B) {
	aead := newAEAD(b, testKey)
	body := bytes.Repeat([]byte("a"), 200)
	b.SetBytes(200)
	for b.Loop() {
		if _, err := Seal(aead, testRef, testScope, "msg-000000001", body); err != nil {
			b.Fatal(err)
		}
	}
}
