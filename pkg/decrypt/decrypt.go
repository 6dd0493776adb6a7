// Package decrypt opens stored envelopes: it unwraps their DEKs through each tenant's KMS in
// batches (one Unwrap per tenant per MaxBatch distinct DEKs) and authenticates every body
// against its message id. Every request names an actor and a purpose.
//
// This is the read path's core without a cache: unwrapped DEKs are zeroed as soon as the batch is
// opened. A short-lived DEK cache, per-caller authorization and audit events build on it.
package decrypt

import (
	"context"
	"crypto/aes"
	"crypto/cipher"
	"errors"
	"fmt"

	"github.com/byok-io/byok/pkg/audit"
	"github.com/byok-io/byok/pkg/dek"
	"github.com/byok-io/byok/pkg/envelope"
	"github.com/byok-io/byok/pkg/kms"
)

// Request says who asks and why. Both are required.
type Request struct {
	Actor      string // the calling service's identity, e.g. "render-svc"
	OnBehalfOf string // the user it acts for, if any
	Purpose    string // e.g. "render", "search-index", "export"
}

// Item is one envelope to open, with the message id it is stored under.
type Item struct {
	MessageID string
	Envelope  []byte
}

// ErrNoActorOrPurpose refuses a request that does not say who asks and why.
var ErrNoActorOrPurpose = errors.New("decrypt: actor and purpose are required")

// Opener opens envelopes with DEKs unwrapped through each tenant's KMS.
type Opener struct {
	// Resolver gives each tenant's KMS; in byok services it is an *audit.Resolver, so every
	// unwrap is recorded with the request's actor and purpose.
	Resolver dek.Resolver
	// MaxBatch is the most DEKs unwrapped in one KMS call (default 500).
	MaxBatch int
}

type dekRef struct {
	wrapped string
	context string
}

// Open returns each item's body or error, at the same index.
func (o *Opener) Open(ctx context.Context, req Request, items []Item) ([][]byte, []error) {
	bodies := make([][]byte, len(items))
	errs := make([]error, len(items))
	if req.Actor == "" || req.Purpose == "" {
		for i := range errs {
			errs[i] = ErrNoActorOrPurpose
		}
		return bodies, errs
	}
	// The audit wrapper (when the Resolver is an *audit.Resolver) records who asks and why.
	ctx = audit.WithAccess(ctx, audit.Access{ActorService: req.Actor, ActorUser: req.OnBehalfOf, Purpose: req.Purpose})
	maxBatch := o.MaxBatch
	if maxBatch <= 0 {
		maxBatch = 500
	}
	envs := make([]*envelope.Envelope, len(items))
	byTenant := map[string][]dekRef{}
	seen := map[string]map[dekRef]bool{}
	for i, it := range items {
		e, err := envelope.Parse(it.Envelope)
		if err != nil {
			errs[i] = err
			continue
		}
		envs[i] = e
		t := e.Scope.TenantID
		ref := dekRef{string(e.Key.WrappedDEK), string(e.Scope.KMSContext())}
		if seen[t] == nil {
			seen[t] = map[dekRef]bool{}
		}
		if !seen[t][ref] {
			seen[t][ref] = true
			byTenant[t] = append(byTenant[t], ref)
		}
	}

	aeads := map[dekRef]cipher.AEAD{}
	failed := map[dekRef]error{}
	for tenant, refs := range byTenant {
		client, err := o.Resolver.KMSFor(tenant)
		for len(refs) > 0 {
			chunk := refs[:min(len(refs), maxBatch)]
			refs = refs[len(chunk):]
			if err != nil {
				for _, r := range chunk {
					failed[r] = err
				}
				continue
			}
			reqs := make([]kms.UnwrapRequest, len(chunk))
			for i, r := range chunk {
				reqs[i] = kms.UnwrapRequest{WrappedDEK: []byte(r.wrapped), Context: []byte(r.context)}
			}
			res, cerr := client.Unwrap(ctx, reqs)
			for i, r := range chunk {
				switch {
				case cerr != nil:
					failed[r] = fmt.Errorf("decrypt: unwrap for tenant %s: %w", tenant, cerr)
				case i >= len(res):
					failed[r] = fmt.Errorf("decrypt: tenant %s: short unwrap result: %w", tenant, kms.ErrUnavailable)
				case res[i].Err != nil:
					failed[r] = fmt.Errorf("decrypt: unwrap: %w", res[i].Err)
				default:
					block, err := aes.NewCipher(res[i].DEK)
					kms.Zero(res[i].DEK)
					if err != nil {
						failed[r] = fmt.Errorf("decrypt: unwrapped DEK is not an AES key: %w", kms.ErrInvalidCiphertext)
						continue
					}
					aeads[r], _ = cipher.NewGCM(block)
				}
			}
		}
	}

	for i, e := range envs {
		if e == nil {
			continue
		}
		ref := dekRef{string(e.Key.WrappedDEK), string(e.Scope.KMSContext())}
		if err := failed[ref]; err != nil {
			errs[i] = err
			continue
		}
		bodies[i], errs[i] = envelope.Open(aeads[ref], e, items[i].MessageID)
	}
	return bodies, errs
}
