package main

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net/http"
	"strings"
	"time"
)

// client calls the Cloudflare API v4 at baseURL and unwraps its envelope
// {"success", "errors": [{"code", "message", "error_chain"}], "result"}.
//
// Like the Cloudflare SDK the Terraform provider uses, it retries twice, with backoff, on a network
// error, 429 and 5xx; any other refusal is returned at once as an *apiError carrying Cloudflare's
// status, codes and messages.
type client struct {
	baseURL string
	headers http.Header // credentials and User-Agent
	http    *http.Client
	retries int
	backoff time.Duration
}

type apiErrorDetail struct {
	Code    int              `json:"code"`
	Message string           `json:"message"`
	Chain   []apiErrorDetail `json:"error_chain,omitempty"`
}

type apiError struct {
	method, path string
	status       int
	details      []apiErrorDetail
}

var errNotFound = errors.New("not found")

func (e *apiError) Error() string {
	var parts []string
	for _, d := range e.details {
		parts = append(parts, describeDetail(d))
	}
	if len(parts) == 0 {
		parts = append(parts, "no error detail in the response")
	}
	return fmt.Sprintf("Cloudflare API %s %s: HTTP %d %s: %s", e.method, e.path, e.status,
		http.StatusText(e.status), strings.Join(parts, "; "))
}

func describeDetail(d apiErrorDetail) string {
	text := fmt.Sprintf("[%d] %s", d.Code, d.Message)
	for _, c := range d.Chain {
		text += " (" + describeDetail(c) + ")"
	}
	return text
}

func isNotFound(err error) bool {
	var apiErr *apiError
	return errors.Is(err, errNotFound) || (errors.As(err, &apiErr) && apiErr.status == http.StatusNotFound)
}

type envelope struct {
	Success bool             `json:"success"`
	Errors  []apiErrorDetail `json:"errors"`
	Result  json.RawMessage  `json:"result"`
}

func (c *client) call(ctx context.Context, method, path string, body any) (map[string]any, error) {
	var payload []byte
	if body != nil {
		encoded, err := json.Marshal(body)
		if err != nil {
			return nil, fmt.Errorf("encoding the request body for %s %s: %w", method, path, err)
		}
		payload = encoded
	}
	url := strings.TrimSuffix(c.baseURL, "/") + "/" + path
	var lastErr error
	for attempt := 0; attempt <= c.retries; attempt++ {
		if attempt > 0 {
			select {
			case <-ctx.Done():
				return nil, ctx.Err()
			case <-time.After(c.backoff << (attempt - 1)):
			}
		}
		result, retry, err := c.once(ctx, method, url, path, payload)
		if err == nil || !retry {
			return result, err
		}
		lastErr = err
	}
	return nil, lastErr
}

func (c *client) once(ctx context.Context, method, url, path string, payload []byte) (map[string]any, bool, error) {
	var reader io.Reader
	if payload != nil {
		reader = bytes.NewReader(payload)
	}
	request, err := http.NewRequestWithContext(ctx, method, url, reader)
	if err != nil {
		return nil, false, fmt.Errorf("Cloudflare API %s %s: %w", method, path, err)
	}
	for key, values := range c.headers {
		request.Header[key] = values
	}
	if payload != nil {
		request.Header.Set("Content-Type", "application/json")
	}
	response, err := c.http.Do(request)
	if err != nil {
		return nil, ctx.Err() == nil, fmt.Errorf("Cloudflare API %s %s: %w", method, path, err)
	}
	defer response.Body.Close()
	raw, err := io.ReadAll(io.LimitReader(response.Body, 32<<20))
	if err != nil {
		return nil, true, fmt.Errorf("Cloudflare API %s %s: reading the response: %w", method, path, err)
	}
	retry := response.StatusCode == http.StatusTooManyRequests || response.StatusCode >= 500
	var env envelope
	if err := json.Unmarshal(raw, &env); err != nil {
		return nil, retry, fmt.Errorf("Cloudflare API %s %s: HTTP %d, not a Cloudflare API answer: %.200q",
			method, path, response.StatusCode, raw)
	}
	if response.StatusCode >= 400 || !env.Success {
		return nil, retry, &apiError{method: method, path: path, status: response.StatusCode, details: env.Errors}
	}
	result := map[string]any{}
	if len(env.Result) > 0 && string(env.Result) != "null" {
		if err := json.Unmarshal(env.Result, &result); err != nil {
			return nil, false, fmt.Errorf("Cloudflare API %s %s: result is not an object: %w", method, path, err)
		}
	}
	return result, false, nil
}
