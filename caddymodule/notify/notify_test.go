package notify

import (
	"encoding/json"
	"io"
	"net/http"
	"net/http/httptest"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/caddyserver/caddy/v2"
	"github.com/caddyserver/caddy/v2/caddyconfig/caddyfile"
	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/testutil"
)

// receiver is an httptest webhook that answers with the statuses in
// answers, in turn (the last one repeats), and hands every request it
// got to got.
type receiver struct {
	mu      sync.Mutex
	answers []int
	calls   int
	got     chan received
	// hold, when set, keeps every request waiting until it is closed.
	hold chan struct{}
}

type received struct {
	header http.Header
	event  Event
	raw    string
}

func newReceiver(t *testing.T, answers ...int) (*receiver, *httptest.Server) {
	t.Helper()
	rc := &receiver{answers: answers, got: make(chan received, 100)}
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		body, _ := io.ReadAll(r.Body)
		var ev Event
		if err := json.Unmarshal(body, &ev); err != nil {
			t.Errorf("the webhook body is not an event: %v: %s", err, body)
		}
		rc.mu.Lock()
		status := http.StatusNoContent
		if len(rc.answers) > 0 {
			status = rc.answers[min(rc.calls, len(rc.answers)-1)]
		}
		rc.calls++
		hold := rc.hold
		rc.mu.Unlock()
		rc.got <- received{header: r.Header.Clone(), event: ev, raw: string(body)}
		if hold != nil {
			<-hold
		}
		w.WriteHeader(status)
	}))
	t.Cleanup(srv.Close)
	return rc, srv
}

// next waits for the receiver's next request.
func (rc *receiver) next(t *testing.T) received {
	t.Helper()
	select {
	case r := <-rc.got:
		return r
	case <-time.After(10 * time.Second):
		t.Fatal("the webhook got no request within 10s")
	}
	return received{}
}

func failures() *prometheus.CounterVec {
	return prometheus.NewCounterVec(prometheus.CounterOpts{Name: "crmguard_notify_failures_total", Help: "test"}, []string{"reason"})
}

// noWait retries at once (the tests synchronise on the receiver).
func noWait(int) time.Duration { return 0 }

func start(t *testing.T, cfg Config, fails *prometheus.CounterVec) *Notifier {
	t.Helper()
	n, err := New(cfg, Options{Failures: fails, Backoff: noWait, Drain: 2 * time.Second})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = n.Close() })
	return n
}

func waitingEvent() Event {
	return Event{Type: ApprovalWaiting, Text: "zhang asks to export customers: waits for your approval.", ID: "a1",
		Link: "/.crmguard/approvals/a1", To: Recipients{Roles: []string{"sales_manager"}}, Data: map[string]string{"purpose": "quarterly review"}}
}

func TestAnEventReachesTheWebhookAsJSONWithItsHeaders(t *testing.T) {
	rc, srv := newReceiver(t)
	n := start(t, Config{Webhooks: []Webhook{{URL: srv.URL + "/hook", Headers: map[string]string{"Authorization": "Bearer s3cret"}}}}, failures())
	n.Notify(waitingEvent())
	got := rc.next(t)
	if got.header.Get("Authorization") != "Bearer s3cret" || got.header.Get("Content-Type") != "application/json" {
		t.Errorf("headers %v", got.header)
	}
	ev := got.event
	if ev.Type != ApprovalWaiting || ev.ID != "a1" || ev.Link != "/.crmguard/approvals/a1" || ev.To.Roles[0] != "sales_manager" || ev.Data["purpose"] != "quarterly review" {
		t.Errorf("event %+v", ev)
	}
	if ev.Time.IsZero() || ev.Time.Location() != time.UTC {
		t.Errorf("time %v, want now in UTC", ev.Time)
	}
}

func TestDeliveryRetriesAndGivesUp(t *testing.T) {
	cases := []struct {
		name     string
		answers  []int
		attempts int
		calls    int     // requests the receiver sees
		failed   float64 // undeliverable count afterwards
	}{
		{name: "a receiver that fails twice then succeeds gets the event on the third try", answers: []int{500, 503, 204}, attempts: 5, calls: 3},
		{name: "a receiver that asks to slow down is tried again", answers: []int{429, 200}, attempts: 5, calls: 2},
		{name: "a receiver that keeps failing is tried attempts times and the event counted as undeliverable", answers: []int{502}, attempts: 3, calls: 3, failed: 1},
		{name: "a receiver that refuses the event with 400 is not tried again", answers: []int{400}, attempts: 5, calls: 1, failed: 1},
	}
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			rc, srv := newReceiver(t, c.answers...)
			fails := failures()
			n := start(t, Config{Webhooks: []Webhook{{URL: srv.URL}}, Attempts: c.attempts}, fails)
			n.Notify(waitingEvent())
			for i := 0; i < c.calls; i++ {
				if ev := rc.next(t).event; ev.ID != "a1" {
					t.Fatalf("attempt %d carried %+v", i+1, ev)
				}
			}
			// Close waits for the worker: every attempt and count is done.
			if err := n.Close(); err != nil {
				t.Fatal(err)
			}
			if extra := len(rc.got); extra != 0 {
				t.Errorf("%d more requests than %d", extra, c.calls)
			}
			if got := testutil.ToFloat64(fails.WithLabelValues(ReasonUndeliverable)); got != c.failed {
				t.Errorf("undeliverable %v, want %v", got, c.failed)
			}
		})
	}
}

func TestAFullQueueDropsEventsWithoutBlocking(t *testing.T) {
	rc, srv := newReceiver(t)
	rc.hold = make(chan struct{})
	fails := failures()
	n := start(t, Config{Webhooks: []Webhook{{URL: srv.URL}}, Queue: 1}, fails)
	n.Notify(Event{Type: "first"})
	rc.next(t)                      // the worker holds the first event: the queue is empty
	n.Notify(Event{Type: "second"}) // fills the queue
	done := make(chan struct{})
	go func() {
		n.Notify(Event{Type: "third"}) // dropped, without waiting
		n.Notify(Event{Type: "fourth"})
		close(done)
	}()
	select {
	case <-done:
	case <-time.After(5 * time.Second):
		t.Fatal("Notify blocked on a full queue")
	}
	if got := testutil.ToFloat64(fails.WithLabelValues(ReasonQueueFull)); got != 2 {
		t.Errorf("queue_full %v, want 2", got)
	}
	close(rc.hold)
	if second := rc.next(t).event.Type; second != "second" {
		t.Errorf("next event %q, want the queued second one", second)
	}
}

func TestASlowWebhookDoesNotDelayAnother(t *testing.T) {
	slow, slowSrv := newReceiver(t)
	slow.hold = make(chan struct{})
	defer close(slow.hold)
	fast, fastSrv := newReceiver(t)
	n := start(t, Config{Webhooks: []Webhook{{URL: slowSrv.URL}, {URL: fastSrv.URL}}}, failures())
	n.Notify(Event{Type: "a"})
	n.Notify(Event{Type: "b"})
	slow.next(t)
	if a, b := fast.next(t).event.Type, fast.next(t).event.Type; a != "a" || b != "b" {
		t.Errorf("the fast webhook got %q then %q, want a then b in order", a, b)
	}
}

func TestCloseDeliversWhatIsQueuedThenDropsLaterEvents(t *testing.T) {
	rc, srv := newReceiver(t)
	fails := failures()
	n := start(t, Config{Webhooks: []Webhook{{URL: srv.URL}}}, fails)
	for range 3 {
		n.Notify(waitingEvent())
	}
	if err := n.Close(); err != nil {
		t.Fatal(err)
	}
	if len(rc.got) != 3 {
		t.Errorf("%d events delivered before Close returned, want 3", len(rc.got))
	}
	n.Notify(waitingEvent())
	if got := testutil.ToFloat64(fails.WithLabelValues(ReasonClosed)); got != 1 {
		t.Errorf("closed %v, want 1 (the event after Close)", got)
	}
	var nilNotifier *Notifier
	nilNotifier.Notify(waitingEvent()) // drops, does not panic
}

func TestCloseAbandonsAStuckDeliveryAfterTheDrainTime(t *testing.T) {
	rc, srv := newReceiver(t)
	rc.hold = make(chan struct{})
	defer close(rc.hold)
	fails := failures()
	n, err := New(Config{Webhooks: []Webhook{{URL: srv.URL}}}, Options{Failures: fails, Backoff: noWait, Drain: 50 * time.Millisecond})
	if err != nil {
		t.Fatal(err)
	}
	n.Notify(Event{Type: "stuck"})
	rc.next(t)
	n.Notify(Event{Type: "queued"})
	if err := n.Close(); err != nil {
		t.Fatal(err)
	}
	if got := testutil.ToFloat64(fails.WithLabelValues(ReasonClosed)); got != 2 {
		t.Errorf("closed %v, want 2 (the stuck and the queued event)", got)
	}
}

func TestConfig(t *testing.T) {
	cases := []struct {
		name    string
		src     string
		want    Config
		wantErr string
	}{
		{name: "a webhook with headers is read", src: `notify {
	webhook https://hooks.example.com/crm {
		header Authorization "Bearer {env.HOOK_TOKEN}"
		header X-Team crm
	}
	queue 50
	attempts 3
	timeout 2s
}`, want: Config{Webhooks: []Webhook{{URL: "https://hooks.example.com/crm", Headers: map[string]string{"Authorization": "Bearer {env.HOOK_TOKEN}", "X-Team": "crm"}}}, Queue: 50, Attempts: 3, Timeout: caddy.Duration(2 * time.Second)}},
		{name: "two webhooks without blocks are read", src: "notify {\n webhook http://a.example/x\n webhook {env.HOOK_URL}\n}",
			want: Config{Webhooks: []Webhook{{URL: "http://a.example/x"}, {URL: "{env.HOOK_URL}"}}}},
		{name: "a block without webhook is refused", src: "notify {\n queue 5\n}", wantErr: "names no webhook"},
		{name: "an unknown subdirective is refused", src: "notify {\n webhook http://a/ {\n method PUT\n }\n}", wantErr: `unknown subdirective "method"`},
		{name: "a header without a value is refused", src: "notify {\n webhook http://a/ {\n header X\n }\n}", wantErr: "a name and a value"},
		{name: "a queue of zero is refused", src: "notify {\n webhook http://a/\n queue 0\n}", wantErr: "not a positive number"},
	}
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			d := caddyfile.NewTestDispenser(c.src)
			d.Next()
			var got Config
			err := got.UnmarshalCaddyfile(d)
			if c.wantErr != "" {
				if err == nil || !strings.Contains(err.Error(), c.wantErr) {
					t.Fatalf("error %v, want one saying %q", err, c.wantErr)
				}
				return
			}
			if err != nil {
				t.Fatal(err)
			}
			gj, _ := json.Marshal(got)
			wj, _ := json.Marshal(c.want)
			if string(gj) != string(wj) {
				t.Errorf("got  %s\nwant %s", gj, wj)
			}
		})
	}
}

func TestValidateAfterPlaceholders(t *testing.T) {
	t.Setenv("CRMGUARD_TEST_HOOK", "https://hooks.example.com/x?token=abc")
	t.Setenv("CRMGUARD_TEST_TOKEN", "t0k")
	c := Config{Webhooks: []Webhook{{URL: "{env.CRMGUARD_TEST_HOOK}", Headers: map[string]string{"Authorization": "Bearer {env.CRMGUARD_TEST_TOKEN}"}}}}
	r := c.Replace(caddy.NewReplacer())
	if r.Webhooks[0].URL != "https://hooks.example.com/x?token=abc" || r.Webhooks[0].Headers["Authorization"] != "Bearer t0k" {
		t.Errorf("replaced %+v", r.Webhooks[0])
	}
	if c.Webhooks[0].URL != "{env.CRMGUARD_TEST_HOOK}" {
		t.Error("Replace changed the original")
	}
	bad := []struct {
		name string
		cfg  Config
		want string
	}{
		{name: "a URL that is not http is refused", cfg: Config{Webhooks: []Webhook{{URL: "ftp://a/"}}}, want: "not an http or https URL"},
		{name: "an unset placeholder leaves no URL and is refused", cfg: Config{Webhooks: []Webhook{{URL: ""}}}, want: "not an http or https URL"},
		{name: "a header the notifier sets is refused", cfg: Config{Webhooks: []Webhook{{URL: "http://a/", Headers: map[string]string{"content-type": "text/plain"}}}}, want: "set by the notifier"},
		{name: "a secret in a bad URL is not repeated", cfg: Config{Webhooks: []Webhook{{URL: "ftp://user:pw@a/?token=zzz"}}}, want: `"ftp://a/"`},
	}
	for _, b := range bad {
		t.Run(b.name, func(t *testing.T) {
			err := b.cfg.Validate()
			if err == nil || !strings.Contains(err.Error(), b.want) {
				t.Fatalf("error %v, want one saying %q", err, b.want)
			}
			if strings.Contains(err.Error(), "pw") || strings.Contains(err.Error(), "zzz") {
				t.Errorf("error %q repeats a secret", err)
			}
		})
	}
}
