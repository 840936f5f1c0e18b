package kernels

import (
	"fmt"
	"math"
	"math/rand/v2"
	"testing"

	"github.com/gopeft/gopeft/tensor/parallel"
)

// withImpl runs fn once for every path this CPU supports, forcing it active.
func withImpl(t *testing.T, fn func(t *testing.T, im *impl)) {
	t.Helper()
	for _, im := range impls {
		t.Run(im.name, func(t *testing.T) {
			defer forceImpl(im)()
			fn(t, im)
		})
	}
}

// forceImpl makes im the active path and returns the undo. For the Go path
// it also turns off the assembly packing helpers, so the test covers what
// runs on other architectures.
func forceImpl(im *impl) func() {
	oldActive, oldAsm, oldT, oldTH := active, haveAsm, packBTrans, packBTransH
	active = im
	if im == goImpl {
		haveAsm, packBTrans, packBTransH = false, nil, nil
	}
	return func() { active, haveAsm, packBTrans, packBTransH = oldActive, oldAsm, oldT, oldTH }
}

func randSlice(r *rand.Rand, n int) []float32 {
	s := make([]float32, n)
	for i := range s {
		s[i] = r.Float32()*2 - 1
	}
	return s
}

// gemmCase is one multiply with its storage; ld* exceed the widths by pad.
// roundA: the path rounds A to bf16 (GemmBF16 on AVX512_BF16), so the
// reference multiplies the rounded A.
type gemmCase struct {
	transA, transB, acc bool
	m, n, k, pad        int
	roundA              bool
}

func (g gemmCase) String() string {
	return fmt.Sprintf("tA=%v tB=%v acc=%v m=%d n=%d k=%d pad=%d roundA=%v", g.transA, g.transB, g.acc, g.m, g.n, g.k, g.pad, g.roundA)
}

// dims returns the stored rows, columns and leading dimension of A and B.
func (g gemmCase) dims() (ar, ac, lda, br, bc, ldb, ldc int) {
	ar, ac = g.m, g.k
	if g.transA {
		ar, ac = g.k, g.m
	}
	br, bc = g.k, g.n
	if g.transB {
		br, bc = g.n, g.k
	}
	return ar, ac, ac + g.pad, br, bc, bc + g.pad, g.n + g.pad
}

// checkGemmCase runs mul (Gemm or a bf16 variant, already given B) and
// compares every element of C with gemmRef within the float32 rounding
// bound, and checks C's padding is untouched.
//
// Bound: two float32 sums of k products, each within k·u·Σ|a||b| of the
// exact value (u = 2⁻²⁴, so together k·ε with ε = 2⁻²³), plus one rounding
// for the accumulate: (k+2)·ε·(Σ|a||b| + |c₀|).
func checkGemmCase(t *testing.T, g gemmCase, r *rand.Rand, b []float32, mul func(a []float32, lda int, c []float32)) {
	t.Helper()
	ar, ac, lda, br, bc, ldb, ldc := g.dims()
	a := randSlice(r, max(0, (ar-1)*lda+ac))
	if b == nil {
		b = randSlice(r, max(0, (br-1)*ldb+bc))
	}
	c := randSlice(r, g.m*ldc)
	c0 := append([]float32(nil), c...)
	want := append([]float32(nil), c...)
	aRef := a
	if g.roundA {
		aRef = make([]float32, len(a))
		for i, v := range a {
			aRef[i] = FromBF16(ToBF16(v))
		}
	}
	a0 := append([]float32(nil), a...)
	gemmRef(g.transA, g.transB, g.m, g.n, g.k, aRef, lda, b, ldb, want, ldc, g.acc)
	abs := func(s []float32) []float32 {
		o := make([]float32, len(s))
		for i, v := range s {
			o[i] = float32(math.Abs(float64(v)))
		}
		return o
	}
	bound := make([]float32, len(c))
	gemmRef(g.transA, g.transB, g.m, g.n, g.k, abs(aRef), lda, abs(b), ldb, bound, ldc, false)
	mul(a, lda, c)
	for i := range a {
		if math.Float32bits(a[i]) != math.Float32bits(a0[i]) {
			t.Fatalf("%v: A[%d] changed %v -> %v", g, i, a0[i], a[i])
		}
	}
	eps := math.Pow(2, -23)
	for i := 0; i < g.m; i++ {
		for j := 0; j < ldc; j++ {
			x := i*ldc + j
			if j >= g.n {
				if c[x] != c0[x] {
					t.Fatalf("%v: padding C[%d,%d] changed %v -> %v", g, i, j, c0[x], c[x])
				}
				continue
			}
			tol := float64(g.k+2) * eps * (float64(bound[x]) + math.Abs(float64(c0[x])))
			if d := math.Abs(float64(c[x]) - float64(want[x])); !(d <= tol) {
				t.Fatalf("%v: C[%d,%d] = %v, reference %v (|diff| %g > tol %g)", g, i, j, c[x], want[x], d, tol)
			}
		}
	}
}

func runGemmCase(t *testing.T, g gemmCase, r *rand.Rand) {
	t.Helper()
	_, _, _, br, bc, ldb, ldc := g.dims()
	b := randSlice(r, max(0, (br-1)*ldb+bc))
	checkGemmCase(t, g, r, b, func(a []float32, lda int, c []float32) {
		Gemm(g.transA, g.transB, g.m, g.n, g.k, a, lda, b, ldb, c, ldc, g.acc)
	})
}

// testShapes: edge sizes around every block boundary, small enough for the
// reference loop.
func testShapes() [][3]int {
	edge := []int{1, 3, 17, 63, 65}
	var s [][3]int
	for _, m := range edge {
		for _, n := range edge {
			for _, k := range edge {
				s = append(s, [3]int{m, n, k})
			}
		}
	}
	return append(s,
		[3]int{1000, 17, 65}, [3]int{65, 1000, 3}, [3]int{17, 63, 1000}, [3]int{1, 1000, 1000},
		[3]int{3, 1000, 300}, [3]int{200, 33, 600}, [3]int{2, 4100, 3}, [3]int{1, 4100, 17},
		[3]int{150, 70, 513}, [3]int{13, 29, 0}, [3]int{0, 5, 5}, [3]int{5, 0, 5})
}

func TestGemmAgainstReference(t *testing.T) {
	withImpl(t, func(t *testing.T, im *impl) {
		r := rand.New(rand.NewPCG(1, 2))
		for i, s := range testShapes() {
			for layout := 0; layout < 4; layout++ {
				g := gemmCase{transA: layout&1 != 0, transB: layout&2 != 0, acc: (i+layout)%2 == 0,
					m: s[0], n: s[1], k: s[2], pad: (i + layout) % 3 * 5}
				runGemmCase(t, g, r)
			}
		}
	})
}

// roundsA reports whether GemmBF16 on im rounds A to bf16 for this shape:
// the VDPBF16PS paths (blocked, and the transposed GEMV up to
// RowInvariantRows rows).
func roundsA(im *impl, m int, transB bool) bool {
	switch {
	case transB && m <= RowInvariantRows:
		return im.dot4p != nil
	case m == 1:
		return false
	}
	return im.bf16 != nil
}

// runGemmBF16Case checks GemmBF16 (random bf16 B) against gemmRef on the
// widened B, and A rounded to bf16 where the active path rounds it.
func runGemmBF16Case(t *testing.T, g gemmCase, r *rand.Rand) {
	t.Helper()
	g.transA = false
	g.roundA = roundsA(active, g.m, g.transB)
	_, _, _, br, bc, ldb, ldc := g.dims()
	h := make([]BF16, max(0, (br-1)*ldb+bc))
	for j := range h {
		h[j] = ToBF16(r.Float32()*2 - 1)
	}
	wide := make([]float32, len(h))
	BF16ToF32(wide, h)
	checkGemmCase(t, g, r, wide, func(a []float32, lda int, c []float32) {
		GemmBF16(g.transB, g.m, g.n, g.k, a, lda, h, ldb, c, ldc, g.acc)
	})
}

func TestGemmBF16AgainstReference(t *testing.T) {
	withImpl(t, func(t *testing.T, im *impl) {
		r := rand.New(rand.NewPCG(3, 4))
		shapes := append(testShapes(), [3]int{40, 70, 1025}, [3]int{13, 64, 2}, [3]int{300, 100, 1})
		for i, s := range shapes {
			for _, transB := range []bool{false, true} {
				g := gemmCase{transB: transB, acc: i%2 == 0, m: s[0], n: s[1], k: s[2], pad: i % 3 * 5}
				runGemmBF16Case(t, g, r)
			}
		}
	})
}

// TestGemmBF16Edges: GemmBF16 with M > 1 around the AMX tile (32×32, 32 k
// per step) and K block (1024) edges, both layouts of B, accumulate on and
// off, padded strides.
func TestGemmBF16Edges(t *testing.T) {
	withImpl(t, func(t *testing.T, im *impl) {
		r := rand.New(rand.NewPCG(13, 14))
		var shapes [][3]int
		for _, m := range []int{2, 3, 17, 63, 65} {
			for _, n := range []int{1, 17, 100} {
				for _, k := range []int{1, 31, 33, 1025} {
					shapes = append(shapes, [3]int{m, n, k})
				}
			}
		}
		shapes = append(shapes, [3]int{1000, 17, 33}, [3]int{1000, 100, 65}, [3]int{300, 40, 1025}, [3]int{64, 64, 2048})
		for i, s := range shapes {
			for _, transB := range []bool{false, true} {
				for _, acc := range []bool{false, true} {
					g := gemmCase{transB: transB, acc: acc, m: s[0], n: s[1], k: s[2], pad: i % 3 * 5}
					runGemmBF16Case(t, g, r)
				}
			}
		}
	})
}

// TestBF16RoundsA: on the VDPBF16PS path, A is rounded to bf16 (nearest
// even) exactly as ToBF16 does, before the products: a multiply by the
// identity returns the rounded A.
func TestBF16RoundsA(t *testing.T) {
	withImpl(t, func(t *testing.T, im *impl) {
		for _, m := range []int{1, 40} {
			for _, transB := range []bool{false, true} {
				const k = 70
				a := randSlice(rand.New(rand.NewPCG(9, 10)), m*k)
				a[0], a[1] = 1+1.0/256, -(1 + 3.0/256) // ties: to even
				eye := make([]BF16, k*k)
				for p := 0; p < k; p++ {
					eye[p*k+p] = ToBF16(1)
				}
				c := make([]float32, m*k)
				GemmBF16(transB, m, k, k, a, k, eye, k, c, k, false)
				for i, v := range a {
					want := v
					if roundsA(im, m, transB) {
						want = FromBF16(ToBF16(v))
					}
					if c[i] != want {
						t.Fatalf("m=%d transB=%v: C[%d] = %v, want %v (A %v)", m, transB, i, c[i], want, v)
					}
				}
			}
		}
	})
}

// sameBits runs one random C += op(A)·op(B) of the given shape and layout
// (bit 0: transA, bit 1: transB; 4 and 5: bf16 B) twice, under setting(0)
// and setting(1), and fails unless both give bitwise the same C. setting
// returns a function that restores what it changed.
func sameBits(t *testing.T, r *rand.Rand, m, n, k, layout int, what string, setting func(i int) (restore func())) {
	t.Helper()
	transA, transB, bf := layout&1 != 0, layout&2 != 0, layout >= 4
	if bf {
		transA = false
	}
	a, b, c0 := randSlice(r, m*k), randSlice(r, k*n), randSlice(r, m*n)
	h := make([]BF16, len(b))
	F32ToBF16(h, b)
	lda, ldb := k, n
	if transA {
		lda = m
	}
	if transB {
		ldb = k
	}
	var out [2][]float32
	for i := range out {
		restore := setting(i)
		out[i] = append([]float32(nil), c0...)
		if bf {
			GemmBF16(transB, m, n, k, a, lda, h, ldb, out[i], n, true)
		} else {
			Gemm(transA, transB, m, n, k, a, lda, b, ldb, out[i], n, true)
		}
		restore()
	}
	for x := range out[0] {
		if math.Float32bits(out[0][x]) != math.Float32bits(out[1][x]) {
			t.Fatalf("m=%d n=%d k=%d layout %d: C[%d] = %v vs %v (%s)", m, n, k, layout, x, out[0][x], out[1][x], what)
		}
	}
}

// TestGemmDeterministic: the same multiply on 1 and 2 threads must agree
// bit for bit, for every layout, the GEMV path and bf16.
func TestGemmDeterministic(t *testing.T) {
	withImpl(t, func(t *testing.T, im *impl) {
		r := rand.New(rand.NewPCG(5, 6))
		shapes := [][3]int{{150, 270, 530}, {1, 700, 900}, {9, 300, 700}, {800, 300, 2100}}
		if im.name == "go" {
			shapes = [][3]int{{70, 130, 300}, {1, 700, 900}}
		}
		for _, s := range shapes {
			for layout := 0; layout < 6; layout++ {
				sameBits(t, r, s[0], s[1], s[2], layout, "1 thread vs 2", func(i int) func() {
					old := parallel.SetThreads(i + 1)
					return func() { parallel.SetThreads(old) }
				})
			}
		}
	})
}

// TestGemmKGroups: packing A one K block at a time (a tiny budget) and all
// K blocks at once must give bitwise the same C, as the summation order is
// fixed by kc alone.
func TestGemmKGroups(t *testing.T) {
	withImpl(t, func(t *testing.T, im *impl) {
		r := rand.New(rand.NewPCG(7, 8))
		for layout := 0; layout < 6; layout++ {
			// 1100: several K blocks on every path. A is packed in a phase
			// of its own here, which is what the budget bounds.
			sameBits(t, r, 150, 270, 1100, layout, "all K blocks packed at once vs one at a time", func(i int) func() {
				oldBudget, oldInTasks := packedABudget, packAInTasks
				packAInTasks = false
				if i == 1 {
					packedABudget = 1
				}
				return func() { packedABudget, packAInTasks = oldBudget, oldInTasks }
			})
		}
	})
}

// TestGemmPackAInTasks: slivers of A packed by the task that uses them, on
// one thread (one column block, so the tasks take that path), give the
// same bits as A packed in a phase of its own. 150 rows leave a partial
// last sliver on every path.
func TestGemmPackAInTasks(t *testing.T) {
	withImpl(t, func(t *testing.T, im *impl) {
		r := rand.New(rand.NewPCG(9, 10))
		defer parallel.SetThreads(parallel.SetThreads(1))
		for layout := 0; layout < 6; layout++ {
			sameBits(t, r, 150, 270, 1100, layout, "A packed in the tasks vs in a phase", func(i int) func() {
				old := packAInTasks
				packAInTasks = i == 1
				return func() { packAInTasks = old }
			})
		}
	})
}

func TestBF16RoundTrip(t *testing.T) {
	for _, f := range []float32{0, 1, -2.5, 1e-30, 3.3e38} {
		if g := FromBF16(ToBF16(f)); math.Abs(float64(g-f)) > math.Abs(float64(f))/128 {
			t.Errorf("ToBF16(%v) widens to %v", f, g)
		}
	}
	// Ties go to even: 1 + 2⁻⁸ lies halfway between 1 and 1 + 2⁻⁷.
	if got := FromBF16(ToBF16(1 + 1.0/256)); got != 1 {
		t.Errorf("1+2^-8 rounds to %v, want 1", got)
	}
	if got := FromBF16(ToBF16(float32(math.NaN()))); got == got {
		t.Errorf("NaN became %v", got)
	}
}

// FuzzGemm drives random small shapes and layouts through every path, with
// float32 and bf16 B (GemmBF16 ignores transA).
func FuzzGemm(f *testing.F) {
	f.Add(uint8(3), uint8(5), uint8(7), uint8(0), uint64(1))
	f.Add(uint8(13), uint8(33), uint8(1), uint8(15), uint64(2))
	f.Add(uint8(1), uint8(40), uint8(70), uint8(6), uint64(3))
	f.Fuzz(func(t *testing.T, m, n, k, flags uint8, seed uint64) {
		g := gemmCase{transA: flags&1 != 0, transB: flags&2 != 0, acc: flags&4 != 0,
			m: int(m % 80), n: int(n % 80), k: int(k % 120), pad: int(flags>>3) % 4}
		for _, im := range impls {
			undo := forceImpl(im)
			runGemmCase(t, g, rand.New(rand.NewPCG(seed, uint64(flags))))
			runGemmBF16Case(t, g, rand.New(rand.NewPCG(seed, uint64(flags)+1)))
			undo()
		}
	})
}

// TestGemmEdgeRows: rows of a last, partial row sliver (the 4- and 8-row
// edge kernels) come out bitwise as they would inside a full sliver.
func TestGemmEdgeRows(t *testing.T) {
	r := rand.New(rand.NewPCG(1, 2))
	for _, m := range []int{4, 8, 16, 20, 256, 260} {
		for _, acc := range []bool{false, true} {
			n, k := 96, 600
			mp := (m + 11) / 12 * 12
			a := randSlice(r, mp*k)
			b := randSlice(r, k*n)
			c0 := randSlice(r, mp*n)
			c1 := append([]float32(nil), c0[:m*n]...)
			Gemm(false, false, mp, n, k, a, k, b, n, c0, n, acc)
			Gemm(false, false, m, n, k, a, k, b, n, c1, n, acc)
			for i := range c1 {
				if c1[i] != c0[i] {
					t.Fatalf("m=%d acc=%v i=%d %v != %v", m, acc, i, c1[i], c0[i])
				}
			}
		}
	}
}

// GemmPacked takes the packed path for every m: within the rounding bound
// of gemmRef, and each row of a product of m rows is, bit for bit, that
// row's product alone (the packed path sums an element in the same order
// whatever the other rows), on every path this CPU has.
func TestGemmPacked(t *testing.T) {
	withImpl(t, func(t *testing.T, im *impl) {
		r := rand.New(rand.NewPCG(12, 13))
		for _, g := range []gemmCase{
			{m: 1, n: 33, k: 64, transB: true}, {m: 5, n: 70, k: 64, transB: true, pad: 3}, {m: 32, n: 257, k: 128, transB: true, acc: true},
			{m: 13, n: 40, k: 31}, {m: 7, n: 9, k: 300, transA: true},
		} {
			_, _, lda, br, bc, ldb, ldc := g.dims()
			b := randSlice(r, max(0, (br-1)*ldb+bc))
			checkGemmCase(t, g, r, b, func(a []float32, lda int, c []float32) {
				GemmPacked(g.transA, g.transB, g.m, g.n, g.k, a, lda, b, ldb, c, ldc, g.acc)
			})
			if g.transA {
				continue
			}
			a := randSlice(r, g.m*lda)
			all := make([]float32, g.m*ldc)
			GemmPacked(false, g.transB, g.m, g.n, g.k, a, lda, b, ldb, all, ldc, false)
			for i := 0; i < g.m; i++ {
				one := make([]float32, g.n)
				GemmPacked(false, g.transB, 1, g.n, g.k, a[i*lda:], lda, b, ldb, one, g.n, false)
				for j := range one {
					if math.Float32bits(one[j]) != math.Float32bits(all[i*ldc+j]) {
						t.Fatalf("%v: row %d column %d is %g in the product of %d rows, %g alone", g, i, j, all[i*ldc+j], g.m, one[j])
					}
				}
			}
		}
	})
}
