// Package fishmask is FishMask (Sung et al. 2021, "Training Neural Networks
// with Fixed Sparse Masks"): the empirical Fisher information of each
// candidate entry, F̂ = Σ_{i≤N} (∇θ ℓ(x_i, y_i))² over N training examples
// one at a time with their true labels, chooses a global top-k mask
// (k = ⌊density · parameters⌋) before training; only those entries train,
// with no weight decay, and the result is a sparse delta file. The
// reference (varunnair18/FISH generate_masks.py, "label-square") masks the
// gradients of a dense model; here the masked entries are the only
// trained tensors (see package sparse), which is the same update with
// state for the selected entries only.
package fishmask

import (
	"github.com/gopeft/gopeft/nn"
	"github.com/gopeft/gopeft/peft"
	"github.com/gopeft/gopeft/peft/sparse"
)

// PeftType names FishMask.
const PeftType = "FISHMASK"

func init() {
	peft.Register(peft.Registration{
		Type: PeftType,
		New:  func() peft.Method { return New(NewConfig()) },
		Flags: []peft.Flag{
			{Name: "density", Key: "density", Kind: peft.FloatFlag, Usage: "fraction of the base's parameters that may change"},
			{Name: "num-samples", Key: "num_samples", Kind: peft.IntFlag, Usage: "training examples the Fisher information is summed over"},
			{Name: "max-fisher-mib", Key: "max_fisher_mib", Kind: peft.IntFlag, Usage: "MiB the Fisher sums may hold at once (0: no bound); each group of targets that fits takes its own pass over the samples"},
			{Name: "targets", Key: "target_modules", Kind: peft.ModulesFlag, Usage: "target modules: a comma list, a regex or all-linear"},
		},
	})
}

// Config is FishMask's adapter_config.json.
type Config struct {
	sparse.Config
	NumSamples int `json:"num_samples"`
	sparse.FisherBudget
}

// NewConfig returns the reference's defaults: keep 0.5%, N = 1024.
func NewConfig() *Config {
	return &Config{Config: sparse.NewConfig(PeftType, 0.005), NumSamples: 1024, FisherBudget: sparse.DefaultFisherBudget()}
}

// Validate implements peft.Config.
func (c *Config) Validate() error {
	if err := c.FisherBudget.Check(PeftType); err != nil {
		return err
	}
	if c.NumSamples < 1 {
		return &peft.KeyError{Method: PeftType, Key: "num_samples", Value: c.NumSamples, Allowed: "must be at least 1"}
	}
	return c.Config.Validate()
}

// Method is a FishMask adapter.
type Method struct {
	*sparse.Method
	Cfg *Config
}

// New returns FishMask for a config.
func New(c *Config) *Method {
	m := &Method{Cfg: c}
	m.Method = sparse.NewMethod(c, &c.Config, func(pm *peft.Model, ts []*nn.Linear, k int, obj peft.Objective) ([][]int32, error) {
		return sparse.FisherTopK(pm, ts, obj, sparse.FisherOptions{Samples: c.NumSamples, MaxBytes: c.Bytes()}, k)
	})
	return m
}
