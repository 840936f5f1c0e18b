package llama

import (
	"context"
	"errors"
	"math"
	"strings"
	"testing"
)

// TestGenerateRefusesWhatItCannotDo: sampling settings outside their range,
// a length beyond the context (the KV cache would be sized for it), and a
// model whose logits are not finite are errors, not garbage.
func TestGenerateRefusesWhatItCannotDo(t *testing.T) {
	m, err := NewRandom(smallConfig(), 3)
	if err != nil {
		t.Fatal(err)
	}
	ctx := context.Background()
	for _, s := range []Sampling{{Temperature: -1}, {Temperature: math.NaN()}, {TopP: 1.5}, {TopP: -0.1}, {TopK: -1}} {
		if _, err := m.Generate(ctx, []int{1}, GenerateOptions{Sampling: s, MaxNewTokens: 2}, nil); err == nil {
			t.Errorf("sampling %+v accepted", s)
		}
	}
	if _, err := m.Generate(ctx, []int{1}, GenerateOptions{MaxNewTokens: 1_000_000_000}, nil); err == nil || !strings.Contains(err.Error(), "context") {
		t.Errorf("a billion new tokens: %v", err)
	}
	if _, err := m.Generate(ctx, []int{1}, GenerateOptions{MaxNewTokens: 63}, nil); err != nil {
		t.Errorf("filling the context exactly: %v", err)
	}
	m.Norm.Weight.Value.Data[0] = float32(math.NaN())
	if _, err := m.Generate(ctx, []int{1}, GenerateOptions{MaxNewTokens: 3}, nil); err == nil || !strings.Contains(err.Error(), "step 1") {
		t.Errorf("NaN logits: %v", err)
	}
	if err := m.CheckFinite(); !errors.Is(err, ErrNonFinite) || !strings.Contains(err.Error(), NameNorm) {
		t.Errorf("CheckFinite: %v", err)
	}
	m.ToBF16()
	m.Norm.Weight.Value.Data[0] = 1
	m.Layers[1].Up.Weight.Value.Half[5] = 0x7f80 // +Inf in bfloat16
	if err := m.CheckFinite(); err == nil || !strings.Contains(err.Error(), "layers.1.mlp.up_proj") || !strings.Contains(err.Error(), "index 5") {
		t.Errorf("CheckFinite on bf16: %v", err)
	}
}
