// Package crm is a small "legacy" CRM to put crmguard in front of: customers
// with nested contacts, deals, payments, invoices, service tickets and
// conversation notes, behind a JSON API in the shape older CRMs use (list
// envelopes with a total, filters, a search and sorting applied before
// paging by offset/limit, whole records with every sensitive field in
// them), a CSV export, PATCH, DELETE and bulk updates ({"ids": [...],
// fields}), a list filtered by ?ids=1,2,3, and a plain
// HTML interface that loads everything through the JSON API, so that what a
// person sees in the browser is exactly what the proxy let through.
//
// The CRM trusts whoever calls it, as such systems do: it only logs the
// X-CRM-User and X-CRM-Roles headers the proxy sets, to show who acted. It
// must never be reachable except through the proxy.
//
// The data is generated from a seed (see Generate): the same seed on the
// same day gives the same customers.
//
// It is an example for the demo and the integration tests, not a product.
package crm

import (
	"bytes"
	"cmp"
	"encoding/csv"
	"encoding/json"
	"fmt"
	"io"
	"log"
	"net/http"
	"net/url"
	"slices"
	"strconv"
	"strings"
	"sync"
	"time"
)

// Options configure a Server.
type Options struct {
	// Seed makes the generated data; the same seed and day give the same data.
	Seed int64
	// Now is the clock the data is generated around; zero means time.Now().
	Now time.Time
	// Log receives one line per request and one per change; nil means the
	// standard logger.
	Log *log.Logger
}

// Server is the CRM's HTTP handler with its data.
type Server struct {
	mux *http.ServeMux
	log *log.Logger

	mu   sync.RWMutex
	data *Data

	// writes are the last maxWrites requests that were not GET or HEAD.
	writesMu sync.Mutex
	writes   []string
}

// maxWrites bounds the requests Writes remembers.
const maxWrites = 1000

// Writes lists the requests other than GET and HEAD the CRM received, as
// "METHOD /path user=X", oldest first (the last 1000): for tests that must
// show a change never reached the CRM.
func (s *Server) Writes() []string {
	s.writesMu.Lock()
	defer s.writesMu.Unlock()
	return append([]string(nil), s.writes...)
}

// NewServer returns the CRM with data generated from seed around the
// current day, logging to the standard logger.
func NewServer(seed int64) http.Handler { return New(Options{Seed: seed}) }

// New returns the CRM configured by o.
func New(o Options) *Server {
	if o.Now.IsZero() {
		o.Now = time.Now()
	}
	if o.Log == nil {
		o.Log = log.Default()
	}
	s := &Server{mux: http.NewServeMux(), log: o.Log, data: Generate(o.Seed, o.Now)}
	s.routes()
	return s
}

// Data returns a deep copy of the CRM's current data (for tests that need
// the ground truth).
func (s *Server) Data() *Data {
	s.mu.RLock()
	defer s.mu.RUnlock()
	var d Data
	b, _ := json.Marshal(s.data)
	_ = json.Unmarshal(b, &d)
	return &d
}

func (s *Server) routes() {
	m := s.mux
	m.HandleFunc("GET /healthz", func(w http.ResponseWriter, r *http.Request) {
		writeJSON(w, http.StatusOK, map[string]string{"status": "ok"})
	})
	m.HandleFunc("GET /api/whoami", s.whoami)
	m.HandleFunc("GET /api/customers", s.listCustomers)
	m.HandleFunc("GET /api/customers/export", s.exportCustomers)
	m.HandleFunc("POST /api/customers/bulk-update", s.bulkUpdateCustomers)
	m.HandleFunc("GET /api/customers/{id}", s.getCustomer)
	m.HandleFunc("PATCH /api/customers/{id}", s.patchCustomer)
	m.HandleFunc("PUT /api/customers/{id}", s.patchCustomer)
	m.HandleFunc("DELETE /api/customers/{id}", s.deleteCustomer)
	m.HandleFunc("GET /api/customers/{id}/sensitive", s.getSensitive)
	m.HandleFunc("GET /api/deals", s.listDeals)
	m.HandleFunc("GET /api/deals/{id}", s.getDeal)
	m.HandleFunc("PATCH /api/deals/{id}", s.patchDeal)
	m.HandleFunc("PUT /api/deals/{id}", s.patchDeal)
	m.HandleFunc("GET /api/payments", listOf(s, func(d *Data) []*Payment { return d.Payments }, func(p *Payment) int { return p.CustomerID }, func(p *Payment) string { return p.Team }))
	m.HandleFunc("GET /api/payments/{id}", getOf(s, "payment", func(d *Data) []*Payment { return d.Payments }))
	m.HandleFunc("GET /api/invoices", listOf(s, func(d *Data) []*Invoice { return d.Invoices }, func(i *Invoice) int { return i.CustomerID }, nil))
	m.HandleFunc("GET /api/invoices/{id}", getOf(s, "invoice", func(d *Data) []*Invoice { return d.Invoices }))
	m.HandleFunc("GET /api/tickets", listOf(s, func(d *Data) []*Ticket { return d.Tickets }, func(t *Ticket) int { return t.CustomerID }, func(t *Ticket) string { return t.Team }))
	m.HandleFunc("GET /api/tickets/{id}", getOf(s, "ticket", func(d *Data) []*Ticket { return d.Tickets }))
	m.HandleFunc("GET /api/notes", listOf(s, func(d *Data) []*Note { return d.Notes }, func(n *Note) int { return n.CustomerID }, func(n *Note) string { return n.Team }))
	m.HandleFunc("/api/", func(w http.ResponseWriter, r *http.Request) {
		writeError(w, http.StatusNotFound, "no such API: "+r.Method+" "+r.URL.Path)
	})
	s.uiRoutes()
}

// ServeHTTP logs who acted (from X-CRM-User) and serves the request.
func (s *Server) ServeHTTP(w http.ResponseWriter, r *http.Request) {
	if r.Method != http.MethodGet && r.Method != http.MethodHead {
		s.writesMu.Lock()
		s.writes = append(s.writes, r.Method+" "+r.URL.RequestURI()+" user="+r.Header.Get("X-CRM-User"))
		if len(s.writes) > maxWrites {
			s.writes = s.writes[len(s.writes)-maxWrites:]
		}
		s.writesMu.Unlock()
	}
	rec := &statusWriter{ResponseWriter: w, status: http.StatusOK}
	s.mux.ServeHTTP(rec, r)
	s.log.Printf("crm: %s %s user=%q roles=%q -> %d", r.Method, r.URL.RequestURI(),
		r.Header.Get("X-CRM-User"), r.Header.Get("X-CRM-Roles"), rec.status)
}

type statusWriter struct {
	http.ResponseWriter
	status int
}

func (w *statusWriter) WriteHeader(code int) {
	w.status = code
	w.ResponseWriter.WriteHeader(code)
}

// Envelope is the CRM's list answer.
type Envelope[T any] struct {
	// Total is the number of records that match, before paging.
	Total int `json:"total"`
	// Offset is the index of the first record returned.
	Offset int `json:"offset"`
	// Limit is the page size used.
	Limit int `json:"limit"`
	// List holds the page of records.
	List []T `json:"list"`
}

// MaxLimit is the largest page the CRM serves.
const MaxLimit = 1000

func (s *Server) whoami(w http.ResponseWriter, r *http.Request) {
	roles := []string{}
	for _, role := range strings.Split(r.Header.Get("X-CRM-Roles"), ",") {
		if role = strings.TrimSpace(role); role != "" {
			roles = append(roles, role)
		}
	}
	writeJSON(w, http.StatusOK, map[string]any{"user": r.Header.Get("X-CRM-User"), "roles": roles})
}

// The customer list filters as CRMs of its kind do, before paging:
//
//	owner_id=zhang                 one owner
//	team=east,west  team=east&team=west   any of these teams
//	stage=won                      one stage
//	q=张                           name or company contains the text (any case)
//	last_contact_before=RFC3339    last contact before that time
//	sort=-contract_amount,name     order by fields ("-": descending); by id otherwise
func (s *Server) listCustomers(w http.ResponseWriter, r *http.Request) {
	q := r.URL.Query()
	var before time.Time
	if v := q.Get("last_contact_before"); v != "" {
		t, err := time.Parse(time.RFC3339Nano, v)
		if err != nil {
			writeError(w, http.StatusBadRequest, "last_contact_before must be an RFC 3339 time")
			return
		}
		before = t
	}
	teams := listParam(q, "team")
	s.mu.RLock()
	defer s.mu.RUnlock()
	var ids map[string]bool
	if v := q.Get("ids"); v != "" {
		ids = map[string]bool{}
		for _, id := range strings.Split(v, ",") {
			ids[strings.TrimSpace(id)] = true
		}
	}
	var match []*Customer
	for _, c := range s.data.Customers {
		if ids != nil && !ids[strconv.Itoa(c.ID)] {
			continue
		}
		if v := q.Get("owner_id"); v != "" && c.OwnerID != v {
			continue
		}
		if teams != nil && !slices.Contains(teams, c.Team) {
			continue
		}
		if v := q.Get("stage"); v != "" && c.Stage != v {
			continue
		}
		if v := q.Get("q"); v != "" && !strings.Contains(strings.ToLower(c.Name+" "+c.Company), strings.ToLower(v)) {
			continue
		}
		if !before.IsZero() && !c.LastContactAt.Before(before) {
			continue
		}
		match = append(match, c)
	}
	if err := sortCustomers(match, q.Get("sort")); err != nil {
		writeError(w, http.StatusBadRequest, err.Error())
		return
	}
	page(w, r, match)
}

// listParam reads a filter that takes several values, comma-separated or
// repeated; nil when the parameter is absent.
func listParam(q url.Values, name string) []string {
	vs, ok := q[name]
	if !ok {
		return nil
	}
	out := []string{}
	for _, v := range vs {
		out = append(out, strings.Split(v, ",")...)
	}
	return out
}

// customerKeys are the fields the customer list sorts by.
var customerKeys = map[string]func(a, b *Customer) int{
	"id":              func(a, b *Customer) int { return cmp.Compare(a.ID, b.ID) },
	"name":            func(a, b *Customer) int { return strings.Compare(a.Name, b.Name) },
	"company":         func(a, b *Customer) int { return strings.Compare(a.Company, b.Company) },
	"owner_id":        func(a, b *Customer) int { return strings.Compare(a.OwnerID, b.OwnerID) },
	"team":            func(a, b *Customer) int { return strings.Compare(a.Team, b.Team) },
	"stage":           func(a, b *Customer) int { return strings.Compare(a.Stage, b.Stage) },
	"contract_amount": func(a, b *Customer) int { return cmp.Compare(a.ContractAmount, b.ContractAmount) },
	"last_contact_at": func(a, b *Customer) int { return a.LastContactAt.Compare(b.LastContactAt) },
	"created_at":      func(a, b *Customer) int { return a.CreatedAt.Compare(b.CreatedAt) },
}

// sortCustomers orders cs by a sort parameter ("-contract_amount,name"),
// then by id.
func sortCustomers(cs []*Customer, spec string) error {
	if spec == "" {
		return nil
	}
	type key struct {
		cmp  func(a, b *Customer) int
		desc bool
	}
	var keys []key
	for _, f := range strings.Split(spec, ",") {
		desc := strings.HasPrefix(f, "-")
		f = strings.TrimPrefix(f, "-")
		c, ok := customerKeys[f]
		if !ok {
			return fmt.Errorf("cannot sort by %q", f)
		}
		keys = append(keys, key{c, desc})
	}
	slices.SortStableFunc(cs, func(a, b *Customer) int {
		for _, k := range keys {
			if n := k.cmp(a, b); n != 0 {
				if k.desc {
					return -n
				}
				return n
			}
		}
		return cmp.Compare(a.ID, b.ID)
	})
	return nil
}

// page writes one page of records in the list envelope.
func page[T any](w http.ResponseWriter, r *http.Request, all []T) {
	q := r.URL.Query()
	offset, err := intParam(q.Get("offset"), 0)
	if err != nil || offset < 0 {
		writeError(w, http.StatusBadRequest, "offset must be a number >= 0")
		return
	}
	limit, err := intParam(q.Get("limit"), 20)
	if err != nil || limit < 1 || limit > MaxLimit {
		writeError(w, http.StatusBadRequest, fmt.Sprintf("limit must be a number from 1 to %d", MaxLimit))
		return
	}
	env := Envelope[T]{Total: len(all), Offset: offset, Limit: limit, List: []T{}}
	if offset < len(all) {
		env.List = all[offset:min(len(all), offset+limit)]
	}
	writeJSON(w, http.StatusOK, env)
}

func intParam(v string, def int) (int, error) {
	if v == "" {
		return def, nil
	}
	return strconv.Atoi(v)
}

func (s *Server) customer(w http.ResponseWriter, r *http.Request) *Customer {
	id, err := strconv.Atoi(r.PathValue("id"))
	if err != nil {
		writeError(w, http.StatusBadRequest, "customer id must be a number")
		return nil
	}
	for _, c := range s.data.Customers {
		if c.ID == id {
			return c
		}
	}
	writeError(w, http.StatusNotFound, fmt.Sprintf("customer %d not found", id))
	return nil
}

func (s *Server) getCustomer(w http.ResponseWriter, r *http.Request) {
	s.mu.RLock()
	defer s.mu.RUnlock()
	if c := s.customer(w, r); c != nil {
		writeJSON(w, http.StatusOK, c)
	}
}

// Sensitive is the answer of /api/customers/{id}/sensitive.
type Sensitive struct {
	// ID is the customer number.
	ID int `json:"id"`
	// Name is the customer's name.
	Name string `json:"name"`
	// IDCard is the resident ID number.
	IDCard string `json:"id_card"`
	// BankAccount is the bank card number.
	BankAccount string `json:"bank_account"`
	// BankName is the bank.
	BankName string `json:"bank_name"`
}

func (s *Server) getSensitive(w http.ResponseWriter, r *http.Request) {
	s.mu.RLock()
	defer s.mu.RUnlock()
	if c := s.customer(w, r); c != nil {
		s.log.Printf("crm: %s viewed the ID number and bank account of customer %d", actor(r), c.ID)
		writeJSON(w, http.StatusOK, Sensitive{ID: c.ID, Name: c.Name, IDCard: c.IDCard, BankAccount: c.BankAccount, BankName: c.BankName})
	}
}

// exportColumns are the CSV export's columns.
var exportColumns = []string{"id", "name", "company", "phone", "email", "city", "owner_id", "team", "stage", "contract_amount", "last_contact_at"}

func (s *Server) exportCustomers(w http.ResponseWriter, r *http.Request) {
	s.mu.RLock()
	defer s.mu.RUnlock()
	var buf bytes.Buffer
	buf.WriteString("\ufeff") // a BOM, so spreadsheet programs read the Chinese names right
	cw := csv.NewWriter(&buf)
	_ = cw.Write(exportColumns)
	for _, c := range s.data.Customers {
		_ = cw.Write([]string{strconv.Itoa(c.ID), c.Name, c.Company, c.Phone, c.Email, c.Address.City,
			c.OwnerID, c.Team, c.Stage, strconv.FormatFloat(c.ContractAmount, 'f', 2, 64), c.LastContactAt.Format(time.RFC3339)})
	}
	cw.Flush()
	s.log.Printf("crm: %s exported %d customers", actor(r), len(s.data.Customers))
	w.Header().Set("Content-Type", "text/csv; charset=utf-8")
	w.Header().Set("Content-Disposition", `attachment; filename="customers.csv"`)
	w.Header().Set("Content-Length", strconv.Itoa(buf.Len()))
	_, _ = w.Write(buf.Bytes())
}

// maxBody is the largest request body the CRM reads.
const maxBody = 1 << 20

func readBody(w http.ResponseWriter, r *http.Request) ([]byte, bool) {
	if ct := r.Header.Get("Content-Type"); ct != "" && !strings.HasPrefix(ct, "application/json") {
		writeError(w, http.StatusUnsupportedMediaType, "the body must be application/json, not "+ct)
		return nil, false
	}
	body, err := io.ReadAll(http.MaxBytesReader(w, r.Body, maxBody))
	if err != nil {
		writeError(w, http.StatusRequestEntityTooLarge, "the body is larger than 1 MiB or could not be read")
		return nil, false
	}
	return body, true
}

// readObject reads a JSON object body, answering 400 when it is not one.
func readObject(w http.ResponseWriter, r *http.Request) (map[string]json.RawMessage, bool) {
	body, ok := readBody(w, r)
	if !ok {
		return nil, false
	}
	var fields map[string]json.RawMessage
	if err := json.Unmarshal(body, &fields); err != nil {
		writeError(w, http.StatusBadRequest, "the body must be a JSON object: "+err.Error())
		return nil, false
	}
	return fields, true
}

func (s *Server) patchCustomer(w http.ResponseWriter, r *http.Request) {
	fields, ok := readObject(w, r)
	if !ok {
		return
	}
	s.mu.Lock()
	defer s.mu.Unlock()
	c := s.customer(w, r)
	if c == nil {
		return
	}
	upd := *c
	changed, err := applyCustomer(&upd, fields)
	if err != nil {
		writeError(w, http.StatusBadRequest, err.Error())
		return
	}
	upd.UpdatedAt, upd.UpdatedBy = time.Now().UTC().Truncate(time.Second), actor(r)
	*c = upd
	s.log.Printf("crm: %s updated customer %d: %s", actor(r), c.ID, strings.Join(changed, ", "))
	writeJSON(w, http.StatusOK, c)
}

// BulkResult is the answer of a bulk update.
type BulkResult struct {
	// Updated is the number of records changed.
	Updated int `json:"updated"`
	// IDs are the records changed.
	IDs []int `json:"ids"`
}

func (s *Server) bulkUpdateCustomers(w http.ResponseWriter, r *http.Request) {
	fields, ok := readObject(w, r)
	if !ok {
		return
	}
	var ids []int
	if err := json.Unmarshal(fields["ids"], &ids); err != nil || len(ids) == 0 {
		writeError(w, http.StatusBadRequest, `the body must be {"ids": [customer numbers], ...fields to set on each}`)
		return
	}
	delete(fields, "ids")
	s.mu.Lock()
	defer s.mu.Unlock()
	// Validate everything first: a bulk update is all or nothing.
	updated := make([]Customer, len(ids))
	targets := make([]*Customer, len(ids))
	for i, id := range ids {
		idx := slices.IndexFunc(s.data.Customers, func(c *Customer) bool { return c.ID == id })
		if idx < 0 {
			writeError(w, http.StatusNotFound, fmt.Sprintf("customer %d not found", id))
			return
		}
		targets[i] = s.data.Customers[idx]
		updated[i] = *targets[i]
		if _, err := applyCustomer(&updated[i], fields); err != nil {
			writeError(w, http.StatusBadRequest, fmt.Sprintf("customer %d: %v", id, err))
			return
		}
	}
	res := BulkResult{IDs: []int{}}
	now := time.Now().UTC().Truncate(time.Second)
	for i, t := range targets {
		updated[i].UpdatedAt, updated[i].UpdatedBy = now, actor(r)
		*t = updated[i]
		res.Updated++
		res.IDs = append(res.IDs, t.ID)
	}
	s.log.Printf("crm: %s bulk-updated customers %v", actor(r), res.IDs)
	writeJSON(w, http.StatusOK, res)
}

func (s *Server) deleteCustomer(w http.ResponseWriter, r *http.Request) {
	s.mu.Lock()
	defer s.mu.Unlock()
	c := s.customer(w, r)
	if c == nil {
		return
	}
	s.data.Customers = slices.DeleteFunc(s.data.Customers, func(x *Customer) bool { return x == c })
	s.log.Printf("crm: %s deleted customer %d", actor(r), c.ID)
	w.WriteHeader(http.StatusNoContent)
}

// applyCustomer sets the fields of c named in fields and says which changed.
func applyCustomer(c *Customer, fields map[string]json.RawMessage) ([]string, error) {
	var changed []string
	for _, k := range sortedKeys(fields) {
		raw := fields[k]
		var err error
		switch k {
		case "name":
			err = setString(raw, &c.Name, false)
		case "company":
			err = setString(raw, &c.Company, true)
		case "phone":
			err = setString(raw, &c.Phone, true)
		case "email":
			err = setString(raw, &c.Email, true)
		case "notes":
			err = setString(raw, &c.Notes, true)
		case "stage":
			err = setStage(raw, &c.Stage)
		case "contract_amount":
			err = setAmount(raw, &c.ContractAmount)
		case "owner_id":
			var owner string
			if err = setString(raw, &owner, false); err == nil {
				o := slices.IndexFunc(Owners, func(o Owner) bool { return o.ID == owner })
				if o < 0 {
					err = fmt.Errorf("owner %q is not a sales rep", owner)
				} else {
					c.OwnerID, c.Team = owner, Owners[o].Team
				}
			}
		case "tags":
			err = json.Unmarshal(raw, &c.Tags)
		case "last_contact_at":
			err = json.Unmarshal(raw, &c.LastContactAt)
		default:
			return nil, fmt.Errorf("field %q cannot be changed", k)
		}
		if err != nil {
			return nil, fmt.Errorf("field %q: %w", k, err)
		}
		changed = append(changed, k)
	}
	if len(changed) == 0 {
		return nil, fmt.Errorf("the body names no field to change")
	}
	return changed, nil
}

func (s *Server) deal(w http.ResponseWriter, r *http.Request) *Deal {
	id, err := strconv.Atoi(r.PathValue("id"))
	if err != nil {
		writeError(w, http.StatusBadRequest, "deal id must be a number")
		return nil
	}
	for _, d := range s.data.Deals {
		if d.ID == id {
			return d
		}
	}
	writeError(w, http.StatusNotFound, fmt.Sprintf("deal %d not found", id))
	return nil
}

func (s *Server) listDeals(w http.ResponseWriter, r *http.Request) {
	q := r.URL.Query()
	teams := listParam(q, "team")
	s.mu.RLock()
	defer s.mu.RUnlock()
	var match []*Deal
	for _, d := range s.data.Deals {
		if teams != nil && !slices.Contains(teams, d.Team) {
			continue
		}
		if v := q.Get("customer_id"); v != "" && strconv.Itoa(d.CustomerID) != v {
			continue
		}
		if v := q.Get("owner_id"); v != "" && d.OwnerID != v {
			continue
		}
		if v := q.Get("stage"); v != "" && d.Stage != v {
			continue
		}
		match = append(match, d)
	}
	page(w, r, match)
}

func (s *Server) getDeal(w http.ResponseWriter, r *http.Request) {
	s.mu.RLock()
	defer s.mu.RUnlock()
	if d := s.deal(w, r); d != nil {
		writeJSON(w, http.StatusOK, d)
	}
}

func (s *Server) patchDeal(w http.ResponseWriter, r *http.Request) {
	fields, ok := readObject(w, r)
	if !ok {
		return
	}
	s.mu.Lock()
	defer s.mu.Unlock()
	d := s.deal(w, r)
	if d == nil {
		return
	}
	upd := *d
	var changed []string
	for _, k := range sortedKeys(fields) {
		raw := fields[k]
		var err error
		switch k {
		case "title":
			err = setString(raw, &upd.Title, false)
		case "stage":
			err = setStage(raw, &upd.Stage)
		case "contract_amount":
			err = setAmount(raw, &upd.ContractAmount)
		case "expected_close":
			if err = setString(raw, &upd.ExpectedClose, false); err == nil {
				_, err = time.Parse("2006-01-02", upd.ExpectedClose)
			}
		case "next_step":
			err = setString(raw, &upd.NextStep, true)
		case "notes":
			err = setString(raw, &upd.Notes, true)
		default:
			err = fmt.Errorf("cannot be changed")
		}
		if err != nil {
			writeError(w, http.StatusBadRequest, fmt.Sprintf("field %q: %v", k, err))
			return
		}
		changed = append(changed, k)
	}
	if len(changed) == 0 {
		writeError(w, http.StatusBadRequest, "the body names no field to change")
		return
	}
	upd.UpdatedAt, upd.UpdatedBy = time.Now().UTC().Truncate(time.Second), actor(r)
	*d = upd
	s.log.Printf("crm: %s updated deal %d: %s", actor(r), d.ID, strings.Join(changed, ", "))
	writeJSON(w, http.StatusOK, d)
}

// listOf serves a list of records, optionally filtered by ?customer_id=
// and, when team is not nil, by ?team= (several, like the customer list).
func listOf[T any](s *Server, all func(*Data) []T, customer func(T) int, team func(T) string) http.HandlerFunc {
	return func(w http.ResponseWriter, r *http.Request) {
		s.mu.RLock()
		defer s.mu.RUnlock()
		recs := all(s.data)
		if teams := listParam(r.URL.Query(), "team"); teams != nil && team != nil {
			var match []T
			for _, rec := range recs {
				if slices.Contains(teams, team(rec)) {
					match = append(match, rec)
				}
			}
			recs = match
		}
		if v := r.URL.Query().Get("customer_id"); v != "" {
			id, err := strconv.Atoi(v)
			if err != nil {
				writeError(w, http.StatusBadRequest, "customer_id must be a number")
				return
			}
			var match []T
			for _, rec := range recs {
				if customer(rec) == id {
					match = append(match, rec)
				}
			}
			recs = match
		}
		page(w, r, recs)
	}
}

// getOf serves one record by its id (the records are numbered from 1).
func getOf[T any](s *Server, kind string, all func(*Data) []T) http.HandlerFunc {
	return func(w http.ResponseWriter, r *http.Request) {
		s.mu.RLock()
		defer s.mu.RUnlock()
		id, err := strconv.Atoi(r.PathValue("id"))
		recs := all(s.data)
		switch {
		case err != nil:
			writeError(w, http.StatusBadRequest, kind+" id must be a number")
		case id < 1 || id > len(recs):
			writeError(w, http.StatusNotFound, fmt.Sprintf("%s %d not found", kind, id))
		default:
			writeJSON(w, http.StatusOK, recs[id-1])
		}
	}
}

func sortedKeys(m map[string]json.RawMessage) []string {
	keys := make([]string, 0, len(m))
	for k := range m {
		keys = append(keys, k)
	}
	slices.Sort(keys)
	return keys
}

func setString(raw json.RawMessage, dst *string, emptyOK bool) error {
	var v string
	if err := json.Unmarshal(raw, &v); err != nil {
		return fmt.Errorf("must be a string")
	}
	if v == "" && !emptyOK {
		return fmt.Errorf("must not be empty")
	}
	*dst = v
	return nil
}

func setStage(raw json.RawMessage, dst *string) error {
	var v string
	if err := json.Unmarshal(raw, &v); err != nil || !slices.Contains(Stages, v) {
		return fmt.Errorf("must be one of %s", strings.Join(Stages, ", "))
	}
	*dst = v
	return nil
}

func setAmount(raw json.RawMessage, dst *float64) error {
	var v float64
	if err := json.Unmarshal(raw, &v); err != nil || v < 0 {
		return fmt.Errorf("must be a number >= 0")
	}
	*dst = v
	return nil
}

func actor(r *http.Request) string {
	if u := r.Header.Get("X-CRM-User"); u != "" {
		return u
	}
	return "(unknown user)"
}

func writeJSON(w http.ResponseWriter, status int, v any) {
	b, err := json.Marshal(v)
	if err != nil {
		writeError(w, http.StatusInternalServerError, "crm: cannot encode the answer: "+err.Error())
		return
	}
	w.Header().Set("Content-Type", "application/json; charset=utf-8")
	w.Header().Set("Content-Length", strconv.Itoa(len(b)))
	w.WriteHeader(status)
	_, _ = w.Write(b)
}

func writeError(w http.ResponseWriter, status int, msg string) {
	b, _ := json.Marshal(map[string]string{"error": msg})
	w.Header().Set("Content-Type", "application/json; charset=utf-8")
	w.WriteHeader(status)
	_, _ = w.Write(b)
}
