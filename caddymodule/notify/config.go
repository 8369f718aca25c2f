package notify

import (
	"fmt"
	"net/http"
	"net/url"
	"strconv"
	"strings"

	"github.com/caddyserver/caddy/v2"
	"github.com/caddyserver/caddy/v2/caddyconfig/caddyfile"
)

// Config is the `notify { ... }` block of the crm_guard handler.
//
// Caddyfile:
//
//	notify {
//		webhook <url> {
//			header <name> <value>    # repeatable; placeholders like {env.HOOK_TOKEN}
//		}
//		queue 1000                   # events waiting per webhook
//		attempts 5                   # tries per event, with doubling backoff
//		timeout 10s                  # per attempt
//	}
type Config struct {
	// Webhooks receive every event as a JSON POST.
	Webhooks []Webhook `json:"webhooks,omitempty"`
	// Queue is how many events may wait per webhook; more are dropped
	// (logged and counted). Default 1000.
	Queue int `json:"queue,omitempty"`
	// Attempts is how often a delivery is tried before it is given up.
	// Default 5.
	Attempts int `json:"attempts,omitempty"`
	// Timeout bounds one delivery attempt. Default 10s.
	Timeout caddy.Duration `json:"timeout,omitempty"`
}

// Webhook is one receiver.
type Webhook struct {
	// URL is where events are posted (http or https).
	URL string `json:"url"`
	// Headers are sent with every post (for example Authorization).
	Headers map[string]string `json:"headers,omitempty"`
}

// Replace returns a copy of c with placeholders ({env.NAME}, ...) in the
// URLs and header values replaced by repl.
func (c Config) Replace(repl *caddy.Replacer) Config {
	out := c
	out.Webhooks = make([]Webhook, len(c.Webhooks))
	for i, w := range c.Webhooks {
		nw := Webhook{URL: repl.ReplaceKnown(w.URL, "")}
		if len(w.Headers) > 0 {
			nw.Headers = make(map[string]string, len(w.Headers))
			for k, v := range w.Headers {
				nw.Headers[k] = repl.ReplaceKnown(v, "")
			}
		}
		out.Webhooks[i] = nw
	}
	return out
}

// Validate reports the first problem with c.
func (c *Config) Validate() error {
	if c.Queue < 0 || c.Attempts < 0 || c.Timeout < 0 {
		return fmt.Errorf("notify: queue, attempts and timeout must not be negative")
	}
	for i, w := range c.Webhooks {
		u, err := url.Parse(w.URL)
		if err != nil {
			return fmt.Errorf("notify: webhook #%d: %w", i+1, err)
		}
		if (u.Scheme != "http" && u.Scheme != "https") || u.Host == "" {
			return fmt.Errorf("notify: webhook #%d: %q is not an http or https URL", i+1, redact(w.URL))
		}
		for k := range w.Headers {
			if k == "" || strings.ContainsAny(k, " \t\r\n:") {
				return fmt.Errorf("notify: webhook #%d: %q is not a header name", i+1, k)
			}
			if strings.EqualFold(k, "Content-Type") || strings.EqualFold(k, "Content-Length") || strings.EqualFold(k, "Host") {
				return fmt.Errorf("notify: webhook #%d: the header %s is set by the notifier", i+1, http.CanonicalHeaderKey(k))
			}
		}
	}
	return nil
}

// UnmarshalCaddyfile parses a `notify { ... }` block. The dispenser must be
// positioned on the `notify` token.
func (c *Config) UnmarshalCaddyfile(d *caddyfile.Dispenser) error {
	if d.CountRemainingArgs() > 0 {
		return d.ArgErr()
	}
	for nesting := d.Nesting(); d.NextBlock(nesting); {
		switch d.Val() {
		case "webhook":
			if !d.NextArg() {
				return d.ArgErr()
			}
			w := Webhook{URL: d.Val()}
			if d.NextArg() {
				return d.ArgErr()
			}
			for inner := d.Nesting(); d.NextBlock(inner); {
				if d.Val() != "header" {
					return d.Errf("notify: webhook: unknown subdirective %q (want header)", d.Val())
				}
				args := d.RemainingArgs()
				if len(args) != 2 {
					return d.Errf("notify: webhook: header takes a name and a value, got %d arguments", len(args))
				}
				if w.Headers == nil {
					w.Headers = map[string]string{}
				}
				w.Headers[args[0]] = args[1]
			}
			c.Webhooks = append(c.Webhooks, w)
		case "queue", "attempts":
			name := d.Val()
			if !d.NextArg() {
				return d.ArgErr()
			}
			n, err := strconv.Atoi(d.Val())
			if err != nil || n <= 0 {
				return d.Errf("notify: %s %q is not a positive number", name, d.Val())
			}
			if name == "queue" {
				c.Queue = n
			} else {
				c.Attempts = n
			}
			if d.NextArg() {
				return d.ArgErr()
			}
		case "timeout":
			if !d.NextArg() {
				return d.ArgErr()
			}
			dur, err := caddy.ParseDuration(d.Val())
			if err != nil || dur <= 0 {
				return d.Errf("notify: timeout %q is not a positive duration", d.Val())
			}
			c.Timeout = caddy.Duration(dur)
			if d.NextArg() {
				return d.ArgErr()
			}
		default:
			return d.Errf("notify: unknown subdirective %q", d.Val())
		}
	}
	if len(c.Webhooks) == 0 {
		return d.Err("notify: the block names no webhook (webhook <url> { header <name> <value> })")
	}
	// URLs and headers may hold placeholders ({env.HOOK_URL}): Validate
	// runs after they are replaced, when the handler is provisioned.
	return nil
}

// Interface guard.
var _ caddyfile.Unmarshaler = (*Config)(nil)
