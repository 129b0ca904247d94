package client

import (
	"encoding/base64"
	"encoding/json"
	"errors"
	"fmt"
	"net/http"
	"strconv"
	"strings"
	"time"

	"github.com/envfabric/envfabric/shared/errcode"
)

// Error is an answer of the API that is not a success: the error body
// {"error": {"code", "message", "request_id", ...}} with the HTTP status it came with. Callers
// reach it with errors.As and branch on Code; the facts some codes carry (who holds a lock, a
// timed-out run's partial output, uv's words) are read with the methods below.
type Error struct {
	StatusCode int          // the HTTP status
	Code       errcode.Code // one of shared/errcode's codes; empty when the body was not the API's
	Message    string
	RequestID  string // the request's X-Request-ID, as the server recorded it
	// RetryAfter is the server's Retry-After header (423 ENV_LOCKED), zero when it sent none.
	RetryAfter time.Duration
	// Body is the error object as sent ({"code", "message", ...}; the whole body when it was
	// not the API's error shape), for the fields without a method here.
	Body json.RawMessage
}

func (e *Error) Error() string {
	var b strings.Builder
	if e.Code != "" {
		b.WriteString(string(e.Code))
	} else {
		fmt.Fprintf(&b, "HTTP %d", e.StatusCode)
	}
	if e.Message != "" {
		b.WriteString(": " + e.Message)
	}
	if e.RequestID != "" {
		b.WriteString(" (request " + e.RequestID + ")")
	}
	return b.String()
}

// CodeOf is the API error code err carries, or "" when err is not an answer of the API (a
// connection refused, a cancelled context).
func CodeOf(err error) errcode.Code {
	var e *Error
	if errors.As(err, &e) {
		return e.Code
	}
	return ""
}

// HeldBy is the operation holding an environment, from a 423 ENV_LOCKED answer.
type HeldBy struct {
	Operation   string    `json:"operation"`
	OperationID int64     `json:"operation_id"`
	ExpiresAt   time.Time `json:"expires_at"`
}

// HeldBy says which operation holds the environment, when the answer names one.
func (e *Error) HeldBy() (HeldBy, bool) {
	var b struct {
		HeldBy *HeldBy `json:"held_by"`
	}
	if json.Unmarshal(e.Body, &b) != nil || b.HeldBy == nil {
		return HeldBy{}, false
	}
	return *b.HeldBy, true
}

// UVOutput is uv's output the answer carries (PACKAGE_RESOLUTION_FAILED, UV_EXECUTION_ERROR), or "".
func (e *Error) UVOutput() string {
	var b struct {
		UVOutput string `json:"uv_output"`
	}
	_ = json.Unmarshal(e.Body, &b)
	return b.UVOutput
}

// RunTimeout is what a run that passed its timeout printed before it was killed, from a 504
// EXECUTION_TIMEOUT answer.
type RunTimeout struct {
	Stdout, Stderr []byte
	DurationMS     int64
	Timeout        float64 // seconds
}

// RunTimeout returns the partial output of a timed-out run, when the answer is one.
func (e *Error) RunTimeout() (RunTimeout, bool) {
	if e.Code != errcode.ExecutionTimeout {
		return RunTimeout{}, false
	}
	var b struct {
		Stdout         string  `json:"stdout"`
		StdoutEncoding string  `json:"stdout_encoding"`
		Stderr         string  `json:"stderr"`
		StderrEncoding string  `json:"stderr_encoding"`
		DurationMS     int64   `json:"duration_ms"`
		Timeout        float64 `json:"timeout"`
	}
	if json.Unmarshal(e.Body, &b) != nil {
		return RunTimeout{}, false
	}
	out := RunTimeout{DurationMS: b.DurationMS, Timeout: b.Timeout}
	var err1, err2 error
	out.Stdout, err1 = decodeOutput(b.Stdout, b.StdoutEncoding)
	out.Stderr, err2 = decodeOutput(b.Stderr, b.StderrEncoding)
	if err1 != nil || err2 != nil {
		return RunTimeout{}, false
	}
	return out, true
}

// decodeError reads a failed answer. A body that is not the API's error shape (a proxy's HTML
// page) still gives an *Error, with the status and the start of the body as its message.
func decodeError(resp *http.Response, body []byte) *Error {
	e := &Error{StatusCode: resp.StatusCode, RequestID: resp.Header.Get("X-Request-ID"),
		RetryAfter: parseRetryAfter(resp.Header.Get("Retry-After"), time.Now())}
	var wire struct {
		Error json.RawMessage `json:"error"`
	}
	var fields struct {
		Code      errcode.Code `json:"code"`
		Message   string       `json:"message"`
		RequestID string       `json:"request_id"`
	}
	if json.Unmarshal(body, &wire) == nil && len(wire.Error) > 0 && json.Unmarshal(wire.Error, &fields) == nil && fields.Code != "" {
		e.Code, e.Message, e.Body = fields.Code, fields.Message, wire.Error
		if fields.RequestID != "" {
			e.RequestID = fields.RequestID
		}
		return e
	}
	msg := strings.TrimSpace(string(body))
	if len(msg) > 200 {
		msg = msg[:200] + "…"
	}
	if msg == "" {
		msg = http.StatusText(resp.StatusCode)
	}
	e.Message = "unexpected answer: " + msg
	if json.Valid(body) {
		e.Body = body
	}
	return e
}

// parseRetryAfter reads Retry-After as seconds or an HTTP date; zero when absent or unreadable.
func parseRetryAfter(v string, now time.Time) time.Duration {
	v = strings.TrimSpace(v)
	if v == "" {
		return 0
	}
	if n, err := strconv.ParseInt(v, 10, 64); err == nil {
		if n < 0 {
			return 0
		}
		return time.Duration(n) * time.Second
	}
	if t, err := http.ParseTime(v); err == nil {
		if d := t.Sub(now); d > 0 {
			return d
		}
	}
	return 0
}

// decodeOutput turns a run's output stream back into its bytes: text as it is, base64 decoded.
func decodeOutput(s, encoding string) ([]byte, error) {
	switch encoding {
	case "", EncodingUTF8:
		return []byte(s), nil
	case EncodingBase64:
		b, err := base64.StdEncoding.DecodeString(s)
		if err != nil {
			return nil, fmt.Errorf("decoding base64 output: %w", err)
		}
		return b, nil
	}
	return nil, fmt.Errorf("unknown output encoding %q", encoding)
}
