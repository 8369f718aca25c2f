package rules

import (
	"strings"
	"testing"
)

func TestCanonicalRequestWritesTheSameRequestOneWay(t *testing.T) {
	same := []struct {
		name string
		a, b [2]string // method, target
		want string
	}{
		{"the query order does not matter", [2]string{"GET", "/api/customers/export?team=east&format=csv"}, [2]string{"GET", "/api/customers/export?format=csv&team=east"},
			"GET /api/customers/export?format=csv&team=east"},
		{"a method in lower case is the same method", [2]string{"get", "/x"}, [2]string{"GET", "/x"}, "GET /x"},
		{"a percent-encoded letter is the letter", [2]string{"GET", "/api/customers/%65xport?t%65am=%65ast"}, [2]string{"GET", "/api/customers/export?team=east"},
			"GET /api/customers/export?team=east"},
		{"hex case in an escape does not matter", [2]string{"GET", "/x?q=a%2fb"}, [2]string{"GET", "/x?q=a%2Fb"}, "GET /x?q=a%2Fb"},
		{"a plus and %20 are both a space in the query", [2]string{"GET", "/x?q=a+b"}, [2]string{"GET", "/x?q=a%20b"}, "GET /x?q=a+b"},
		{"dot segments and duplicate slashes are resolved", [2]string{"GET", "/api//deals/../customers/./export"}, [2]string{"GET", "/api/customers/export"}, "GET /api/customers/export"},
		{"a trailing slash is dropped", [2]string{"GET", "/api/customers/export/"}, [2]string{"GET", "/api/customers/export"}, "GET /api/customers/export"},
		{"an empty query is no query", [2]string{"GET", "/x?"}, [2]string{"GET", "/x"}, "GET /x"},
		{"empty pairs are dropped", [2]string{"GET", "/x?&a=1&&"}, [2]string{"GET", "/x?a=1"}, "GET /x?a=1"},
		{"a key without = is a key with an empty value", [2]string{"GET", "/x?a"}, [2]string{"GET", "/x?a="}, "GET /x?a="},
		{"a space in the path is escaped once", [2]string{"GET", "/files/a%20b"}, [2]string{"GET", "/files/a%20b"}, "GET /files/a%20b"},
		{"repeated keys keep their order among other keys", [2]string{"GET", "/x?b=2&a=1&b=3"}, [2]string{"GET", "/x?a=1&b=2&b=3"}, "GET /x?a=1&b=2&b=3"},
		{"UTF-8 values are decoded and encoded the same way", [2]string{"GET", "/x?name=%E5%BC%A0"}, [2]string{"GET", "/x?name=张"}, "GET /x?name=%E5%BC%A0"},
	}
	for _, c := range same {
		t.Run(c.name, func(t *testing.T) {
			a, errA := CanonicalRequest(c.a[0], c.a[1])
			b, errB := CanonicalRequest(c.b[0], c.b[1])
			if errA != nil || errB != nil {
				t.Fatalf("errors %v, %v", errA, errB)
			}
			if a != b || a != c.want {
				t.Errorf("%q and %q, want both %q", a, b, c.want)
			}
		})
	}
	different := []struct {
		name string
		a, b [2]string
	}{
		{"another value is another request", [2]string{"GET", "/x?team=east"}, [2]string{"GET", "/x?team=west"}},
		{"an added parameter is another request", [2]string{"GET", "/x?team=east"}, [2]string{"GET", "/x?team=east&team=west"}},
		{"repeated keys in another order are another request (servers read the first or the last)", [2]string{"GET", "/x?a=1&a=2"}, [2]string{"GET", "/x?a=2&a=1"}},
		{"a missing query is another request", [2]string{"GET", "/x?team=east"}, [2]string{"GET", "/x"}},
		{"an encoded & in a value is not a separator", [2]string{"GET", "/x?q=a%26b=c"}, [2]string{"GET", "/x?q=a&b=c"}},
		{"an encoded = in a key is not the separator", [2]string{"GET", "/x?a%3Db=c"}, [2]string{"GET", "/x?a=b%3Dc"}},
		{"an encoded slash in a value differs from a plain one in the key", [2]string{"GET", "/x?a%2Fb=1"}, [2]string{"GET", "/x?a=%2Fb1"}},
		{"a plus in the path is not a space", [2]string{"GET", "/files/a+b"}, [2]string{"GET", "/files/a%20b"}},
		{"a key in another case is another key", [2]string{"GET", "/x?team=east"}, [2]string{"GET", "/x?TEAM=east"}},
		{"a value in another case is another value", [2]string{"GET", "/x?team=east"}, [2]string{"GET", "/x?team=EAST"}},
		{"a path in another case is another path", [2]string{"GET", "/api/customers/export"}, [2]string{"GET", "/API/customers/export"}},
		{"another method is another request", [2]string{"GET", "/x"}, [2]string{"POST", "/x"}},
		{"a PHP array key is another key", [2]string{"GET", "/x?team=east"}, [2]string{"GET", "/x?team[]=east"}},
	}
	for _, c := range different {
		t.Run(c.name, func(t *testing.T) {
			a, errA := CanonicalRequest(c.a[0], c.a[1])
			b, errB := CanonicalRequest(c.b[0], c.b[1])
			if errA != nil || errB != nil {
				t.Fatalf("errors %v, %v", errA, errB)
			}
			if a == b {
				t.Errorf("both are %q", a)
			}
		})
	}
}

func TestCanonicalRequestRefusesWhatCannotBeBound(t *testing.T) {
	cases := []struct {
		name, method, target, want string
	}{
		{"a bad escape in the query", "GET", "/x?a=%zz", "cannot be decoded"},
		{"a semicolon separator", "GET", "/x?a=1;b=2", "\";\""},
		{"an encoded slash in the path", "GET", "/a%2Fb", "cannot be judged"},
		{"a path climbing above the root", "GET", "/../etc/passwd", "above the root"},
		{"a double-encoded path", "GET", "/api/%252e%252e/x", "cannot be judged"},
		{"a fragment", "GET", "/x#y", "fragment"},
		{"a target without a leading slash", "GET", "x", "does not start with /"},
		{"a method with a space", "GE T", "/x", "not a method"},
	}
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			got, err := CanonicalRequest(c.method, c.target)
			if err == nil || !strings.Contains(err.Error(), c.want) {
				t.Fatalf("got %q, %v; want an error with %q", got, err, c.want)
			}
		})
	}
}
