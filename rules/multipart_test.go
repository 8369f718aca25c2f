package rules

import (
	"bytes"
	"mime/multipart"
	"strings"
	"testing"
)

// FuzzMultipartNeverHidesAField reads each body the way a CRM written in Go
// would (multipart.Reader.ReadForm): whenever that parser finds a guarded
// field, or a _method naming another method than POST, the proxy must
// refuse the body.
func FuzzMultipartNeverHidesAField(f *testing.F) {
	for _, s := range []string{
		mpBody(mpField("stage", "won")),
		mpBody(mpField("notes", "x"), mpField("_method", "DELETE")),
		mpBody("Content-Disposition: form-data; name=\"stage\"; filename=\"a\"\r\n\r\nx"),
		mpBody("Content-Disposition: form-data; name*=UTF-8''st%61ge\r\n\r\nx"),
		mpBody("Content-Disposition: form-data; name=\"_method\"\r\nContent-Transfer-Encoding: quoted-printable\r\n\r\n=50UT"),
		"preamble\r\n--x\r\nContent-Disposition: form-data; name=\"stage\"\r\n\r\nwon\r\n--x--",
		"--x\r\nContent-Disposition: form-data; name=\"notes\"\r\n\r\nhi\r\n--x--\r\nepilogue",
	} {
		f.Add(s)
	}
	s := mustLoad(f, bodyRules)
	service := s.UserFromRoles("li", []string{"service"}, nil, true, shanghaiWorkday)
	f.Fuzz(func(t *testing.T, body string) {
		form, err := multipart.NewReader(bytes.NewReader([]byte(body)), "x").ReadForm(1 << 20)
		if err != nil {
			return
		}
		defer form.RemoveAll()
		sets, overrides := false, false
		for name, vs := range form.Value {
			if strings.EqualFold(name, "stage") {
				sets = true
			}
			if name == "_method" {
				for _, v := range vs {
					overrides = overrides || !strings.EqualFold(strings.TrimSpace(v), "POST")
				}
			}
		}
		for name := range form.File {
			if strings.EqualFold(name, "stage") {
				sets = true
			}
		}
		if sets {
			d := s.Decide(service, request("PATCH", "/api/customers/1"))
			if be := d.CheckBody(mp, []byte(body)); be == nil {
				t.Fatalf("body %q passed although a Go CRM reads stage from it", body)
			}
		}
		if overrides {
			d := s.Decide(service, request("POST", "/api/customers/1"))
			if be := d.CheckBody(mp, []byte(body)); be == nil {
				t.Fatalf("body %q passed although a Go CRM reads a _method override from it", body)
			}
		}
	})
}
