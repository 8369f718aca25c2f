// Command crm runs the example legacy CRM on its own (without the proxy).
//
//	go run ./examples/crm/cmd/crm -addr 127.0.0.1:8080 -seed 1
//
// The CRM trusts every caller: bind it to loopback and reach it only
// through crmguard.
package main

import (
	"flag"
	"log"
	"net/http"
	"time"

	"github.com/crmguard/crmguard/examples/crm"
)

func main() {
	addr := flag.String("addr", "127.0.0.1:8080", "address to listen on (keep it on loopback: the CRM trusts every caller)")
	seed := flag.Int64("seed", 1, "seed for the generated data")
	flag.Parse()
	srv := &http.Server{Addr: *addr, Handler: crm.NewServer(*seed), ReadHeaderTimeout: 10 * time.Second}
	log.Printf("crm: the example CRM listens on http://%s (seed %d)", *addr, *seed)
	log.Fatal(srv.ListenAndServe())
}
