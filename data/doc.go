// Package data turns training and evaluation files into token sequences
// with loss masks.
//
// # Examples and labels
//
// An [Example] holds IDs and Labels of the same length, aligned in the
// Hugging Face convention: Labels[t] is the token the model should produce
// at position t, that is IDs[t] itself (or -100, [IgnoreIndex], for "no
// loss here"). The trainer shifts: the logits computed at position t-1
// (having seen IDs[:t]) are scored against Labels[t]. Labels[0] is therefore
// never a target. Padding positions have label -100.
//
// # Pipeline
//
//  1. Readers parse a file into records: [Conversation]s for instruction
//     data (Alpaca, ShareGPT / OpenAI messages, prompt/completion) or
//     [Document]s for plain text. Bad rows give a [*RowError] that names the
//     file and the line (JSONL) or the element index and its line (JSON
//     arrays); with Options.SkipInvalid they are counted in [Stats] instead.
//  2. An [Encoder] renders a Conversation through a chat [Template] and
//     tokenizes it: prompt text and response text are encoded by separate
//     Encode calls and the ids concatenated, so the prompt/response boundary
//     is exact; BOS starts the sequence and EOS follows every response.
//     By default only response tokens (and the EOS after them) carry
//     labels. Documents are tokenized with [PackText] into fixed windows.
//  3. [Load] does both for a path and a format name, returning a [Dataset].
//  4. [Batch] pads examples into flat row-major arrays; [Order] gives the
//     epoch's shuffled order as a pure function of (n, seed, epoch).
//
// # Separate encoding and SentencePiece's dummy prefix
//
// A SentencePiece-style tokenizer (llama2.c, LLaMA-2 tokenizer.json) puts a
// space in front of every encoded text. Encoding the response separately
// therefore gives it a leading space token ("▁Paris"), exactly as
// LLaMA-Factory's and Hugging Face's legacy LLaMA tokenization do. Where the
// template itself has a space at that boundary (llama2's "[/INST] {answer}"),
// the Encoder drops that space from the text before encoding, so the dummy
// prefix supplies it and no double space appears. Byte-level tokenizers
// (GPT-2, LLaMA-3) have no dummy prefix and get the text unchanged.
package data
