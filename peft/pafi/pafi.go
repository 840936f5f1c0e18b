// Package pafi is PaFi (Liao et al. 2023, "Parameter-Efficient Fine-Tuning
// without Introducing New Latency"): the entries of smallest absolute value
// in the candidate weights are chosen before training, from the weights
// alone, and only they train (a fixed sparse mask; see package sparse).
package pafi

import (
	"math"

	"github.com/gopeft/gopeft/nn"
	"github.com/gopeft/gopeft/peft"
	"github.com/gopeft/gopeft/peft/sparse"
)

// PeftType names PaFi.
const PeftType = "PAFI"

func init() {
	peft.Register(peft.Registration{
		Type: PeftType,
		New:  func() peft.Method { return New(NewConfig()) },
		Flags: []peft.Flag{
			{Name: "density", Key: "density", Kind: peft.FloatFlag, Usage: "fraction of the base's parameters that may change"},
			{Name: "targets", Key: "target_modules", Kind: peft.ModulesFlag, Usage: "target modules: a comma list, a regex or all-linear"},
		},
	})
}

// Config is PaFi's adapter_config.json.
type Config struct{ sparse.Config }

// NewConfig returns PaFi with density 0.005.
func NewConfig() *Config { return &Config{Config: sparse.NewConfig(PeftType, 0.005)} }

// Method is a PaFi adapter.
type Method struct {
	*sparse.Method
	Cfg *Config
}

// Smallest selects the k entries of smallest |θ|: the top k of −|θ|.
func Smallest(_ *peft.Model, ts []*nn.Linear, k int, _ peft.Objective) ([][]int32, error) {
	scores := make([][]float32, len(ts))
	for t, l := range ts {
		w := l.Weight.Value.ToF32().Data
		s := make([]float32, len(w))
		for i, v := range w {
			s[i] = -float32(math.Abs(float64(v)))
		}
		scores[t] = s
	}
	return sparse.TopK(scores, k), nil
}

// New returns PaFi for a config.
func New(c *Config) *Method {
	return &Method{Method: sparse.NewMethod(c, &c.Config, Smallest), Cfg: c}
}
