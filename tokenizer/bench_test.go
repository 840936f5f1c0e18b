package tokenizer

import "testing"

// BenchmarkEncode encodes the first 100 KB of tinyshakespeare with each
// flavour: llama2.c (LLaMA-2 32k), SentencePiece-style tokenizer.json,
// byte-level tokenizer.json (LLaMA-3) and GPT-2 files. The word cache starts
// empty; later iterations find it warm, as encoding a long corpus does.
func BenchmarkEncode(b *testing.B) {
	text := shakespeare(b, 100<<10)
	for _, c := range []struct{ name, path string }{
		{"llama2c", "data/tokenizers/llama2/tokenizer.bin"},
		{"spbpe32k", spbpePath},
		{"llama3", llama3Path},
		{"gpt2", gpt2Dir},
	} {
		b.Run(c.name, func(b *testing.B) {
			tok := loadShared(b, c.path)
			switch tok := tok.(type) { // start with an empty word cache
			case *BPE:
				tok.cache.reset()
			case *Llama2c:
				tok.cache.reset()
			}
			b.SetBytes(int64(len(text)))
			b.ReportAllocs()
			n := 0
			for b.Loop() {
				n = len(tok.Encode(text))
			}
			b.ReportMetric(float64(n), "tokens")
		})
	}
}
