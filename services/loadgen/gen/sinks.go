package gen

import (
	"bytes"
	"context"
	"encoding/json"
	"fmt"
	"io"
	"net/http"
	"net/url"
	"strings"
	"time"

	byokv1 "github.com/byok-io/byok/pkg/gen/byokv1"
	"github.com/byok-io/byok/services/ingest/api"
)

// HTTPSink posts each batch to the ingest service's POST /v1/messages:batch.
type HTTPSink struct {
	url    string
	client *http.Client
}

var _ Sink = (*HTTPSink)(nil)

// NewHTTPSink returns a sink posting to the ingest service at baseURL (e.g.
// "http://127.0.0.1:8080"). With a nil client it uses one that keeps enough idle connections for
// many concurrent senders (http.DefaultClient keeps two per host) and gives up on a request
// after a minute.
func NewHTTPSink(baseURL string, client *http.Client) (*HTTPSink, error) {
	u, err := url.Parse(baseURL)
	if err != nil || (u.Scheme != "http" && u.Scheme != "https") || u.Host == "" {
		return nil, fmt.Errorf("ingest URL %q is not an http(s) URL with a host", baseURL)
	}
	if client == nil {
		t := http.DefaultTransport.(*http.Transport).Clone()
		t.MaxIdleConnsPerHost = 256
		client = &http.Client{Transport: t, Timeout: time.Minute}
	}
	return &HTTPSink{url: strings.TrimSuffix(baseURL, "/") + "/v1/messages:batch", client: client}, nil
}

// StatusError is an answer from the ingest service other than 202.
type StatusError struct {
	Code   int
	Reason string // the service's error text; it never quotes a body
}

func (e *StatusError) Error() string { return fmt.Sprintf("ingest answered %d: %s", e.Code, e.Reason) }

// Send posts events as one batch and checks that every one was accepted.
func (s *HTTPSink) Send(ctx context.Context, events []*byokv1.MessageEvent) error {
	req := struct {
		Messages []api.Message `json:"messages"`
	}{Messages: make([]api.Message, len(events))}
	for i, e := range events {
		req.Messages[i] = api.MessageFromEvent(e)
	}
	body, err := json.Marshal(req)
	if err != nil {
		return fmt.Errorf("encode batch: %w", err)
	}
	hr, err := http.NewRequestWithContext(ctx, http.MethodPost, s.url, bytes.NewReader(body))
	if err != nil {
		return err
	}
	hr.Header.Set("Content-Type", "application/json")
	resp, err := s.client.Do(hr)
	if err != nil {
		return fmt.Errorf("post batch: %w", err)
	}
	defer resp.Body.Close()
	answer, err := io.ReadAll(io.LimitReader(resp.Body, 1<<20))
	if err != nil {
		return fmt.Errorf("read answer: %w", err)
	}
	if resp.StatusCode != http.StatusAccepted {
		var e api.ErrorResponse
		if json.Unmarshal(answer, &e) != nil || e.Error == "" {
			e.Error = http.StatusText(resp.StatusCode)
		}
		return &StatusError{Code: resp.StatusCode, Reason: e.Error}
	}
	var ok api.BatchResponse
	if err := json.Unmarshal(answer, &ok); err != nil {
		return fmt.Errorf("decode answer: %w", err)
	}
	if len(ok.MessageIDs) != len(events) {
		return fmt.Errorf("ingest accepted %d of %d messages", len(ok.MessageIDs), len(events))
	}
	return nil
}

// KafkaSink publishes each batch straight to the plaintext topic with Publisher, usually a
// *producer.Publisher.
type KafkaSink struct {
	Publisher api.Publisher
}

var _ Sink = KafkaSink{}

// Send publishes events in one call.
func (k KafkaSink) Send(ctx context.Context, events []*byokv1.MessageEvent) error {
	return k.Publisher.Publish(ctx, events...)
}
