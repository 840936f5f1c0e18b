package lora

import (
	"math"
	"path/filepath"
	"reflect"
	"testing"

	"github.com/gopeft/gopeft/model/format"
	"github.com/gopeft/gopeft/peft"
	"github.com/gopeft/gopeft/peft/methodtest"
	"github.com/gopeft/gopeft/tensor"
)

// gram returns XᵀX of X [rows, cols] (cols × cols) or, with rows, X·Xᵀ.
func gram(x []float32, rows, cols int, byRows bool) [][]float64 {
	n, k := cols, rows
	if byRows {
		n, k = rows, cols
	}
	g := make([][]float64, n)
	for i := range g {
		g[i] = make([]float64, n)
		for j := 0; j < n; j++ {
			for q := 0; q < k; q++ {
				if byRows {
					g[i][j] += float64(x[i*cols+q]) * float64(x[j*cols+q])
				} else {
					g[i][j] += float64(x[q*cols+i]) * float64(x[q*cols+j])
				}
			}
		}
	}
	return g
}

// spectralNorm estimates ‖W‖₂ of W [out, in] by power iteration.
func spectralNorm(w []float32, out, in int) float64 {
	v := make([]float64, in)
	for i := range v {
		v[i] = 1 / math.Sqrt(float64(in))
	}
	var s float64
	for it := 0; it < 200; it++ {
		u := make([]float64, out)
		for o := 0; o < out; o++ {
			for k := 0; k < in; k++ {
				u[o] += float64(w[o*in+k]) * v[k]
			}
		}
		nv := make([]float64, in)
		for o := 0; o < out; o++ {
			for k := 0; k < in; k++ {
				nv[k] += float64(w[o*in+k]) * u[o]
			}
		}
		var n float64
		for _, x := range nv {
			n += x * x
		}
		n = math.Sqrt(n)
		s = math.Sqrt(n)
		for k := range v {
			v[k] = nv[k] / n
		}
	}
	return s
}

// PiSSA and OLoRA leave the model's output as it was, and their factors
// are what they should be: PiSSA's B·A the top-r singular part of W (B's
// and A's Gram matrices diagonal with S/s, the residual orthogonal to B's
// columns and no larger than the r-th singular value), OLoRA's B the first
// r columns of Q (orthonormal) and A the first r rows of R (upper
// triangular).
func TestPiSSAAndOLoRAInit(t *testing.T) {
	ids := []int{1, 328, 384, 353, 219, 207, 297, 389}
	for _, init := range []Init{InitPiSSA, "pissa_niter_4", InitOLoRA} {
		pm := methodtest.BaseModel(t)
		orig := map[string][]float32{}
		for _, l := range pm.Linears() {
			orig[l.Name] = append([]float32(nil), l.Weight.Value.Data...)
		}
		before := methodtest.Logits(t, pm.Base, ids)
		c := NewConfig()
		c.R, c.LoraAlpha, c.InitLoraWeights, c.Seed = 4, 8, init, 1
		c.TargetModules = peft.ModuleList("q_proj", "down_proj")
		m := New(c)
		if _, err := pm.AddAdapter(peft.DefaultAdapter, m); err != nil {
			t.Fatal(err)
		}
		if d := methodtest.MaxAbsDiff(before, methodtest.Logits(t, pm.Base, ids)); d > 1e-4 {
			t.Errorf("%s changed the logits by %g", init, d)
		}
		for _, ly := range m.layers {
			in, out, r := ly.linear.In(), ly.linear.Out(), c.R
			A, B, s := ly.f.A.Value.Data, ly.f.B.Value.Data, float64(ly.f.Scale)
			res := ly.linear.Weight.Value.Data
			d := ly.f.Delta()
			for k := range res {
				if e := math.Abs(float64(res[k] + d[k] - orig[ly.linear.Name][k])); e > 1e-5 {
					t.Fatalf("%s %s: residual + s·B·A differs from W by %g", init, ly.linear.Name, e)
				}
			}
			gA, gB := gram(A, r, in, true), gram(B, out, r, false)
			for i := 0; i < r; i++ {
				for j := 0; j < r; j++ {
					if init == InitOLoRA {
						want := 0.0
						if i == j {
							want = 1
						}
						if math.Abs(gB[i][j]-want) > 1e-4 {
							t.Errorf("olora %s: BᵀB[%d][%d] = %v, want %v", ly.linear.Name, i, j, gB[i][j], want)
						}
					} else if i != j && (math.Abs(gA[i][j]) > 1e-3*gA[i][i] || math.Abs(gB[i][j]) > 1e-3*gB[i][i]) {
						t.Errorf("%s %s: factors' Gram matrices are not diagonal at [%d][%d]: %v %v", init, ly.linear.Name, i, j, gA[i][j], gB[i][j])
					}
				}
			}
			if init == InitOLoRA {
				for q := 0; q < r; q++ {
					for k := 0; k < q; k++ {
						if A[q*in+k] != 0 && math.Abs(float64(A[q*in+k])) > 1e-5 {
							t.Errorf("olora %s: A[%d][%d] = %v, R is upper triangular", ly.linear.Name, q, k, A[q*in+k])
						}
					}
				}
				continue
			}
			// σ_q = s·(A·Aᵀ)_qq = s·(BᵀB)_qq, falling; the residual's norm is
			// at most σ_r (equal for the exact SVD).
			for q := 0; q < r; q++ {
				if math.Abs(gA[q][q]-gB[q][q]) > 1e-3*gA[q][q] {
					t.Errorf("%s %s: (AAᵀ)_%d%d = %v but (BᵀB)_%d%d = %v", init, ly.linear.Name, q, q, gA[q][q], q, q, gB[q][q])
				}
				if q > 0 && gA[q][q] > gA[q-1][q-1]*(1+1e-4) {
					t.Errorf("%s %s: singular values not falling: %v then %v", init, ly.linear.Name, s*gA[q-1][q-1], s*gA[q][q])
				}
			}
			sr, rest := s*gA[r-1][r-1], spectralNorm(res, out, in)
			if init == InitPiSSA && rest > sr*(1+1e-3) {
				t.Errorf("pissa %s: the residual's norm %v exceeds σ_r = %v: not the top singular part", ly.linear.Name, rest, sr)
			}
			t.Logf("%s %s: σ_r %.4f, residual ‖·‖₂ %.4f", init, ly.linear.Name, sr, rest)
		}
	}
}

// An adapter initialised with PiSSA or OLoRA is saved as PEFT's "convert to
// LoRA" form: rank and alpha doubled (rsLoRA: alpha × √2), init true, A'
// = [A; A₀], B' = [B, −B₀]; loaded on the original base it gives the
// trained model's logits.
func TestPiSSASavesAsLoRAForTheOriginalBase(t *testing.T) {
	ids := []int{1, 328, 384, 353, 219, 207, 297, 389}
	for _, tc := range []struct {
		init   Init
		rslora bool
	}{{InitPiSSA, false}, {InitOLoRA, true}, {"pissa_niter_2", false}} {
		pm := methodtest.BaseModel(t)
		c := NewConfig()
		c.R, c.LoraAlpha, c.InitLoraWeights, c.UseRSLoRA, c.Seed = 3, 6, tc.init, tc.rslora, 1
		c.TargetModules = peft.ModuleList("v_proj", "up_proj")
		a, err := pm.AddAdapter(peft.DefaultAdapter, New(c))
		if err != nil {
			t.Fatal(err)
		}
		g := tensor.NewRNG(4) // "training"
		for _, p := range a.Params {
			for i := range p.Var.Value.Data {
				p.Var.Value.Data[i] += 0.05 * float32(g.Normal())
			}
		}
		trained := methodtest.Logits(t, pm.Base, ids)
		dir := t.TempDir()
		if err := pm.SaveAdapter(dir, peft.DefaultAdapter); err != nil {
			t.Fatal(err)
		}
		var cfg map[string]any
		methodtest.ReadJSON(t, filepath.Join(dir, peft.ConfigFile), &cfg)
		wantAlpha := 12.0
		if tc.rslora {
			wantAlpha = 6 * math.Sqrt2
		}
		if cfg["r"] != float64(6) || math.Abs(cfg["lora_alpha"].(float64)-wantAlpha) > 1e-9 || cfg["init_lora_weights"] != true {
			t.Errorf("%s: saved r %v lora_alpha %v init %v, want 6, %v, true", tc.init, cfg["r"], cfg["lora_alpha"], cfg["init_lora_weights"], wantAlpha)
		}
		ts, _, err := format.ReadSafetensors(filepath.Join(dir, peft.WeightsFile))
		if err != nil {
			t.Fatal(err)
		}
		if s := ts["base_model.model.model.layers.0.mlp.up_proj.lora_B.weight"].Shape; !reflect.DeepEqual(s, []int{172, 6}) {
			t.Errorf("%s: up_proj's lora_B saved as %v, want [172 6]", tc.init, s)
		}
		if m := a.Method.(*Method); m.Cfg.InitLoraWeights != tc.init || m.Cfg.R != 3 {
			t.Errorf("saving changed the live config: init %v r %d", m.Cfg.InitLoraWeights, m.Cfg.R)
		}
		fresh := methodtest.BaseModel(t)
		if _, err := fresh.LoadAdapter(dir, peft.DefaultAdapter); err != nil {
			t.Fatal(err)
		}
		if d := methodtest.MaxAbsDiff(trained, methodtest.Logits(t, fresh.Base, ids)); d > 1e-4 {
			t.Errorf("%s: the converted adapter on the original base differs from the trained model by %g", tc.init, d)
		}
	}
}
