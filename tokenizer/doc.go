// Package tokenizer turns text into LLaMA-family token ids and back.
//
// Three file formats are read, all behind the [Tokenizer] interface and the
// [Load] function, which picks the format from the path:
//
//   - llama2.c's tokenizer.bin ([Llama2c]): a SentencePiece BPE vocabulary
//     with one score per piece. Encoding follows llama2.c's run.c: a " "
//     dummy prefix for non-empty text, one token per UTF-8 codepoint (byte
//     fallback <0xNN> = id NN+3 otherwise), then repeatedly merging the
//     adjacent pair whose concatenation is the highest-scoring piece. For
//     LLaMA-2 this gives the same ids as SentencePiece.
//   - Hugging Face tokenizer.json with a BPE model ([BPE], [LoadHF]), in
//     two flavours: SentencePiece-style (LLaMA-2, Mistral: "▁" for spaces
//     from a Prepend/Replace normalizer or a Metaspace pre-tokenizer, byte
//     fallback) and byte-level (GPT-2, LLaMA-3: a regex Split and a
//     ByteLevel pre-tokenizer mapping every byte to a printable character).
//     Merges are applied by rank; added tokens (such as "<|eot_id|>") are
//     split out of the text before anything else. Components this package
//     does not implement (Unigram or WordPiece models, NFC normalizers, ...)
//     are reported as errors naming the file and the JSON key, never
//     ignored.
//   - The original GPT-2 encoder.json and vocab.bpe ([LoadGPT2]).
//
// Encode never adds BOS or EOS; use [EncodeSpecial] for that. Decode leaves
// special tokens out, joins byte tokens back into bytes and, for
// SentencePiece-style vocabularies, drops the leading space that encoding
// added, so Decode(Encode(s)) == s for ordinary text. DecodeToken gives the
// text of one token for streaming, with llama2.c's rule of dropping a
// leading space after BOS; a byte token yields one raw byte, so a caller
// printing a stream should buffer incomplete UTF-8.
//
// Merging uses a heap over a linked list of symbols, O(n log n) in the
// length of a word. Byte-level text is cut into words by the regex; for
// SentencePiece-style vocabularies (where no piece has a space mark after
// another character) text is cut before each space mark, which cannot
// change the result. Words up to 64 bytes are cached, so encoding runs at
// about 10 MB/s or more (see BenchmarkEncode).
//
// Regex pre-tokenizers use github.com/dlclark/regexp2, since the GPT-2 and
// LLaMA-3 patterns need lookahead, which Go's regexp lacks; those two exact
// patterns are run by hand-written scanners instead, which are checked
// against regexp2 (FuzzFastPreTokenizers). \s is Unicode White_Space, as in
// Rust and Oniguruma; JavaScript differs on U+0085 and U+FEFF.
//
// Not implemented: post_processor (Encode adds no special tokens), the
// "normalized" flag of added tokens (they are matched in the raw text),
// SentencePiece .model files, Unigram and WordPiece models.
//
// All tokenizers are safe for concurrent use.
package tokenizer
