package tensor

import (
	"math"
	"math/rand/v2"
)

// RNG is a seeded random source: the same seed gives the same numbers on
// every machine and thread count.
type RNG struct{ r *rand.Rand }

// NewRNG returns a generator for seed.
func NewRNG(seed uint64) *RNG {
	return &RNG{rand.New(rand.NewPCG(seed, 0x9e3779b97f4a7c15))}
}

// Float32 returns a uniform value in [0, 1).
func (g *RNG) Float32() float32 { return g.r.Float32() }

// Float64 returns a uniform value in [0, 1).
func (g *RNG) Float64() float64 { return g.r.Float64() }

// Normal returns a standard normal value.
func (g *RNG) Normal() float64 { return g.r.NormFloat64() }

// IntN returns a uniform value in [0, n).
func (g *RNG) IntN(n int) int { return g.r.IntN(n) }

// Uint64 returns 64 random bits.
func (g *RNG) Uint64() uint64 { return g.r.Uint64() }

// Perm returns a random permutation of [0, n).
func (g *RNG) Perm(n int) []int { return g.r.Perm(n) }

// Uniform fills t with values drawn uniformly from [lo, hi).
func (t *Tensor) Uniform(g *RNG, lo, hi float32) *Tensor {
	d := t.F32()
	for i := range d {
		d[i] = lo + (hi-lo)*g.Float32()
	}
	return t
}

// Normal fills t with values drawn from N(mean, std²).
func (t *Tensor) Normal(g *RNG, mean, std float32) *Tensor {
	d := t.F32()
	for i := range d {
		d[i] = mean + std*float32(g.Normal())
	}
	return t
}

// KaimingUniform fills a [out, in] weight as PyTorch's
// kaiming_uniform_(w, a=√5) does, the default nn.Linear and LoRA-A
// initialisation: U(−b, b) with b = gain·√(3/fan_in), gain = √(2/(1+a²)),
// which for a = √5 is b = 1/√fan_in.
func (t *Tensor) KaimingUniform(g *RNG) *Tensor {
	fanIn := t.Cols()
	a := math.Sqrt(5)
	gain := math.Sqrt(2 / (1 + a*a))
	bound := float32(gain * math.Sqrt(3/float64(fanIn)))
	return t.Uniform(g, -bound, bound)
}
