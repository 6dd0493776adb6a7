package registry

import (
	"errors"
	"strings"
	"testing"
)

func TestOpen(t *testing.T) {
	if got := strings.Join(Providers(), ","); got != "cloudru,local,vault,yandex" {
		t.Fatalf("Providers() = %s", got)
	}
	if _, err := Open("aws", "k", nil); !errors.Is(err, ErrUnknownProvider) {
		t.Fatalf("Open(aws) err = %v, want ErrUnknownProvider", err)
	}
	const canary = "CANARY-secret-5521"
	for _, p := range Providers() {
		if _, err := Open(p, "", []byte(`{}`)); err == nil {
			t.Errorf("Open(%s) without a KEK id: err = nil", p)
		}
		_, err := Open(p, "kek", []byte(`{"token":"`+canary+`","secret":"`+canary+`","private_key":"`+canary+`","bogus":1}`))
		if err == nil {
			t.Errorf("Open(%s, bad credential) err = nil", p)
		} else if strings.Contains(err.Error(), canary) {
			t.Errorf("Open(%s) error quotes the credential: %v", p, err)
		}
	}
}

func TestIsLoopback(t *testing.T) {
	for ep, want := range map[string]bool{
		"127.0.0.1:1": true, "[::1]:443": true, "localhost:9": true,
		"kms.yandex:443": false, "10.0.0.1:443": false, "127.0.0.1": false,
	} {
		if got := isLoopback(ep); got != want {
			t.Errorf("isLoopback(%q) = %t, want %t", ep, got, want)
		}
	}
}
