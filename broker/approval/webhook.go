package approval

import (
	"bytes"
	"context"
	"crypto/hmac"
	"crypto/sha256"
	"encoding/hex"
	"encoding/json"
	"fmt"
	"io"
	"net/http"
	"strconv"
	"time"
)

// Webhook headers. The signature is "sha256=<hex>" of HMAC-SHA256 under
// the shared secret over "<timestamp>.<body>", so a receiver can refuse
// both forged and replayed notifications (check the timestamp's age).
const (
	HeaderSignature = "X-Mcpbroker-Signature"
	HeaderTimestamp = "X-Mcpbroker-Timestamp"
	HeaderEvent     = "X-Mcpbroker-Event"
)

// Notification is the webhook body.
type Notification struct {
	Event    string    `json:"event"` // approval.requested, approval.decided
	Time     time.Time `json:"time"`
	Approval *Record   `json:"approval"`
	// URL is where an approver decides it (the /approvals page), if known.
	URL string `json:"url,omitempty"`
}

// Webhook posts signed notifications to chat or ticketing systems.
type Webhook struct {
	URL    string
	Secret []byte
	Client *http.Client // nil: a client with a 10 s timeout
}

// String hides the secret.
func (w *Webhook) String() string { return "approval.Webhook{url:" + w.URL + ", secret:<redacted>}" }

// Sign returns the signature header value for body sent at ts.
func Sign(secret []byte, ts int64, body []byte) string {
	m := hmac.New(sha256.New, secret)
	m.Write([]byte(strconv.FormatInt(ts, 10)))
	m.Write([]byte("."))
	m.Write(body)
	return "sha256=" + hex.EncodeToString(m.Sum(nil))
}

// Verify checks a received notification: signature over timestamp and
// body, and a timestamp no older (or newer) than maxAge.
func Verify(secret []byte, sig, ts string, body []byte, now time.Time, maxAge time.Duration) error {
	t, err := strconv.ParseInt(ts, 10, 64)
	if err != nil {
		return fmt.Errorf("webhook timestamp %q: %w", ts, ErrStateInvalid)
	}
	if d := now.Sub(time.Unix(t, 0)); d > maxAge || d < -maxAge {
		return fmt.Errorf("webhook timestamp %s is outside %s: %w", ts, maxAge, ErrStateExpired)
	}
	if !hmac.Equal([]byte(sig), []byte(Sign(secret, t, body))) {
		return fmt.Errorf("webhook signature: %w", ErrStateInvalid)
	}
	return nil
}

// Send posts n and returns an error unless the receiver answers 2xx.
func (w *Webhook) Send(ctx context.Context, n Notification, now time.Time) error {
	body, err := json.Marshal(n)
	if err != nil {
		return err
	}
	req, err := http.NewRequestWithContext(ctx, http.MethodPost, w.URL, bytes.NewReader(body))
	if err != nil {
		return err
	}
	ts := now.Unix()
	req.Header.Set("Content-Type", "application/json")
	req.Header.Set(HeaderTimestamp, strconv.FormatInt(ts, 10))
	req.Header.Set(HeaderSignature, Sign(w.Secret, ts, body))
	req.Header.Set(HeaderEvent, n.Event)
	c := w.Client
	if c == nil {
		c = &http.Client{Timeout: 10 * time.Second}
	}
	resp, err := c.Do(req)
	if err != nil {
		return fmt.Errorf("webhook %s: %w", n.Event, err)
	}
	defer resp.Body.Close()
	_, _ = io.Copy(io.Discard, io.LimitReader(resp.Body, 64<<10))
	if resp.StatusCode/100 != 2 {
		return fmt.Errorf("webhook %s: receiver answered %s", n.Event, resp.Status)
	}
	return nil
}
