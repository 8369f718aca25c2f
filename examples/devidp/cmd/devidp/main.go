// Command devidp runs the development OpenID Provider with the demo users.
// FOR DEVELOPMENT ONLY. It binds to 127.0.0.1 unless -addr says otherwise.
//
//	go run ./examples/devidp/cmd/devidp -addr 127.0.0.1:9000 \
//	    -redirect http://localhost:8080/.crmguard/callback
//	go run ./examples/devidp/cmd/devidp -totp zhang   # print zhang's current code
package main

import (
	"crypto/rsa"
	"crypto/x509"
	"encoding/pem"
	"flag"
	"fmt"
	"log"
	"net"
	"net/http"
	"os"
	"strings"
	"time"

	"github.com/crmguard/crmguard/examples/devidp"
)

func main() {
	addr := flag.String("addr", "127.0.0.1:9000", "listen address (loopback by default)")
	issuer := flag.String("issuer", "", "issuer URL (default http://<addr>)")
	clientID := flag.String("client-id", "crm", "client_id of the crmguard proxy")
	secret := flag.String("client-secret", "dev-secret-change-me", "client_secret of the crmguard proxy")
	origin := flag.String("origin", "http://localhost:8080", "origin of the crmguard proxy")
	seed := flag.String("seed", "crmguard-demo", "seed of the demo users' TOTP secrets")
	totpFor := flag.String("totp", "", "print the current TOTP code of this demo user and exit")
	keyFile := flag.String("key", "", "PEM file with the RSA signing key (PKCS#1 or PKCS#8); default: a new key per start")
	flag.Parse()

	users := devidp.DemoUsers(*seed)
	if *totpFor != "" {
		for _, u := range users {
			if u.Username == *totpFor {
				code, err := devidp.TOTP(u.TOTPSecret, time.Now())
				if err != nil {
					log.Fatal(err)
				}
				fmt.Println(code)
				return
			}
		}
		log.Fatalf("devidp: no demo user %q", *totpFor)
	}

	if *issuer == "" {
		*issuer = "http://" + *addr
	}
	var key *rsa.PrivateKey
	if *keyFile != "" {
		var err error
		if key, err = readKey(*keyFile); err != nil {
			log.Fatal(err)
		}
	}
	o := strings.TrimSuffix(*origin, "/")
	srv, err := devidp.New(devidp.Config{
		Issuer:     *issuer,
		SigningKey: key,
		Users:      users,
		Clients: []devidp.Client{{
			ID: *clientID, Secret: *secret,
			RedirectURIs:           []string{o + "/.crmguard/callback"},
			PostLogoutRedirectURIs: []string{o + "/"},
			BackchannelLogoutURI:   o + "/.crmguard/backchannel-logout",
		}},
	})
	if err != nil {
		log.Fatal(err)
	}
	ln, err := net.Listen("tcp", *addr)
	if err != nil {
		log.Fatal(err)
	}
	fmt.Fprintf(os.Stderr, "devidp: DEVELOPMENT ONLY identity provider at %s\n", *issuer)
	for _, u := range users {
		fmt.Fprintf(os.Stderr, "  %-6s password %-13s groups %v (TOTP: go run ./examples/devidp/cmd/devidp -totp %s)\n", u.Username, u.Password, u.Groups, u.Username)
	}
	log.Fatal(http.Serve(ln, srv))
}

// readKey reads an RSA private key from a PEM file.
func readKey(path string) (*rsa.PrivateKey, error) {
	b, err := os.ReadFile(path)
	if err != nil {
		return nil, fmt.Errorf("devidp: signing key: %w", err)
	}
	block, _ := pem.Decode(b)
	if block == nil {
		return nil, fmt.Errorf("devidp: signing key %s is not PEM", path)
	}
	if k, err := x509.ParsePKCS1PrivateKey(block.Bytes); err == nil {
		return k, nil
	}
	k, err := x509.ParsePKCS8PrivateKey(block.Bytes)
	if err != nil {
		return nil, fmt.Errorf("devidp: signing key %s: %w", path, err)
	}
	rk, ok := k.(*rsa.PrivateKey)
	if !ok {
		return nil, fmt.Errorf("devidp: signing key %s is not an RSA key", path)
	}
	return rk, nil
}
