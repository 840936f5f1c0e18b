// Package shared finds the development workspace's shared/ folder (real
// data and golden reference values) from the module root: ../shared.
package shared

import (
	"os"
	"path/filepath"
	"testing"
)

// Root returns the shared/ folder beside the module root, walking up from
// the working directory to the directory holding go.mod.
func Root() (string, bool) {
	dir, err := os.Getwd()
	if err != nil {
		return "", false
	}
	for {
		if _, err := os.Stat(filepath.Join(dir, "go.mod")); err == nil {
			p := filepath.Join(filepath.Dir(dir), "shared")
			if st, err := os.Stat(p); err == nil && st.IsDir() {
				return p, true
			}
			return "", false
		}
		parent := filepath.Dir(dir)
		if parent == dir {
			return "", false
		}
		dir = parent
	}
}

// Path returns shared/rel, skipping the test when it does not exist.
func Path(t testing.TB, rel string) string {
	t.Helper()
	root, ok := Root()
	if !ok {
		t.Skipf("../shared not found beside the module root; skipping (needs %s)", rel)
	}
	p := filepath.Join(root, rel)
	if _, err := os.Stat(p); err != nil {
		t.Skipf("%s not available: %v", p, err)
	}
	return p
}
