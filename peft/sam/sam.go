// Package sam is SAM, the second-order approximation method of Fu et al.,
// "On the Effectiveness of Parameter-Efficient Fine-Tuning" (AAAI 2023).
// The fine-tuned loss is approximated by its second-order Taylor expansion
// around θ₀ with a diagonal Hessian H; minimising it over a mask of m
// entries keeps the entries of largest (∇ᵢL(θ₀))² / Hᵢᵢ. The authors' code
// (fuzihaofzh/AnalyzeParameterEfficientFinetune src/runner.py, its default
// "bsearch" mode, the one scripts/train.sh runs) takes the Hessian's
// diagonal as constant: it sums the gradients of the burn-in batches
// without updating, then keeps, in each tensor, the ⌊ratio · numel⌋
// entries of largest |Σ g|, and masks the gradients outside them for the
// rest of training. Here the sum runs over num_samples training examples
// one at a time (the per-batch means of the reference differ by a constant
// factor, which does not change the order), the score is (Σ g)², the
// selection is per tensor with ratio = density, and only the selected
// entries train (a fixed sparse delta; see package sparse).
package sam

import (
	"github.com/gopeft/gopeft/nn"
	"github.com/gopeft/gopeft/peft"
	"github.com/gopeft/gopeft/peft/sparse"
)

// PeftType names SAM.
const PeftType = "SAM"

func init() {
	peft.Register(peft.Registration{
		Type: PeftType,
		New:  func() peft.Method { return New(NewConfig()) },
		Flags: []peft.Flag{
			{Name: "density", Key: "density", Kind: peft.FloatFlag, Usage: "fraction of each target weight's entries that may change"},
			{Name: "num-samples", Key: "num_samples", Kind: peft.IntFlag, Usage: "training examples the gradient is summed over (0: all)"},
			{Name: "max-fisher-mib", Key: "max_fisher_mib", Kind: peft.IntFlag, Usage: "MiB the gradient sums may hold at once (0: no bound)"},
			{Name: "targets", Key: "target_modules", Kind: peft.ModulesFlag, Usage: "target modules: a comma list, a regex or all-linear"},
		},
	})
}

// Config is SAM's adapter_config.json.
type Config struct {
	sparse.Config
	NumSamples int `json:"num_samples"`
	sparse.FisherBudget
}

// NewConfig returns the reference script's ratio 0.005 over 1024 examples.
func NewConfig() *Config {
	return &Config{Config: sparse.NewConfig(PeftType, 0.005), NumSamples: 1024, FisherBudget: sparse.DefaultFisherBudget()}
}

// Validate implements peft.Config.
func (c *Config) Validate() error {
	if c.NumSamples < 0 {
		return &peft.KeyError{Method: PeftType, Key: "num_samples", Value: c.NumSamples, Allowed: "must be ≥ 0 (0: all)"}
	}
	if err := c.FisherBudget.Check(PeftType); err != nil {
		return err
	}
	return c.Config.Validate()
}

// Method is a SAM adapter.
type Method struct {
	*sparse.Method
	Cfg *Config
}

// Select keeps, in each target, the ⌊density · numel⌋ entries of largest
// (Σ_i ∇ℓ(x_i))².
func Select(pm *peft.Model, ts []*nn.Linear, obj peft.Objective, density float64, samples, maxMiB int) ([][]int32, error) {
	idx := make([][]int32, len(ts))
	err := sparse.EachFisher(pm, ts, obj, sparse.FisherOptions{Samples: samples, Signed: true, MaxBytes: int64(maxMiB) << 20},
		func(t int, sum []float32) error {
			for j, g := range sum {
				sum[j] = g * g
			}
			idx[t] = sparse.TopK([][]float32{sum}, int(density*float64(len(sum))))[0]
			return nil
		})
	return idx, err
}

// New returns SAM for a config.
func New(c *Config) *Method {
	m := &Method{Cfg: c}
	m.Method = sparse.NewMethod(c, &c.Config, func(pm *peft.Model, ts []*nn.Linear, k int, obj peft.Objective) ([][]int32, error) {
		return Select(pm, ts, obj, c.Density, c.NumSamples, c.MaxFisherMiB)
	})
	return m
}
