package tokenizer

import (
	"encoding/json"
	"os"
	"path/filepath"
	"sync"
	"testing"

	"github.com/gopeft/gopeft/internal/shared"
)

// sharedDir returns ../shared beside the module root, skipping the test if
// it is missing.
func sharedDir(t testing.TB) string { return shared.Path(t, ".") }

func sharedFile(t testing.TB, rel string) string {
	t.Helper()
	p := filepath.Join(sharedDir(t), rel)
	if _, err := os.Stat(p); err != nil {
		t.Skipf("shared file missing: %v", err)
	}
	return p
}

type goldenCase struct {
	Text string `json:"text"`
	IDs  []int  `json:"ids"`
}

func loadGolden(t testing.TB, name string) []goldenCase {
	t.Helper()
	data, err := os.ReadFile(sharedFile(t, filepath.Join("golden", name)))
	if err != nil {
		t.Fatal(err)
	}
	var g struct {
		Cases []goldenCase `json:"cases"`
	}
	if err := json.Unmarshal(data, &g); err != nil {
		t.Fatalf("%s: %v", name, err)
	}
	if len(g.Cases) == 0 {
		t.Fatalf("%s: no cases", name)
	}
	return g.Cases
}

// Loading the big vocabularies takes a while; tests and benchmarks share
// one copy of each.
var (
	loadMu sync.Mutex
	loaded = map[string]Tokenizer{}
)

func loadShared(t testing.TB, rel string) Tokenizer {
	t.Helper()
	p := sharedFile(t, rel)
	loadMu.Lock()
	defer loadMu.Unlock()
	if tok, ok := loaded[p]; ok {
		return tok
	}
	tok, err := Load(p)
	if err != nil {
		t.Fatalf("Load(%s): %v", p, err)
	}
	loaded[p] = tok
	return tok
}
