package yandexemu_test

import (
	"bytes"
	"context"
	"crypto/rsa"
	"crypto/x509"
	"encoding/json"
	"encoding/pem"
	"strings"
	"testing"
	"time"

	"github.com/golang-jwt/jwt/v4"
	iampb "github.com/yandex-cloud/go-genproto/yandex/cloud/iam/v1"
	kmspb "github.com/yandex-cloud/go-genproto/yandex/cloud/kms/v1"
	"google.golang.org/grpc"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/credentials/insecure"
	"google.golang.org/grpc/metadata"
	"google.golang.org/grpc/status"

	"github.com/byok-io/byok/pkg/kms/yandex/yandexemu"
)

type account struct {
	keyID, sa string
	priv      *rsa.PrivateKey
}

func newAccount(t *testing.T, emu *yandexemu.Server, sa string) account {
	t.Helper()
	js, err := emu.NewAuthorizedKey(sa)
	if err != nil {
		t.Fatal(err)
	}
	var k struct {
		ID         string `json:"id"`
		SA         string `json:"service_account_id"`
		PrivateKey string `json:"private_key"`
	}
	if err := json.Unmarshal(js, &k); err != nil {
		t.Fatal(err)
	}
	block, _ := pem.Decode([]byte(k.PrivateKey))
	if block == nil || !strings.HasPrefix(k.PrivateKey, "PLEASE DO NOT REMOVE THIS LINE!") {
		t.Fatalf("private_key is not in Yandex's format")
	}
	priv, err := x509.ParsePKCS8PrivateKey(block.Bytes)
	if err != nil {
		t.Fatal(err)
	}
	return account{keyID: k.ID, sa: k.SA, priv: priv.(*rsa.PrivateKey)}
}

func (a account) jwt(t *testing.T, method jwt.SigningMethod, edit func(*jwt.RegisteredClaims)) string {
	t.Helper()
	now := time.Now()
	claims := jwt.RegisteredClaims{
		Issuer:    a.sa,
		IssuedAt:  jwt.NewNumericDate(now),
		ExpiresAt: jwt.NewNumericDate(now.Add(time.Hour)),
		Audience:  jwt.ClaimStrings{yandexemu.Audience},
	}
	if edit != nil {
		edit(&claims)
	}
	tok := jwt.NewWithClaims(method, claims)
	tok.Header["kid"] = a.keyID
	s, err := tok.SignedString(a.priv)
	if err != nil {
		t.Fatal(err)
	}
	return s
}

func dial(t *testing.T, emu *yandexemu.Server) *grpc.ClientConn {
	t.Helper()
	cc, err := grpc.NewClient(emu.Addr(), grpc.WithTransportCredentials(insecure.NewCredentials()))
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = cc.Close() })
	return cc
}

func TestIAMTokenExchange(t *testing.T) {
	emu := yandexemu.Start(t)
	a := newAccount(t, emu, "aje-sa")
	iam := iampb.NewIamTokenServiceClient(dial(t, emu))
	ctx := context.Background()

	cases := []struct {
		name   string
		jwt    string
		wantOK bool
	}{
		{"valid", a.jwt(t, jwt.SigningMethodPS256, nil), true},
		{"RS256 instead of PS256", a.jwt(t, jwt.SigningMethodRS256, nil), false},
		{"wrong audience", a.jwt(t, jwt.SigningMethodPS256, func(c *jwt.RegisteredClaims) { c.Audience = jwt.ClaimStrings{"https://example.com"} }), false},
		{"wrong issuer", a.jwt(t, jwt.SigningMethodPS256, func(c *jwt.RegisteredClaims) { c.Issuer = "aje-other" }), false},
		{"no expiry", a.jwt(t, jwt.SigningMethodPS256, func(c *jwt.RegisteredClaims) { c.ExpiresAt = nil }), false},
		{"expired", a.jwt(t, jwt.SigningMethodPS256, func(c *jwt.RegisteredClaims) { c.ExpiresAt = jwt.NewNumericDate(time.Now().Add(-time.Minute)) }), false},
		{"lifetime over an hour", a.jwt(t, jwt.SigningMethodPS256, func(c *jwt.RegisteredClaims) { c.ExpiresAt = jwt.NewNumericDate(time.Now().Add(3 * time.Hour)) }), false},
		{"unknown key id", account{keyID: "ajk-unknown", sa: a.sa, priv: a.priv}.jwt(t, jwt.SigningMethodPS256, nil), false},
		{"not a JWT", "not-a-jwt", false},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			resp, err := iam.Create(ctx, &iampb.CreateIamTokenRequest{Identity: &iampb.CreateIamTokenRequest_Jwt{Jwt: tc.jwt}})
			if tc.wantOK {
				if err != nil || resp.GetIamToken() == "" || !resp.GetExpiresAt().AsTime().After(time.Now()) {
					t.Fatalf("Create = %v, %v; want a token", resp, err)
				}
				return
			}
			if status.Code(err) != codes.Unauthenticated {
				t.Fatalf("Create err = %v, want Unauthenticated", err)
			}
		})
	}
}

func TestCryptoService(t *testing.T) {
	emu := yandexemu.Start(t)
	a := newAccount(t, emu, "aje-sa")
	cc := dial(t, emu)
	for _, k := range []string{"k1", "k2"} {
		if err := emu.CreateKey(k); err != nil {
			t.Fatal(err)
		}
		if err := emu.Grant(a.sa, k); err != nil {
			t.Fatal(err)
		}
	}
	tok, err := iampb.NewIamTokenServiceClient(cc).Create(context.Background(), &iampb.CreateIamTokenRequest{Identity: &iampb.CreateIamTokenRequest_Jwt{Jwt: a.jwt(t, jwt.SigningMethodPS256, nil)}})
	if err != nil {
		t.Fatal(err)
	}
	crypto := kmspb.NewSymmetricCryptoServiceClient(cc)
	ctx := metadata.AppendToOutgoingContext(context.Background(), "authorization", "Bearer "+tok.GetIamToken())

	if _, err := crypto.Encrypt(context.Background(), &kmspb.SymmetricEncryptRequest{KeyId: "k1", Plaintext: []byte("x")}); status.Code(err) != codes.Unauthenticated {
		t.Fatalf("Encrypt without token err = %v, want Unauthenticated", err)
	}
	bogus := metadata.AppendToOutgoingContext(context.Background(), "authorization", "Bearer t1.forged")
	if _, err := crypto.Encrypt(bogus, &kmspb.SymmetricEncryptRequest{KeyId: "k1", Plaintext: []byte("x")}); status.Code(err) != codes.Unauthenticated {
		t.Fatalf("Encrypt with a made-up token err = %v, want Unauthenticated", err)
	}

	gen, err := crypto.GenerateDataKey(ctx, &kmspb.GenerateDataKeyRequest{KeyId: "k1", AadContext: []byte("a")})
	if err != nil || len(gen.GetDataKeyPlaintext()) != 32 || gen.GetVersionId() != "k1-v1" {
		t.Fatalf("GenerateDataKey = %v, %v", gen, err)
	}
	re, err := crypto.ReEncrypt(ctx, &kmspb.SymmetricReEncryptRequest{
		SourceKeyId: "k1", SourceAadContext: []byte("a"), Ciphertext: gen.GetDataKeyCiphertext(),
		KeyId: "k2", AadContext: []byte("b"),
	})
	if err != nil || re.GetSourceVersionId() != "k1-v1" || re.GetVersionId() != "k2-v1" {
		t.Fatalf("ReEncrypt = %v, %v", re, err)
	}
	dec, err := crypto.Decrypt(ctx, &kmspb.SymmetricDecryptRequest{KeyId: "k2", AadContext: []byte("b"), Ciphertext: re.GetCiphertext()})
	if err != nil || !bytes.Equal(dec.GetPlaintext(), gen.GetDataKeyPlaintext()) {
		t.Fatalf("Decrypt(re-encrypted) = %v, %v", dec, err)
	}
	for name, req := range map[string]*kmspb.SymmetricDecryptRequest{
		"wrong aad":   {KeyId: "k2", AadContext: []byte("a"), Ciphertext: re.GetCiphertext()},
		"wrong key":   {KeyId: "k1", AadContext: []byte("b"), Ciphertext: re.GetCiphertext()},
		"truncated":   {KeyId: "k2", AadContext: []byte("b"), Ciphertext: re.GetCiphertext()[:10]},
		"aad too big": {KeyId: "k2", AadContext: make([]byte, yandexemu.MaxAADContext+1), Ciphertext: re.GetCiphertext()},
	} {
		if _, err := crypto.Decrypt(ctx, req); status.Code(err) != codes.InvalidArgument {
			t.Fatalf("Decrypt(%s) err = %v, want InvalidArgument", name, err)
		}
	}
	if _, err := crypto.Encrypt(ctx, &kmspb.SymmetricEncryptRequest{KeyId: "k1", Plaintext: make([]byte, yandexemu.MaxPlaintext+1)}); status.Code(err) != codes.InvalidArgument {
		t.Fatalf("Encrypt(33 KiB) err = %v, want InvalidArgument", err)
	}
	if _, err := crypto.Encrypt(ctx, &kmspb.SymmetricEncryptRequest{KeyId: "nope", Plaintext: []byte("x")}); status.Code(err) != codes.NotFound {
		t.Fatalf("Encrypt(unknown key) err = %v, want NotFound", err)
	}
}
