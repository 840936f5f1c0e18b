package lora

import (
	"math"
	"path/filepath"
	"strings"
	"testing"

	"github.com/gopeft/gopeft/model/format"
	"github.com/gopeft/gopeft/peft"
	"github.com/gopeft/gopeft/peft/methodtest"
)

// denseDelta is s·B·A [out, in] in float64.
func denseDelta(b, a []float32, out, r, in int, s float64) []float64 {
	d := make([]float64, out*in)
	for i := 0; i < out; i++ {
		for k := 0; k < r; k++ {
			bik := float64(b[i*r+k]) * s
			for j := 0; j < in; j++ {
				d[i*in+j] += bik * float64(a[k*in+j])
			}
		}
	}
	return d
}

// TestGGUFAdapterDeltas writes a LoRA adapter (rank and alpha patterns,
// rsLoRA: every scale differs from llama.cpp's alpha/r) as a GGUF LoRA,
// reads it back, and rebuilds each target's delta as llama.cpp does —
// (alpha/rank)·B·A with alpha from adapter.lora.alpha and rank from
// lora_b's ne[0] — against the adapter's own s·B·A, in llama.cpp's q/k
// row order.
func TestGGUFAdapterDeltas(t *testing.T) {
	for _, rs := range []bool{false, true} {
		cfg := NewConfig()
		cfg.R, cfg.LoraAlpha, cfg.InitLoraWeights, cfg.UseRSLoRA = 4, 8, InitRandom, rs
		cfg.TargetModules = peft.ModuleList("q_proj", "k_proj", "v_proj", "o_proj", "down_proj")
		cfg.RankPattern = map[string]int{"k_proj": 2}
		cfg.AlphaPattern = map[string]float64{"model.layers.1.self_attn.q_proj": 3}
		m := New(cfg)
		pm := methodtest.BaseModel(t)
		if _, err := pm.AddAdapter(peft.DefaultAdapter, m); err != nil {
			t.Fatal(err)
		}
		path := filepath.Join(t.TempDir(), "lora.gguf")
		if err := WriteGGUF(pm, peft.DefaultAdapter, path, "f32", "test"); err != nil {
			t.Fatal(err)
		}
		f, err := format.ReadGGUF(path)
		if err != nil {
			t.Fatal(err)
		}
		for k, want := range map[string]any{"general.architecture": "llama", "general.type": "adapter", "adapter.type": "lora", "adapter.lora.alpha": float32(8)} {
			if f.Metadata[k] != want {
				t.Errorf("metadata %s = %v (%T), want %v", k, f.Metadata[k], f.Metadata[k], want)
			}
		}
		if len(f.Tensors) != 2*len(m.layers) {
			t.Fatalf("%d tensors for %d layers", len(f.Tensors), len(m.layers))
		}
		c := pm.Base.Config
		for _, ly := range m.layers {
			g, _ := format.HFToGGUFName(ly.linear.Name + ".weight")
			out, in, r := ly.linear.Out(), ly.linear.In(), ly.f.A.Value.Shape[0]
			ta, erra := f.Tensor(g + ".lora_a")
			tb, errb := f.Tensor(g + ".lora_b")
			if erra != nil || errb != nil {
				t.Fatalf("%s: %v %v", g, erra, errb)
			}
			ia, ib := f.Tensors[indexOf(f, g+".lora_a")], f.Tensors[indexOf(f, g+".lora_b")]
			if ia.Dims[0] != uint64(in) || ia.Dims[1] != uint64(r) || ib.Dims[0] != uint64(r) || ib.Dims[1] != uint64(out) || ia.Type.String() != "F32" {
				t.Fatalf("%s: ne lora_a %v lora_b %v (%s), want {%d %d} {%d %d}", g, ia.Dims, ib.Dims, ia.Type, in, r, r, out)
			}
			a, _ := ta.Float32()
			b, _ := tb.Float32()
			got := denseDelta(b, a, out, r, in, float64(float32(8)/float32(ib.Dims[0]))) // llama.cpp's alpha/rank
			want := denseDelta(ly.f.B.Value.Data, ly.f.A.Value.Data, out, r, in, float64(ly.f.Scale))
			heads := 0
			switch {
			case strings.HasSuffix(g, "attn_q.weight"):
				heads = c.NumAttentionHeads
			case strings.HasSuffix(g, "attn_k.weight"):
				heads = c.NumKeyValueHeads
			}
			if heads > 0 {
				w32 := make([]float32, len(want))
				for i, v := range want {
					w32[i] = float32(v)
				}
				p := format.UnpermuteQKFromHF(w32, heads, out, in)
				for i, v := range p {
					want[i] = float64(v)
				}
			}
			var worst, norm float64
			for i := range got {
				worst = math.Max(worst, math.Abs(got[i]-want[i]))
				norm = math.Max(norm, math.Abs(want[i]))
			}
			if norm == 0 || worst > 1e-6*norm {
				t.Errorf("rslora %v: %s: delta differs by %g (largest %g)", rs, g, worst, norm)
			}
		}
	}
}

func indexOf(f *format.GGUFFile, name string) int {
	for i, ti := range f.Tensors {
		if ti.Name == name {
			return i
		}
	}
	return -1
}

func TestGGUFAdapterRefusals(t *testing.T) {
	dir := t.TempDir()
	try := func(cfg *Config, typ string) error {
		pm := methodtest.BaseModel(t)
		if _, err := pm.AddAdapter(peft.DefaultAdapter, New(cfg)); err != nil {
			t.Fatal(err)
		}
		return WriteGGUF(pm, peft.DefaultAdapter, filepath.Join(dir, "x.gguf"), typ, "x")
	}
	dora := NewConfig()
	dora.UseDoRA = true
	if err := try(dora, "f32"); err == nil || !strings.Contains(err.Error(), "DoRA") {
		t.Errorf("DoRA: %v", err)
	}
	if err := try(NewConfig(), "q4_0"); err == nil || !strings.Contains(err.Error(), `"q4_0"`) {
		t.Errorf("q4_0 adapter: %v", err)
	}
	head := NewConfig()
	head.TargetModules = peft.ModuleList("lm_head")
	if err := try(head, "f32"); err == nil || !strings.Contains(err.Error(), "lm_head") {
		t.Errorf("lm_head on a tied base: %v", err)
	}
	// q8_0: lora_a rows (64 inputs) are whole blocks, lora_b rows (r = 8) are not.
	pm := methodtest.BaseModel(t)
	if _, err := pm.AddAdapter(peft.DefaultAdapter, New(NewConfig())); err != nil {
		t.Fatal(err)
	}
	_, ts, err := GGUFAdapter(pm, peft.DefaultAdapter, "q8_0")
	if err != nil {
		t.Fatal(err)
	}
	for _, tt := range ts {
		want := format.Q8_0
		if strings.HasSuffix(tt.Name, ".lora_b") {
			want = format.F16
		}
		if tt.DType != want {
			t.Errorf("q8_0: %s stored as %s, want %s", tt.Name, tt.DType, want)
		}
	}
}
