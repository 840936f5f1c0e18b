package atomicfile

import (
	"errors"
	"os"
	"path/filepath"
	"testing"
)

// TestReplaceDirLeavesNothingOld: the new directory holds exactly what
// write made (no stale file of the old one), and a failed write leaves the
// old directory whole.
func TestReplaceDirLeavesNothingOld(t *testing.T) {
	dir := filepath.Join(t.TempDir(), "model")
	write := func(files ...string) func(string) error {
		return func(tmp string) error {
			for _, f := range files {
				if err := os.WriteFile(filepath.Join(tmp, f), []byte(f), 0o644); err != nil {
					return err
				}
			}
			return nil
		}
	}
	if err := ReplaceDir(dir, write("a", "stale")); err != nil {
		t.Fatal(err)
	}
	if err := ReplaceDir(dir, write("a", "b")); err != nil {
		t.Fatal(err)
	}
	if _, err := os.Stat(filepath.Join(dir, "stale")); err == nil {
		t.Error("a file of the old directory survived")
	}
	boom := errors.New("boom")
	if err := ReplaceDir(dir, func(string) error { return boom }); !errors.Is(err, boom) {
		t.Fatalf("failed write: %v", err)
	}
	entries, _ := os.ReadDir(filepath.Dir(dir))
	if len(entries) != 1 {
		t.Errorf("temporary directories left behind: %v", entries)
	}
	if b, err := os.ReadFile(filepath.Join(dir, "b")); err != nil || string(b) != "b" {
		t.Errorf("a failed write changed the old directory: %q, %v", b, err)
	}
	if st, err := os.Stat(dir); err != nil || st.Mode().Perm() != 0o755 {
		t.Errorf("mode: %v, %v", st.Mode(), err)
	}
}
