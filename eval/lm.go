package eval

import (
	"context"
	"fmt"
	"math"
	"strings"
	"unicode/utf8"

	"github.com/gopeft/gopeft/tokenizer"
)

// Request asks for the log-probability of Continuation given Context.
// The model reads Context followed by Continuation as one sequence and
// sums log p(Continuation[i] | everything before it). The scorer puts BOS
// first in Context where the sequence starts a document; the model must
// not add one. Context is never empty.
type Request struct {
	Context      []int
	Continuation []int
}

// LM is the model side of evaluation.
type LM interface {
	// LogLikelihood returns, for each request, the summed log-probability
	// (natural log) of its continuation tokens. All choices of one item
	// arrive in one call, so an implementation may compute a shared
	// context once.
	LogLikelihood(ctx context.Context, reqs []Request) ([]float64, error)
}

// MaxLengther is implemented by models with a context window; the scorer
// then truncates requests to it (Options.MaxLen overrides it).
type MaxLengther interface {
	MaxLength() int
}

// EncodePair tokenizes a context and its continuation as lm-eval does:
// trailing white space of context moves to the front of continuation, the
// whole text is encoded, and the continuation is whatever follows the
// tokens of the context alone. The context tokens start with BOS when the
// tokenizer has one (an empty context is just BOS). If the tokenizer merges
// across the boundary, the split is still at len(Encode(context)), as in
// lm-eval.
func EncodePair(tok tokenizer.Tokenizer, context, continuation string) (ctxIDs, contIDs []int) {
	r := encodeChoices(tok, context, []string{continuation})[0]
	return r.Context, r.Continuation
}

// encodeChoices is EncodePair for several continuations of one context,
// encoding the context once.
func encodeChoices(tok tokenizer.Tokenizer, context string, continuations []string) []Request {
	var moved string
	if trimmed := strings.TrimRight(context, " \t\n\r\v\f"); len(trimmed) < len(context) {
		moved = context[len(trimmed):]
		context = trimmed
	}
	var ctxIDs []int
	if b := tok.BOS(); b >= 0 {
		ctxIDs = []int{b}
	}
	nctx := 0
	if context != "" {
		nctx = len(tok.Encode(context))
	}
	reqs := make([]Request, len(continuations))
	for i, cont := range continuations {
		whole := tok.Encode(context + moved + cont)
		n := min(nctx, len(whole))
		reqs[i] = Request{
			Context:      append(append([]int(nil), ctxIDs...), whole[:n]...),
			Continuation: append([]int(nil), whole[n:]...),
		}
	}
	return reqs
}

// truncate keeps at most maxLen+1 tokens of context+continuation (the
// model then sees maxLen inputs), dropping context from the left but
// keeping at least one context token, as lm-eval's left truncation does.
func truncate(r Request, maxLen int) Request {
	if maxLen <= 0 {
		return r
	}
	over := len(r.Context) + len(r.Continuation) - (maxLen + 1)
	if over <= 0 {
		return r
	}
	drop := min(over, len(r.Context)-1)
	r.Context = r.Context[drop:]
	return r
}

// callLM sends reqs in one call and checks the answer's shape and values.
func callLM(ctx context.Context, lm LM, reqs []Request) ([]float64, error) {
	lls, err := lm.LogLikelihood(ctx, reqs)
	if err != nil {
		return nil, err
	}
	if len(lls) != len(reqs) {
		return nil, fmt.Errorf("model returned %d log-likelihoods for %d requests", len(lls), len(reqs))
	}
	for i, v := range lls {
		if math.IsNaN(v) || v > 1e-6 {
			return nil, fmt.Errorf("model returned log-likelihood %v for request %d (want a finite value <= 0)", v, i)
		}
	}
	return lls, nil
}

// normalized divides each log-likelihood by a length of its choice text
// (at least 1, so an empty choice cannot divide by zero).
func normalized(lls []float64, choices []string, length func(string) int) []float64 {
	out := make([]float64, len(lls))
	for i, ll := range lls {
		out[i] = ll / float64(max(1, length(choices[i])))
	}
	return out
}

func charLen(s string) int { return utf8.RuneCountInString(s) }
func byteLen(s string) int { return len(s) }
