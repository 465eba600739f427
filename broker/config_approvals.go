package broker

import (
	"fmt"
	"net/url"
	"regexp"
	"time"
)

// ApprovalsConfig configures the human-approval stage (approve.go).
//
//	approvals:
//	  timeout: 5m              # default decision deadline; policy: @approval_timeout("2m")
//	  scope_ttl: 1h            # how long a session/task grant lasts; policy: @approval_scope("session")
//	  progress_interval: 10s   # progress notifications while a call waits out of band
//	  approvers:               # who may decide out of band on /approvals and its API
//	    - id: carol
//	      groups: [secops]
//	      token_env: MCPBROKER_APPROVER_CAROL   # or token_file; never inline
//	  webhook:
//	    url: https://chat.example/hooks/approvals
//	    secret_env: MCPBROKER_WEBHOOK_SECRET    # or secret_file
//	  public_url: http://127.0.0.1:7420          # base of links in webhooks
type ApprovalsConfig struct {
	Timeout          Duration         `yaml:"timeout"`
	ScopeTTL         Duration         `yaml:"scope_ttl"`
	ProgressInterval Duration         `yaml:"progress_interval"`
	Approvers        []ApproverConfig `yaml:"approvers"`
	Webhook          *WebhookConfig   `yaml:"webhook"`
	PublicURL        string           `yaml:"public_url"`
	// WebSessionTTL bounds a signed-in approver's cookie session (default 8h).
	WebSessionTTL Duration `yaml:"web_session_ttl"`
}

// ApproverConfig is one out-of-band approver. The token is their
// credential on the /approvals page and API.
type ApproverConfig struct {
	ID        string   `yaml:"id"`
	Groups    []string `yaml:"groups"`
	TokenEnv  string   `yaml:"token_env"`
	TokenFile string   `yaml:"token_file"`
	// Initiators are the initiator IDs this person also acts as (say
	// "okta:carol"): they never approve those initiators' calls.
	Initiators []string `yaml:"initiators"`
	// Tenants, if set, are the only tenants whose approvals this approver
	// sees and decides.
	Tenants []string `yaml:"tenants"`
}

// WebhookConfig is where approval notifications are posted, HMAC-signed
// with the secret.
type WebhookConfig struct {
	URL        string   `yaml:"url"`
	SecretEnv  string   `yaml:"secret_env"`
	SecretFile string   `yaml:"secret_file"`
	Timeout    Duration `yaml:"timeout"`
}

// Approval defaults, applied where the config leaves a zero.
const (
	defaultApprovalTimeout  = 5 * time.Minute
	defaultApprovalScopeTTL = time.Hour
	defaultProgressInterval = 10 * time.Second
	defaultWebSessionTTL    = 8 * time.Hour
)

var approverIDRE = regexp.MustCompile(`^[A-Za-z0-9][A-Za-z0-9_.@:/-]{0,127}$`)

func (c ApprovalsConfig) timeout() time.Duration {
	return orDefault(c.Timeout, defaultApprovalTimeout)
}

func (c ApprovalsConfig) scopeTTL() time.Duration {
	return orDefault(c.ScopeTTL, defaultApprovalScopeTTL)
}

func (c ApprovalsConfig) progressInterval() time.Duration {
	return orDefault(c.ProgressInterval, defaultProgressInterval)
}

func (c ApprovalsConfig) webSessionTTL() time.Duration {
	return orDefault(c.WebSessionTTL, defaultWebSessionTTL)
}

func orDefault(d Duration, def time.Duration) time.Duration {
	if d <= 0 {
		return def
	}
	return time.Duration(d)
}

// validate reports every problem of the approvals section.
func (c *ApprovalsConfig) validate() []error {
	var errs []error
	add := func(format string, args ...any) { errs = append(errs, fmt.Errorf(format, args...)) }
	if c.Timeout < 0 || (c.Timeout > 0 && time.Duration(c.Timeout) < time.Second) || time.Duration(c.Timeout) > 24*time.Hour {
		add("approvals.timeout: %s is not between 1s and 24h", time.Duration(c.Timeout))
	}
	if c.ScopeTTL < 0 || time.Duration(c.ScopeTTL) > 7*24*time.Hour {
		add("approvals.scope_ttl: %s is not between 0s and 168h", time.Duration(c.ScopeTTL))
	}
	if c.ProgressInterval < 0 || (c.ProgressInterval > 0 && time.Duration(c.ProgressInterval) < 100*time.Millisecond) {
		add("approvals.progress_interval: %s is below 100ms", time.Duration(c.ProgressInterval))
	}
	if c.WebSessionTTL < 0 {
		add("approvals.web_session_ttl: must not be negative")
	}
	seen := map[string]int{}
	for i, a := range c.Approvers {
		where := fmt.Sprintf("approvals.approvers[%d]", i)
		if !approverIDRE.MatchString(a.ID) {
			add("%s.id: %q must match %s", where, a.ID, approverIDRE)
		} else if j, dup := seen[a.ID]; dup {
			add("%s.id: duplicate of approvals.approvers[%d]", where, j)
		} else {
			seen[a.ID] = i
		}
		if (a.TokenEnv == "") == (a.TokenFile == "") {
			add("%s: exactly one of token_env or token_file is required (tokens are never inline)", where)
		}
	}
	if w := c.Webhook; w != nil {
		u, err := url.Parse(w.URL)
		if err != nil || (u.Scheme != "http" && u.Scheme != "https") || u.Host == "" {
			add("approvals.webhook.url: %q must be an http:// or https:// URL", w.URL)
		}
		if (w.SecretEnv == "") == (w.SecretFile == "") {
			add("approvals.webhook: exactly one of secret_env or secret_file is required")
		}
		if w.Timeout < 0 {
			add("approvals.webhook.timeout: must not be negative")
		}
	}
	if c.PublicURL != "" {
		if u, err := url.Parse(c.PublicURL); err != nil || (u.Scheme != "http" && u.Scheme != "https") {
			add("approvals.public_url: %q must be an http:// or https:// URL", c.PublicURL)
		}
	}
	return errs
}
