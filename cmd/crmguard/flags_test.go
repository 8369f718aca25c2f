package main

import (
	"bytes"
	"io"
	"testing"

	"github.com/spf13/cobra"
)

func TestSharedFlags(t *testing.T) {
	tests := []struct {
		name         string
		env          string
		args         []string
		wantKey      string
		wantProgress bool
	}{
		{name: "the hash key comes from the environment when the flag is not given", env: "from-env", wantKey: "from-env", wantProgress: true},
		{name: "a given hash key wins over the environment", env: "from-env", args: []string{"--hash-key", "from-flag"}, wantKey: "from-flag", wantProgress: true},
		{name: "without flag and environment the hash key stays empty", wantKey: "", wantProgress: true},
		{name: "quiet leaves progress off", args: []string{"-q"}, wantKey: "", wantProgress: false},
		{name: "quiet and a hash key work together", env: "from-env", args: []string{"--quiet", "--hash-key", "k"}, wantKey: "k", wantProgress: false},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			t.Setenv("CRMGUARD_HASH_KEY", tt.env)
			var key string
			var progress io.Writer
			var ran bool
			c := &cobra.Command{Use: "x", RunE: func(*cobra.Command, []string) error { ran = true; return nil }}
			hashKeyFlag(c, &key, hashKeyUsage)
			progressFlag(c, &progress)
			stderr := &bytes.Buffer{}
			c.SetErr(stderr)
			c.SetArgs(tt.args)
			if err := c.Execute(); err != nil {
				t.Fatal(err)
			}
			if !ran {
				t.Fatal("the command did not run")
			}
			if key != tt.wantKey {
				t.Errorf("hash key %q, want %q", key, tt.wantKey)
			}
			if got := progress == io.Writer(stderr); got != tt.wantProgress {
				t.Errorf("progress on stderr: %v, want %v", got, tt.wantProgress)
			}
		})
	}
}
