package safefile

import (
	"os"
	"path/filepath"
	"strings"
	"testing"
)

func TestReadFileRefusesSpecialFiles(t *testing.T) {
	if _, err := os.Stat("/dev/zero"); err != nil {
		t.Skip("no /dev/zero")
	}
	for _, p := range []string{"/dev/zero", t.TempDir()} {
		if _, err := ReadFile(p); err == nil || !strings.Contains(err.Error(), "not a regular file") {
			t.Errorf("ReadFile(%s): %v", p, err)
		}
		if _, err := CheckRegular(p); err == nil {
			t.Errorf("CheckRegular(%s) accepted it", p)
		}
	}
}

func TestReadFileReadsRegularFile(t *testing.T) {
	p := filepath.Join(t.TempDir(), "f")
	if err := os.WriteFile(p, []byte("hello"), 0o644); err != nil {
		t.Fatal(err)
	}
	b, err := ReadFile(p)
	if err != nil || string(b) != "hello" {
		t.Fatalf("ReadFile: %q, %v", b, err)
	}
}
