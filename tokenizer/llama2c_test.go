package tokenizer

import (
	"encoding/binary"
	"encoding/json"
	"math"
	"math/rand/v2"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"testing"
)

const tok512Path = "data/models/stories260K/tok512.bin"

// naiveLlama2cMerge is run.c's merge loop transcribed literally (rescan all
// pairs after every merge): the reference for the heap-based merge.
func naiveLlama2cMerge(t *Llama2c, ids []int) []int {
	ids = slices.Clone(ids)
	for {
		best, bestID, bestIdx := llama2cNoMerge, -1, -1
		for i := 0; i+1 < len(ids); i++ {
			id, ok := t.lookup(t.pieces[ids[i]] + t.pieces[ids[i+1]])
			if ok && t.scores[id] > best {
				best, bestID, bestIdx = t.scores[id], id, i
			}
		}
		if bestIdx < 0 {
			return ids
		}
		ids[bestIdx] = bestID
		ids = slices.Delete(ids, bestIdx+1, bestIdx+2)
	}
}

// unmerged returns the codepoint/byte tokens Encode starts from.
func unmerged(t *Llama2c, text string) []int {
	out := []int{}
	for _, id := range t.Encode(text) {
		out = append(out, codepoints(t, id)...)
	}
	return out
}

// codepoints splits a token back into the tokens of its UTF-8 codepoints.
func codepoints(t *Llama2c, id int) []int {
	p := t.pieces[id]
	if _, ok := parseByteToken(p); ok || id < 3 {
		return []int{id}
	}
	var out []int
	for _, r := range p {
		if cid, ok := t.lookup(string(r)); ok {
			out = append(out, cid)
		} else {
			for _, b := range []byte(string(r)) {
				out = append(out, int(b)+3)
			}
		}
	}
	return out
}

func TestLlama2cMatchesNaiveMerge(t *testing.T) {
	for _, path := range []string{tok512Path, "data/tokenizers/llama2/tokenizer.bin"} {
		tok := loadShared(t, path).(*Llama2c)
		data, err := os.ReadFile(sharedFile(t, "data/text/tinyshakespeare.txt"))
		if err != nil {
			t.Fatal(err)
		}
		texts := []string{"héllo wörld 🙂 ä\u00a0b", "a  b   c\n\n\td", strings.Repeat("aaaa ", 30)}
		rng := rand.New(rand.NewPCG(1, 2))
		for range 20 {
			s := rng.IntN(len(data) - 400)
			texts = append(texts, string(data[s:s+1+rng.IntN(400)]))
		}
		for _, text := range texts {
			got := tok.Encode(text)
			want := naiveLlama2cMerge(tok, unmerged(tok, text))
			if !slices.Equal(got, want) {
				t.Errorf("%s: Encode(%q)\n got %v\nwant %v", path, text, got, want)
			}
			if dec := tok.Decode(got); dec != text {
				t.Errorf("%s: Decode(Encode(%q)) = %q", path, text, dec)
			}
		}
	}
}

func TestLlama2cVocab(t *testing.T) {
	tok := loadShared(t, tok512Path).(*Llama2c)
	if tok.VocabSize() != 512 {
		t.Errorf("VocabSize = %d, want 512", tok.VocabSize())
	}
	if tok.BOS() != 1 || tok.EOS() != 2 {
		t.Errorf("BOS, EOS = %d, %d", tok.BOS(), tok.EOS())
	}
	if id, ok := tok.TokenID("<0x0A>"); !ok || id != 13 {
		t.Errorf("TokenID(<0x0A>) = %d, %v; want 13", id, ok)
	}
	// Every byte decodes from its fallback token, and a stray byte
	// (invalid UTF-8) survives Encode/Decode.
	for b := range 256 {
		if got := tok.DecodeToken(0, b+3); got != string([]byte{byte(b)}) {
			t.Fatalf("DecodeToken(<0x%02X>) = %q", b, got)
		}
	}
	if s := "a\xffb\x80"; tok.Decode(tok.Encode(s)) != s {
		t.Errorf("invalid UTF-8 did not round-trip: %v", tok.Encode(s))
	}
	// Literal byte-token text is not turned into the byte.
	if got := tok.Decode(tok.Encode("<0x41>")); got != "<0x41>" {
		t.Errorf("Decode(Encode(\"<0x41>\")) = %q", got)
	}
}

// TestLlama2cGreedyText decodes the reference runner's output of
// stories260K and compares with the text it printed.
func TestLlama2cGreedyText(t *testing.T) {
	tok := loadShared(t, tok512Path)
	data, err := os.ReadFile(sharedFile(t, "golden/stories260K/greedy.json"))
	if err != nil {
		t.Fatal(err)
	}
	var g struct {
		Tokens []int  `json:"greedy_tokens"`
		Text   string `json:"text"`
	}
	if err := json.Unmarshal(data, &g); err != nil {
		t.Fatal(err)
	}
	if got := tok.Decode(g.Tokens); got != g.Text {
		t.Errorf("Decode = %q\nwant %q", got, g.Text)
	}
	var sb strings.Builder
	for i := 1; i < len(g.Tokens); i++ {
		sb.WriteString(tok.DecodeToken(g.Tokens[i-1], g.Tokens[i]))
	}
	if sb.String() != g.Text {
		t.Errorf("streamed DecodeToken = %q\nwant %q", sb.String(), g.Text)
	}
	// Re-encoding the text gives the same ids (the model emitted the
	// tokenizer's own segmentation here).
	if ids := tok.Encode(g.Text); !slices.Equal(ids, g.Tokens[1:]) {
		t.Logf("re-encoding differs from the generated ids (allowed): %d vs %d tokens", len(ids), len(g.Tokens)-1)
	}
}

// binFile builds a tokenizer.bin from pieces.
func binFile(maxLen int32, pieces []string, scores []float32) []byte {
	b := binary.LittleEndian.AppendUint32(nil, uint32(maxLen))
	for i, p := range pieces {
		b = binary.LittleEndian.AppendUint32(b, math.Float32bits(scores[i]))
		b = binary.LittleEndian.AppendUint32(b, uint32(len(p)))
		b = append(b, p...)
	}
	return b
}

func TestLlama2cMalformed(t *testing.T) {
	good := binFile(4, []string{"<unk>", "<s>", "</s>", " ", "a", " a"}, []float32{0, 0, 0, -1, -2, -3})
	if tok, err := ParseLlama2c(good, "good.bin", 0); err != nil || tok.VocabSize() != 6 {
		t.Fatalf("good file: %v", err)
	}
	neg := slices.Clone(good)
	binary.LittleEndian.PutUint32(neg[4+4:], uint32(0xFFFFFFFF)) // token 0 length -1
	cases := map[string][]byte{
		"empty":          nil,
		"header only":    good[:3],
		"cut in header":  good[:4+5],
		"cut in piece":   good[:len(good)-1],
		"negative len":   neg,
		"zero max len":   binFile(0, []string{"a", "b", "c"}, []float32{0, 0, 0}),
		"too few tokens": binFile(4, []string{"a"}, []float32{0}),
	}
	for what, data := range cases {
		_, err := ParseLlama2c(data, "bad/tokenizer.bin", 0)
		if err == nil || !strings.Contains(err.Error(), "bad/tokenizer.bin") {
			t.Errorf("%s: err = %v, want an error naming the file", what, err)
		}
	}
	if _, err := ParseLlama2c(good, "x.bin", 7); err == nil {
		t.Error("asking for more tokens than the file has: no error")
	}
	// Truncated real file, through Load.
	dir := t.TempDir()
	p := filepath.Join(dir, "tokenizer.bin")
	if err := os.WriteFile(p, good[:len(good)-2], 0o644); err != nil {
		t.Fatal(err)
	}
	if _, err := Load(p); err == nil || !strings.Contains(err.Error(), p) {
		t.Errorf("Load(truncated) err = %v", err)
	}
}

// TestLlama2cSmallVocab checks merge order on a vocabulary built here: the
// highest score wins, ties go to the leftmost pair.
func TestLlama2cSmallVocab(t *testing.T) {
	pieces := []string{"<unk>", "<s>", "</s>", " ", "a", "b", "ab", "ba", " a", "aba"}
	scores := []float32{0, 0, 0, -1, -1, -1, -5, -5, -9, -2}
	tok, err := ParseLlama2c(binFile(8, pieces, scores), "small.bin", 0)
	if err != nil {
		t.Fatal(err)
	}
	id := func(p string) int { i, _ := tok.TokenID(p); return i }
	// " abab": pairs " a"(-9) ab(-5) ba(-5) ab(-5): the leftmost ab goes
	// first -> " ", ab, a, b; then aba(-2) beats ab(-5) -> " ", aba, b.
	want := []int{id(" "), id("aba"), id("b")}
	if got := tok.Encode("abab"); !slices.Equal(got, want) {
		t.Errorf("Encode(abab) = %v, want %v", got, want)
	}
	// No byte tokens in this vocabulary: unknown characters become <unk>.
	if got := tok.Encode("é"); !slices.Equal(got, []int{id(" "), 0, 0}) {
		t.Errorf("Encode(é) = %v", got)
	}
}
