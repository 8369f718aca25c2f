package demo

import (
	"fmt"
	"os"
	"sync"

	"github.com/caddyserver/caddy/v2/caddyconfig"
)

// envMu serialises adaptWithEnv: the process environment is one for all
// goroutines.
var envMu sync.Mutex

// adaptWithEnv adapts the Caddyfile body with each {$NAME} placeholder
// named in env read as env[NAME].
//
// Caddy's Caddyfile lexer reads {$NAME} from the process environment and
// nothing else (the adapter takes no map of values), and the repository's
// Caddyfile is written for deployments that set those variables. So the
// demo sets them, but only for as long as the adapter runs: afterwards the
// adapted JSON holds the values, and each variable is restored to what it
// was (unset if it was unset). The demo's session secret, hash key and
// client secret therefore do not stay in the environment, where tests,
// child processes (the browser of the browser tests) and a second Start
// would see them.
func adaptWithEnv(adapter caddyconfig.Adapter, body []byte, filename string, env map[string]string) (cfgJSON []byte, warns []caddyconfig.Warning, err error) {
	envMu.Lock()
	defer envMu.Unlock()
	restore, err := setEnv(env)
	defer func() {
		if rerr := restore(); rerr != nil && err == nil {
			err = rerr
		}
	}()
	if err != nil {
		return nil, nil, err
	}
	return adapter.Adapt(body, map[string]any{"filename": filename})
}

// setEnv sets env and returns the function that puts back what was there
// before, including for a variable whose setting failed part way.
func setEnv(env map[string]string) (restore func() error, err error) {
	type prior struct {
		value string
		set   bool
	}
	before := make(map[string]prior, len(env))
	restore = func() error {
		for k, p := range before {
			var err error
			if p.set {
				err = os.Setenv(k, p.value)
			} else {
				err = os.Unsetenv(k)
			}
			if err != nil {
				return fmt.Errorf("demo: restoring %s: %w", k, err)
			}
		}
		return nil
	}
	for k, v := range env {
		old, ok := os.LookupEnv(k)
		before[k] = prior{old, ok}
		if err := os.Setenv(k, v); err != nil {
			return restore, fmt.Errorf("demo: setting %s for the Caddyfile: %w", k, err)
		}
	}
	return restore, nil
}
