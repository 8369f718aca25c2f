package rulescli

import (
	"os"
	"path/filepath"
	"strings"
	"testing"
)

const targetRuleFile = `version: 1
roles: {sales: {}}
routes:
  - id: customers.update
    match: {methods: [PATCH], path: "/api/customers/{id}"}
    allow: [sales]
    target:
      fetch: "/api/customers/{id}"
      allow_if: record.owner_id == user.id
`

const targetCases = `rules: rules.yaml
cases:
  - name: own customer
    user: {id: zhang, roles: [sales]}
    request: {method: PATCH, path: /api/customers/1, body: {notes: x}}
    target_upstream: {status: 200, body: {id: 1, owner_id: zhang}}
    upstream: {status: 200, body: {id: 1, notes: x}}
    expect:
      status: 200
      target_fetched: true
      upstream_called: true
      audit: {route: customers.update, target: {fetched: /api/customers/1, status: 200, allowed: true}}
  - name: team mate's customer
    user: {id: zhang, roles: [sales]}
    request: {method: PATCH, path: /api/customers/2, body: {notes: x}}
    target_upstream: {status: 200, body: {id: 2, owner_id: wu}}
    expect:
      status: 403
      body_includes: [you may not change this record]
      target_fetched: true
      upstream_called: false
      audit: {decision: deny, target: {fetched: /api/customers/2, allowed: false}}
  - name: fetch answer that is not JSON
    user: {id: zhang, roles: [sales]}
    request: {method: PATCH, path: /api/customers/1, body: {notes: x}}
    target_upstream: {status: 200, headers: {Content-Type: text/html}, raw: "<html>owner_id: zhang</html>"}
    expect: {status: 502, target_fetched: true, upstream_called: false}
  - name: no target_upstream given
    user: {id: zhang, roles: [sales]}
    request: {method: PATCH, path: /api/customers/1, body: {notes: x}}
    expect: {status: 502}
  - name: wrong target_fetched
    user: {id: zhang, roles: [sales]}
    request: {method: PATCH, path: /api/customers/1, body: {notes: x}}
    target_upstream: {status: 200, body: {owner_id: zhang}}
    expect: {status: 200, target_fetched: false}
  - name: wrong upstream_called
    user: {id: zhang, roles: [sales]}
    request: {method: PATCH, path: /api/customers/2, body: {notes: x}}
    target_upstream: {status: 200, body: {owner_id: wu}}
    expect: {status: 403, upstream_called: true}
  - name: anonymous request fetches nothing
    request: {method: PATCH, path: /api/customers/1, body: {notes: x}}
    target_upstream: {status: 200, body: {owner_id: zhang}}
    expect: {status: 401, target_fetched: false, upstream_called: false}
`

func TestTargetCasesTellTheRecordFetchFromTheWrite(t *testing.T) {
	runCaseFile(t, targetRuleFile, targetCases, map[string]string{ // case -> a failure it must report ("" passes)
		"own customer":                      "",
		"team mate's customer":              "",
		"fetch answer that is not JSON":     "",
		"no target_upstream given":          "the guard fetched the stored record (GET /api/customers/1) for the route's target, but the case has no target_upstream (or target_upstreams entry) to answer it",
		"wrong target_fetched":              "target_fetched: want false, got true",
		"wrong upstream_called":             "upstream_called: want true, got false",
		"anonymous request fetches nothing": "",
	})
}

// runCaseFile runs a case file against a rule file and checks each case's
// result: want maps a case to a failure it must report ("" passes).
func runCaseFile(t *testing.T, ruleFile, cases string, want map[string]string) {
	t.Helper()
	dir := t.TempDir()
	if err := os.WriteFile(filepath.Join(dir, "rules.yaml"), []byte(ruleFile), 0o600); err != nil {
		t.Fatal(err)
	}
	file := filepath.Join(dir, "cases_test.yaml")
	if err := os.WriteFile(file, []byte(cases), 0o600); err != nil {
		t.Fatal(err)
	}
	results, err := RunFile(file, Options{})
	if err != nil {
		t.Fatal(err)
	}
	if len(results) != len(want) {
		t.Fatalf("%d results, want %d", len(results), len(want))
	}
	for _, r := range results {
		t.Run("the case "+r.Case+" is judged as expected", func(t *testing.T) {
			w, ok := want[r.Case]
			switch {
			case !ok:
				t.Fatalf("unexpected case %q", r.Case)
			case w == "" && !r.Passed():
				t.Errorf("failed: %s", r)
			case w != "" && (r.Passed() || !strings.Contains(strings.Join(r.Failures, "; "), w)):
				t.Errorf("failures %q, want one containing %q", r.Failures, w)
			}
		})
	}
}

func TestATypoInTargetFetchedIsRefused(t *testing.T) {
	dir := t.TempDir()
	if err := os.WriteFile(filepath.Join(dir, "rules.yaml"), []byte(targetRuleFile), 0o600); err != nil {
		t.Fatal(err)
	}
	file := filepath.Join(dir, "typo_test.yaml")
	src := "rules: rules.yaml\ncases:\n  - name: typo\n    request: {method: PATCH, path: /api/customers/1}\n    expect: {target_fetch: true}\n"
	if err := os.WriteFile(file, []byte(src), 0o600); err != nil {
		t.Fatal(err)
	}
	if _, err := RunFile(file, Options{}); err == nil || !strings.Contains(err.Error(), `unknown key "target_fetch" in expect`) {
		t.Errorf("err = %v; want the unknown key named", err)
	}
	src = "rules: rules.yaml\ncases:\n  - name: typo\n    request: {method: PATCH, path: /api/customers/1}\n    target_upstrem: {status: 200}\n    expect: {status: 401}\n"
	if err := os.WriteFile(file, []byte(src), 0o600); err != nil {
		t.Fatal(err)
	}
	if _, err := RunFile(file, Options{}); err == nil || !strings.Contains(err.Error(), "target_upstrem") {
		t.Errorf("err = %v; want the unknown case key named", err)
	}
}

const bulkRuleFile = `version: 1
roles: {sales: {}}
routes:
  - id: customers.bulk
    match: {methods: [POST], path: /api/customers/bulk-update}
    allow: [sales]
    target:
      ids: ids.#
      fetch: "/api/customers/{id}"
      allow_if: record.owner_id == user.id
`

const bulkCases = `rules: rules.yaml
cases:
  - name: own customers
    user: {id: zhang, roles: [sales]}
    request: {method: POST, path: /api/customers/bulk-update, body: {ids: [1, 2], notes: x}}
    target_upstreams:
      /api/customers/1: {status: 200, body: {id: 1, owner_id: zhang}}
      /api/customers/2: {status: 200, body: {id: 2, owner_id: zhang}}
    expect:
      status: 200
      upstream_called: true
      audit: {target: {ids: ["1", "2"], fetches: 2, allowed: true}}
  - name: one customer of a team mate
    user: {id: zhang, roles: [sales]}
    request: {method: POST, path: /api/customers/bulk-update, body: {ids: [1, 2], notes: x}}
    target_upstreams:
      /api/customers/1: {status: 200, body: {id: 1, owner_id: zhang}}
      /api/customers/2: {status: 200, body: {id: 2, owner_id: wu}}
    expect:
      status: 403
      upstream_called: false
      audit: {target: {refused: "2", allowed: false}}
  - name: one fetch without an answer
    user: {id: zhang, roles: [sales]}
    request: {method: POST, path: /api/customers/bulk-update, body: {ids: [1, 3], notes: x}}
    target_upstreams:
      /api/customers/1: {status: 200, body: {id: 1, owner_id: zhang}}
    expect: {status: 502}
`

func TestBulkCasesAnswerEachRecordFetch(t *testing.T) {
	runCaseFile(t, bulkRuleFile, bulkCases, map[string]string{
		"own customers":               "",
		"one customer of a team mate": "",
		"one fetch without an answer": "GET /api/customers/3",
	})
}
