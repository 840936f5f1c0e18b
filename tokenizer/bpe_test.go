package tokenizer

import (
	"encoding/json"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"testing"
)

const (
	spbpePath  = "data/tokenizers/spbpe32k/tokenizer.json"
	llama3Path = "data/tokenizers/llama3/tokenizer.json"
	gpt2Dir    = "data/tokenizers/gpt2"
)

// naiveBPEMerge merges the lowest-rank pair, leftmost first, rescanning
// after every merge: the reference for the heap-based merge.
func naiveBPEMerge(t *BPE, ids []int) []int {
	ids = slices.Clone(ids)
	for {
		best, bestIdx := bpeMerge{rank: -1}, -1
		for i := 0; i+1 < len(ids); i++ {
			m, ok := t.merges[pairKey(ids[i], ids[i+1])]
			if ok && (bestIdx < 0 || m.rank < best.rank) {
				best, bestIdx = m, i
			}
		}
		if bestIdx < 0 {
			return ids
		}
		ids[bestIdx] = int(best.id)
		ids = slices.Delete(ids, bestIdx+1, bestIdx+2)
	}
}

func shakespeare(t testing.TB, n int) string {
	t.Helper()
	data, err := os.ReadFile(sharedFile(t, "data/text/tinyshakespeare.txt"))
	if err != nil {
		t.Fatal(err)
	}
	return string(data[:min(n, len(data))])
}

func TestBPEMatchesNaiveMerge(t *testing.T) {
	text := shakespeare(t, 3000)
	for _, path := range []string{spbpePath, llama3Path, gpt2Dir} {
		tok := loadShared(t, path).(*BPE)
		for _, w := range []string{"▁First▁Citizen:\n▁Before", "▁unbelievably", "ĠMarcius", "Ġ12345"} {
			w2 := strings.ReplaceAll(w, "▁", " ")
			if tok.byteLevel {
				w2 = strings.ReplaceAll(w, "Ġ", " ")
			} else {
				w = strings.ReplaceAll(w, " ", "▁")
			}
			saved := tok.ignoreMerges
			tok.ignoreMerges = false
			got := tok.bpeWord(w2)
			if !tok.byteLevel {
				got = tok.bpeWord(w)
			}
			tok.ignoreMerges = saved
			var start []int
			if tok.byteLevel {
				for i := 0; i < len(w2); i++ {
					start = append(start, tok.byteIDs[w2[i]])
				}
			} else {
				for _, r := range w {
					if id, ok := tok.vocab[string(r)]; ok {
						start = append(start, id)
						continue
					}
					for _, b := range []byte(string(r)) {
						start = append(start, tok.fallback[b])
					}
				}
			}
			if want := naiveBPEMerge(tok, start); !slices.Equal(got, want) {
				t.Errorf("%s: bpeWord(%q) = %v, naive %v", path, w, got, want)
			}
		}
		// Whole-text round trip.
		if dec := tok.Decode(tok.Encode(text)); dec != text {
			t.Errorf("%s: Decode(Encode(text)) differs", path)
		}
	}
}

func TestAddedTokens(t *testing.T) {
	tok := loadShared(t, llama3Path)
	bot, _ := tok.TokenID("<|begin_of_text|>")
	eot, ok := tok.TokenID("<|eot_id|>")
	if !ok || bot != tok.BOS() || bot != 128000 {
		t.Fatalf("BOS %d, <|begin_of_text|> %d, eot found %v", tok.BOS(), bot, ok)
	}
	if eos, _ := tok.TokenID("<|end_of_text|>"); tok.EOS() != eos {
		t.Errorf("EOS = %d, want <|end_of_text|> %d (tokenizer_config.json)", tok.EOS(), eos)
	}
	if tok.VocabSize() != 128256 {
		t.Errorf("VocabSize = %d", tok.VocabSize())
	}
	got := tok.Encode("<|begin_of_text|>Hello world<|eot_id|>\n")
	want := slices.Concat([]int{bot}, tok.Encode("Hello world"), []int{eot}, tok.Encode("\n"))
	if !slices.Equal(got, want) {
		t.Errorf("Encode with specials = %v, want %v", got, want)
	}
	if dec := tok.Decode(got); dec != "Hello world\n" {
		t.Errorf("Decode skips specials: got %q", dec)
	}
	if s := tok.DecodeToken(-1, eot); s != "<|eot_id|>" {
		t.Errorf("DecodeToken(eot) = %q", s)
	}
	if s := EncodeSpecial(tok, "Hi", true, true); s[0] != bot || s[len(s)-1] != tok.EOS() {
		t.Errorf("EncodeSpecial = %v", s)
	}
}

func TestSPStreaming(t *testing.T) {
	tok := loadShared(t, spbpePath)
	text := "Hello wörld 🙂\n  x"
	ids := EncodeSpecial(tok, text, true, false)
	var sb strings.Builder
	for i := 1; i < len(ids); i++ {
		sb.WriteString(tok.DecodeToken(ids[i-1], ids[i]))
	}
	if sb.String() != text {
		t.Errorf("streamed %q, want %q", sb.String(), text)
	}
}

// rewriteJSON loads a tokenizer.json, lets edit change it, and writes it
// to a temporary directory.
func rewriteJSON(t *testing.T, rel string, edit func(m map[string]any)) string {
	t.Helper()
	data, err := os.ReadFile(sharedFile(t, rel))
	if err != nil {
		t.Fatal(err)
	}
	var m map[string]any
	if err := json.Unmarshal(data, &m); err != nil {
		t.Fatal(err)
	}
	edit(m)
	out, err := json.Marshal(m)
	if err != nil {
		t.Fatal(err)
	}
	p := filepath.Join(t.TempDir(), "tokenizer.json")
	if err := os.WriteFile(p, out, 0o644); err != nil {
		t.Fatal(err)
	}
	return p
}

// TestMetaspaceAndPairMerges re-expresses spbpe32k the other ways
// tokenizer.json files spell the same tokenizer (Metaspace pre-tokenizer
// and decoder, merges as [a, b] pairs) and checks the golden ids still come
// out.
func TestMetaspaceAndPairMerges(t *testing.T) {
	p := rewriteJSON(t, spbpePath, func(m map[string]any) {
		m["normalizer"] = nil
		m["pre_tokenizer"] = map[string]any{"type": "Metaspace", "replacement": "▁", "prepend_scheme": "first", "split": false}
		m["decoder"] = map[string]any{"type": "Metaspace", "replacement": "▁", "prepend_scheme": "first", "split": false}
		model := m["model"].(map[string]any)
		var pairs [][]string
		for _, s := range model["merges"].([]any) {
			a, b, _ := strings.Cut(s.(string), " ")
			pairs = append(pairs, []string{a, b})
		}
		model["merges"] = pairs
	})
	tok, err := LoadHF(p)
	if err != nil {
		t.Fatal(err)
	}
	for _, c := range loadGolden(t, "tokenizer_spbpe32k.json") {
		if slices.Contains(c.IDs, tok.BOS()) || strings.HasPrefix(c.Text, " ") {
			// Metaspace prepends "▁" only at the very start, and only if
			// the text does not already begin with one.
			continue
		}
		if got := tok.Encode(c.Text); !slices.Equal(got, c.IDs) {
			t.Errorf("Encode(%q) = %v, want %v", c.Text, got, c.IDs)
		}
		if got := tok.Decode(c.IDs); got != c.Text {
			t.Errorf("Decode(%v) = %q, want %q", c.IDs, got, c.Text)
		}
	}
}

func TestHFMalformed(t *testing.T) {
	edits := map[string]struct {
		edit func(m map[string]any)
		key  string
	}{
		"no model":          {func(m map[string]any) { delete(m, "model") }, "model"},
		"unigram":           {func(m map[string]any) { m["model"].(map[string]any)["type"] = "Unigram" }, "model.type"},
		"nfc":               {func(m map[string]any) { m["normalizer"] = map[string]any{"type": "NFC"} }, "normalizer.type"},
		"bert pre":          {func(m map[string]any) { m["pre_tokenizer"] = map[string]any{"type": "BertPreTokenizer"} }, "pre_tokenizer.type"},
		"wordpiece decoder": {func(m map[string]any) { m["decoder"] = map[string]any{"type": "WordPiece"} }, "decoder.type"},
		"no decoder":        {func(m map[string]any) { delete(m, "decoder") }, "decoder"},
		"bad merge": {func(m map[string]any) {
			m["model"].(map[string]any)["merges"] = []any{"▁ t", "nosuch token"}
		}, "model.merges[1]"},
		"bad regex": {func(m map[string]any) {
			m["pre_tokenizer"] = map[string]any{"type": "Split", "pattern": map[string]any{"Regex": "("}, "behavior": "Isolated"}
		}, "pre_tokenizer.pattern.Regex"},
		"nested": {func(m map[string]any) {
			m["normalizer"] = map[string]any{"type": "Sequence", "normalizers": []any{map[string]any{"type": "Prepend", "prepend": "▁"}, map[string]any{"type": "Lowercase"}}}
		}, "normalizer.normalizers[1].type"},
	}
	for what, e := range edits {
		p := rewriteJSON(t, spbpePath, e.edit)
		_, err := Load(p)
		if err == nil || !strings.Contains(err.Error(), p) || !strings.Contains(err.Error(), e.key+":") {
			t.Errorf("%s: err = %v, want one naming %s and %s", what, err, p, e.key)
		}
	}
	if _, err := ParseHF([]byte(`{"model": {"type": "BPE", "vocab": {"a": 0}`), "cut.json"); err == nil || !strings.Contains(err.Error(), "cut.json") {
		t.Errorf("truncated JSON: err = %v", err)
	}
}

func TestLoadDispatch(t *testing.T) {
	gptDir := filepath.Dir(sharedFile(t, gpt2Dir+"/encoder.json"))
	viaFile, err := Load(filepath.Join(gptDir, "encoder.json"))
	if err != nil {
		t.Fatal(err)
	}
	viaDir := loadShared(t, gpt2Dir)
	if viaFile.VocabSize() != viaDir.VocabSize() || viaDir.VocabSize() != 50257 || viaDir.BOS() != 50256 {
		t.Errorf("gpt2 vocab %d/%d, BOS %d", viaFile.VocabSize(), viaDir.VocabSize(), viaDir.BOS())
	}
	if _, ok := loadShared(t, filepath.Dir(spbpePath)).(*BPE); !ok {
		t.Error("directory with tokenizer.json did not load as *BPE")
	}
	if _, err := Load(sharedFile(t, "data/tokenizers/llama2/tokenizer.model")); err == nil {
		t.Error("tokenizer.model: no error")
	}
	if _, err := Load(t.TempDir()); err == nil {
		t.Error("empty directory: no error")
	}
	if _, err := Load(filepath.Join(t.TempDir(), "missing.json")); err == nil {
		t.Error("missing file: no error")
	}
	dir := t.TempDir()
	if err := os.WriteFile(filepath.Join(dir, "encoder.json"), []byte(`{"a": 0, "b": 1}`), 0o644); err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(filepath.Join(dir, "vocab.bpe"), []byte("#version: 0.2\na b c\n"), 0o644); err != nil {
		t.Fatal(err)
	}
	if _, err := Load(dir); err == nil || !strings.Contains(err.Error(), "vocab.bpe") {
		t.Errorf("bad vocab.bpe: err = %v", err)
	}
}

// TestSplitBeforeIsExact checks the chunking shortcut (canSplitBefore)
// against merging the whole text as one sequence.
func TestSplitBeforeIsExact(t *testing.T) {
	text := shakespeare(t, 20000) + " naïve  café 🙂\n\n  x"
	sp := loadShared(t, spbpePath).(*BPE)
	if sp.splitMark != "▁" {
		t.Fatalf("spbpe32k splitMark = %q, want ▁", sp.splitMark)
	}
	chunked := sp.Encode(text)
	sp.splitMark = ""
	whole := sp.Encode(text)
	sp.splitMark = "▁"
	if !slices.Equal(chunked, whole) {
		t.Errorf("spbpe32k: chunked and whole-text encodings differ")
	}
	l2 := loadShared(t, "data/tokenizers/llama2/tokenizer.bin").(*Llama2c)
	if !l2.splitSpace {
		t.Fatal("llama2 tokenizer.bin not splittable")
	}
	chunked = l2.Encode(text)
	l2.splitSpace = false
	whole = l2.Encode(text)
	l2.splitSpace = true
	if !slices.Equal(chunked, whole) {
		t.Errorf("llama2: chunked and whole-text encodings differ")
	}
	if canSplitBefore("▁", []string{"▁a", "▁▁", "a▁"}) || !canSplitBefore("▁", []string{"▁a", "▁▁b", "ab"}) {
		t.Error("canSplitBefore is wrong on a small vocabulary")
	}
	var chunks []string
	splitBefore("▁▁a▁b▁▁c", "▁", func(s string) { chunks = append(chunks, s) })
	if !slices.Equal(chunks, []string{"▁▁a", "▁b", "▁▁c"}) {
		t.Errorf("splitBefore = %q", chunks)
	}
}

// TestGPT2AsTokenizerJSON writes the GPT-2 files as a tokenizer.json (a
// ByteLevel pre-tokenizer with its built-in regex) and checks the golden
// ids, and that add_prefix_space adds the space.
func TestGPT2AsTokenizerJSON(t *testing.T) {
	dir := filepath.Dir(sharedFile(t, gpt2Dir+"/encoder.json"))
	encData, err := os.ReadFile(filepath.Join(dir, "encoder.json"))
	if err != nil {
		t.Fatal(err)
	}
	bpeData, err := os.ReadFile(filepath.Join(dir, "vocab.bpe"))
	if err != nil {
		t.Fatal(err)
	}
	var vocab map[string]int
	if err := json.Unmarshal(encData, &vocab); err != nil {
		t.Fatal(err)
	}
	var merges []string
	for _, l := range strings.Split(string(bpeData), "\n")[1:] {
		if l != "" {
			merges = append(merges, l)
		}
	}
	write := func(prefix bool) Tokenizer {
		f := map[string]any{
			"added_tokens":  []any{map[string]any{"id": 50256, "content": "<|endoftext|>", "special": true}},
			"pre_tokenizer": map[string]any{"type": "ByteLevel", "add_prefix_space": prefix, "trim_offsets": true, "use_regex": true},
			"decoder":       map[string]any{"type": "ByteLevel"},
			"model":         map[string]any{"type": "BPE", "vocab": vocab, "merges": merges},
		}
		data, err := json.Marshal(f)
		if err != nil {
			t.Fatal(err)
		}
		tok, err := ParseHF(data, "gpt2-tokenizer.json")
		if err != nil {
			t.Fatal(err)
		}
		return tok
	}
	tok := write(false)
	for _, c := range loadGolden(t, "tokenizer_gpt2.json") {
		if got := tok.Encode(c.Text); !slices.Equal(got, c.IDs) {
			t.Errorf("Encode(%q) = %v, want %v", c.Text, got, c.IDs)
		}
	}
	if tok.BOS() != 50256 || tok.EOS() != 50256 {
		t.Errorf("BOS, EOS = %d, %d", tok.BOS(), tok.EOS())
	}
	if got := tok.Encode("a<|endoftext|>b"); len(got) != 3 || got[1] != 50256 {
		t.Errorf("added token not split out: %v", got)
	}
	pre := write(true)
	if got, want := pre.Encode("Hello world"), tok.Encode(" Hello world"); !slices.Equal(got, want) {
		t.Errorf("add_prefix_space: %v, want %v", got, want)
	}
}

func TestTokenizerConfig(t *testing.T) {
	p := rewriteJSON(t, spbpePath, func(map[string]any) {})
	cfg := filepath.Join(filepath.Dir(p), "tokenizer_config.json")
	write := func(s string) {
		if err := os.WriteFile(cfg, []byte(s), 0o644); err != nil {
			t.Fatal(err)
		}
	}
	write(`{"bos_token": {"content": "</s>"}, "eos_token": null}`)
	tok, err := Load(filepath.Dir(p))
	if err != nil {
		t.Fatal(err)
	}
	if eos, _ := tok.TokenID("</s>"); tok.BOS() != eos || tok.EOS() != -1 {
		t.Errorf("BOS, EOS = %d, %d; want %d, -1", tok.BOS(), tok.EOS(), eos)
	}
	write(`{"bos_token": "<nope>"}`)
	if _, err := Load(p); err == nil || !strings.Contains(err.Error(), cfg) || !strings.Contains(err.Error(), "bos_token") {
		t.Errorf("unknown bos_token: err = %v", err)
	}
	write(`{"bos_token": `)
	if _, err := Load(p); err == nil || !strings.Contains(err.Error(), cfg) {
		t.Errorf("truncated config: err = %v", err)
	}
}
