package workflow

import (
	"context"
	"path/filepath"
	"sync"
	"testing"
	"time"

	"github.com/crmguard/crmguard/caddymodule/authn"
	"github.com/crmguard/crmguard/caddymodule/store"
	"github.com/crmguard/crmguard/rules"
)

// fixture is two Services (two instances) on one store, with a shared
// clock and one audit list.
type fixture struct {
	set   *rules.Set
	a, b  *Service
	mu    sync.Mutex
	now   time.Time
	audit []*Audit
}

func newFixture(t *testing.T) *fixture {
	t.Helper()
	set, err := rules.LoadFile("../testdata/workflow.yaml")
	if err != nil {
		t.Fatal(err)
	}
	f := &fixture{set: set, now: time.Date(2026, 11, 20, 2, 0, 0, 0, time.UTC)}
	clock := func() time.Time { f.mu.Lock(); defer f.mu.Unlock(); return f.now }
	st, err := store.OpenBolt(filepath.Join(t.TempDir(), "state.db"), store.Options{Now: clock})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = st.Close() })
	mk := func() *Service {
		s, err := New(Options{Store: st, Rules: func() *rules.Set { return set }, Now: clock, SweepEvery: -1,
			Audit: func(a *Audit) { f.mu.Lock(); defer f.mu.Unlock(); f.audit = append(f.audit, a) }})
		if err != nil {
			t.Fatal(err)
		}
		t.Cleanup(func() { _ = s.Close() })
		return s
	}
	f.a, f.b = mk(), mk()
	return f
}

func (f *fixture) caller(id string, roles []string, teams ...string) *Caller {
	attrs := map[string]any{"teams": toAny(teams)}
	u := f.set.UserFromRoles(id, roles, attrs, true, f.now.Add(-time.Minute))
	return &Caller{User: u, Identity: &authn.Identity{Subject: id, SessionID: "s-" + id}, Set: f.set}
}

func toAny(ss []string) []any {
	out := make([]any, len(ss))
	for i, s := range ss {
		out[i] = s
	}
	return out
}

func TestTwoManagersApprovingTheSameStepAtOnceCountOnce(t *testing.T) {
	f := newFixture(t)
	ctx := context.Background()
	a, _, err := f.a.RequestExport(ctx, f.caller("zhang", []string{"sales"}, "east"), "GET", "/api/customers/export?team=east", "visit plan")
	if err != nil {
		t.Fatal(err)
	}
	var wg sync.WaitGroup
	results := make(chan error, 2)
	for i, name := range []string{"wang", "wu"} {
		svc := f.a
		if i == 1 {
			svc = f.b
		}
		c := f.caller(name, []string{"sales_manager"}, "east")
		wg.Add(1)
		go func() {
			defer wg.Done()
			_, _, err := svc.Decide(ctx, c, a.ID, true, "")
			results <- err
		}()
	}
	wg.Wait()
	close(results)
	ok := 0
	for err := range results {
		if err == nil {
			ok++
		} else if s := statusOf(err); s != 403 && s != 409 {
			t.Errorf("the other approval failed with %d: %v", s, err)
		}
	}
	got, err := f.b.GetApproval(ctx, f.caller("zhang", []string{"sales"}, "east"), a.ID)
	if err != nil {
		t.Fatal(err)
	}
	if ok != 1 || got.Steps[0].Status != StepApproved || got.Steps[1].Status != StepWaiting {
		t.Fatalf("%d approvals succeeded; steps %+v", ok, got.Steps)
	}
}

func TestExpiriesAreAuditedOnceWhenTwoInstancesSweep(t *testing.T) {
	f := newFixture(t)
	ctx := context.Background()
	for range 5 {
		if _, _, err := f.a.RequestExport(ctx, f.caller("zhang", []string{"sales"}, "east"), "GET", "/api/customers/export", "visit plan"); err != nil {
			t.Fatal(err)
		}
	}
	f.mu.Lock()
	f.now = f.now.Add(PendingFor + time.Minute)
	f.mu.Unlock()
	var wg sync.WaitGroup
	for _, s := range []*Service{f.a, f.b, f.a, f.b} {
		wg.Add(1)
		go func() {
			defer wg.Done()
			if err := s.Sweep(ctx); err != nil {
				t.Error(err)
			}
		}()
	}
	wg.Wait()
	f.mu.Lock()
	defer f.mu.Unlock()
	seen := map[string]int{}
	for _, a := range f.audit {
		if a.Action == "expired" {
			seen[a.ID]++
		}
	}
	if len(seen) != 5 {
		t.Fatalf("%d requests audited as expired, want 5", len(seen))
	}
	for id, n := range seen {
		if n != 1 {
			t.Errorf("request %s audited as expired %d times", id, n)
		}
	}
}

func TestIDsThatCannotBeRecordsAreNotLookedUp(t *testing.T) {
	f := newFixture(t)
	c := f.caller("zhang", []string{"sales"}, "east")
	for _, id := range []string{"", "..", "a/b", "AP-UPPER", "ap-\x00", "open", string(make([]byte, 80))} {
		if _, err := f.a.GetApproval(context.Background(), c, id); statusOf(err) != 404 {
			t.Errorf("GetApproval(%q): %v, want 404", id, err)
		}
		if _, err := f.a.GetElevation(context.Background(), c, id); statusOf(err) != 404 {
			t.Errorf("GetElevation(%q): %v, want 404", id, err)
		}
	}
}
