package lowrank

import (
	"fmt"
	"math"
	"strconv"
	"strings"

	"gonum.org/v1/gonum/mat"

	"github.com/gopeft/gopeft/tensor"
)

// The initialisations that start from the base weight W and take their
// principal part out of it (the base becomes W − s·B·A, so the model's
// output is unchanged at step 0).
const (
	// InitPiSSA: A = √S_r·V_rᵀ, B = U_r·√S_r from W's top-r singular
	// triplets with S_r divided by s (Meng et al. 2024), by a full SVD.
	InitPiSSA Init = "pissa"
	// InitOLoRA: B = Q[:, :r], A = R[:r] from W's QR decomposition
	// (Büyükakyüz 2024).
	InitOLoRA Init = "olora"
)

// pissaNiter parses "pissa_niter_K": PiSSA by randomized SVD with K
// subspace iterations.
func pissaNiter(i Init) (int, bool) {
	k, ok := strings.CutPrefix(string(i), "pissa_niter_")
	if !ok {
		return 0, false
	}
	n, err := strconv.Atoi(k)
	return n, err == nil && n >= 0
}

// ChangesBase reports an initialisation that rewrites the base weight.
func (i Init) ChangesBase() bool {
	_, niter := pissaNiter(i)
	return i == InitPiSSA || i == InitOLoRA || niter
}

// FromWeight initialises f from the base weight w [out, in] (float32 or
// bf16) as PiSSA or OLoRA do and returns the residual W − s·B·A that
// replaces it, in float32. g draws the randomized SVD's test matrix.
func (f *Factors) FromWeight(i Init, w *tensor.Tensor, g *tensor.RNG) ([]float32, error) {
	out, in, r := w.Shape[0], w.Shape[1], f.A.Value.Shape[0]
	if r > min(out, in) {
		return nil, fmt.Errorf("init_lora_weights %q: rank %d exceeds the %d×%d weight's", string(i), r, out, in)
	}
	if f.Scale == 0 {
		return nil, fmt.Errorf("init_lora_weights %q needs a non-zero scale (lora_alpha)", string(i))
	}
	wf := w.ToF32().Data
	W := mat.NewDense(out, in, nil)
	for k, v := range wf {
		W.RawMatrix().Data[k] = float64(v)
	}
	A, B := f.A.Value.Data, f.B.Value.Data
	s := float64(f.Scale)
	switch niter, random := pissaNiter(i); {
	case i == InitOLoRA:
		// Householder QR; for a wide W the reflectors come from its first
		// out columns, so W[:, :out] = Q·R₁ and R = Qᵀ·W.
		var qr mat.QR
		qr.Factorize(W.Slice(0, out, 0, min(out, in)))
		var Q, R mat.Dense
		qr.QTo(&Q)
		R.Mul(Q.T(), W)
		for q := 0; q < r; q++ {
			for k := 0; k < in; k++ {
				A[q*in+k] = float32(R.At(q, k))
			}
			for o := 0; o < out; o++ {
				B[o*r+q] = float32(Q.At(o, q))
			}
		}
	case i == InitPiSSA || random:
		var U, V mat.Dense
		var S []float64
		if random {
			U, S, V = randomizedSVD(W, r, niter, g)
		} else {
			var svd mat.SVD
			if !svd.Factorize(W, mat.SVDThin) {
				return nil, fmt.Errorf("init_lora_weights %q: the SVD did not converge", string(i))
			}
			svd.UTo(&U)
			svd.VTo(&V)
			S = svd.Values(nil)
		}
		for q := 0; q < r; q++ {
			root := math.Sqrt(S[q] / s)
			for k := 0; k < in; k++ {
				A[q*in+k] = float32(root * V.At(k, q))
			}
			for o := 0; o < out; o++ {
				B[o*r+q] = float32(U.At(o, q) * root)
			}
		}
	default:
		return nil, fmt.Errorf("init_lora_weights %q does not start from the weight", string(i))
	}
	d := f.Delta()
	for k := range wf {
		wf[k] -= d[k]
	}
	return wf, nil
}

// randomizedSVD is torch.svd_lowrank(W, q = r, niter) (Halko et al.): an
// orthonormal basis Q of W·Ω refined by niter subspace iterations, then the
// SVD of Qᵀ·W. It works on Wᵀ when W is wide, as torch does.
func randomizedSVD(W *mat.Dense, r, niter int, g *tensor.RNG) (U mat.Dense, S []float64, V mat.Dense) {
	m, n := W.Dims()
	var A mat.Matrix = W
	if m < n {
		A = W.T()
		m, n = n, m
	}
	omega := mat.NewDense(n, r, nil)
	for k := range omega.RawMatrix().Data {
		omega.RawMatrix().Data[k] = g.Normal()
	}
	orth := func(x *mat.Dense) *mat.Dense {
		var qr mat.QR
		qr.Factorize(x)
		var q mat.Dense
		qr.QTo(&q)
		_, c := x.Dims()
		return mat.DenseCopyOf(q.Slice(0, q.RawMatrix().Rows, 0, c))
	}
	var x mat.Dense
	x.Mul(A, omega)
	Q := orth(&x)
	for it := 0; it < niter; it++ {
		var y mat.Dense
		y.Mul(A.T(), Q)
		Q = orth(&y)
		var z mat.Dense
		z.Mul(A, Q)
		Q = orth(&z)
	}
	var Bm mat.Dense
	Bm.Mul(Q.T(), A) // [r, n]
	var svd mat.SVD
	svd.Factorize(&Bm, mat.SVDThin)
	var ub, vb mat.Dense
	svd.UTo(&ub)
	svd.VTo(&vb)
	S = svd.Values(nil)
	var u mat.Dense
	u.Mul(Q, &ub) // [m, r]
	if W.RawMatrix().Rows < W.RawMatrix().Cols {
		return vb, S, u
	}
	return u, S, vb
}
