package adalora

import (
	"encoding/json"
	"fmt"
	"math"
	"slices"

	"github.com/gopeft/gopeft/autograd"
	"github.com/gopeft/gopeft/nn"
	"github.com/gopeft/gopeft/peft"
	"github.com/gopeft/gopeft/tensor"
)

// allocator is PEFT's RankAllocator: per entry of every Q, λ and P, the
// sensitivity I = |w·∂L/∂w| smoothed into Ī (β₁) and its uncertainty
// Ū = EMA(|I − Ī|) (β₂); a triplet's score is s(λᵢ) + mean_j s(Qᵢⱼ) +
// mean_j s(Pⱼᵢ) with s = Ī·Ū; when the schedule says so, the triplets
// scoring at or below the k-th smallest (k = b₀ − b(t)) get λᵢ = 0.
type allocator struct {
	cfg    *Config
	layers []*layer
	// avgIpt and avgUnc are Ī and Ū of each layer's Q, λ and P (in
	// layer order, then A, B, E), float32 as PEFT keeps them.
	avgIpt, avgUnc [][]float32
	initBgt        int // b₀: Σ ranks
	targetBgt      int // b_T: target_r × matrices
}

func newAllocator(c *Config, layers []*layer) *allocator {
	a := &allocator{cfg: c, layers: layers, targetBgt: c.TargetR * len(layers)}
	for _, ly := range layers {
		a.initBgt += ly.rank()
		for _, p := range ly.params() {
			n := p.Var.Value.Numel()
			a.avgIpt = append(a.avgIpt, make([]float32, n))
			a.avgUnc = append(a.avgUnc, make([]float32, n))
		}
	}
	return a
}

// Budget is the schedule of PEFT's budget_schedule: the total rank b(t)
// after update t (counted from 0) and whether the allocator masks at t.
// b₀ until tinit; then b(t) = ⌊b_T + (b₀ − b_T)·(1 − (t − tinit)/(T −
// tfinal − tinit))³⌋, masking when t mod deltaT = 0; b_T, masking every
// update, once t > T − tfinal.
func Budget(c *Config, initBgt, targetBgt, t int) (budget int, mask bool) {
	T := *c.TotalStep
	switch {
	case t <= c.Tinit:
		return initBgt, false
	case t > T-c.Tfinal:
		return targetBgt, true
	}
	mul := 1 - float64(t-c.Tinit)/float64(T-c.Tfinal-c.Tinit)
	return int(float64(initBgt-targetBgt)*(mul*mul*mul) + float64(targetBgt)), t%c.DeltaT == 0
}

// step is PEFT's update_and_allocate(t), run after update t with the
// update's gradients still in place.
func (a *allocator) step(t int) error {
	if a.initBgt != a.cfg.InitR*len(a.layers) {
		return fmt.Errorf("adalora: the adapter was loaded at the ranks rank_pattern keeps; training restarts from init_r (a new adapter)")
	}
	final := *a.cfg.TotalStep - a.cfg.Tfinal
	switch {
	case t < final:
		a.updateImportance()
		if budget, mask := Budget(a.cfg, a.initBgt, a.targetBgt, t); mask {
			a.cfg.RankPattern = a.maskToBudget(budget)
		}
	case t == final:
		budget, _ := Budget(a.cfg, a.initBgt, a.targetBgt, t)
		a.cfg.RankPattern = a.maskToBudget(budget)
		for i := range a.avgIpt { // PEFT's reset_ipt
			clear(a.avgIpt[i])
			clear(a.avgUnc[i])
		}
	default:
		a.maskByPattern()
	}
	return nil
}

// updateImportance folds this update's sensitivities into the averages.
func (a *allocator) updateImportance() {
	b1, c1 := float32(a.cfg.Beta1), float32(1-a.cfg.Beta1)
	b2, c2 := float32(a.cfg.Beta2), float32(1-a.cfg.Beta2)
	i := 0
	for _, ly := range a.layers {
		for _, p := range ly.params() {
			w := p.Var.Value.Data
			var g []float32
			if p.Var.Grad != nil {
				g = p.Var.Grad.Data
			}
			ipt, unc := a.avgIpt[i], a.avgUnc[i]
			for j, v := range w {
				var s float32
				if g != nil {
					s = float32(math.Abs(float64(v * g[j])))
				}
				ipt[j] = b1*ipt[j] + c1*s
				unc[j] = b2*unc[j] + c2*float32(math.Abs(float64(s-ipt[j])))
			}
			i++
		}
	}
}

// scores returns each layer's triplet scores.
func (a *allocator) scores() [][]float32 {
	out := make([][]float32, len(a.layers))
	for li, ly := range a.layers {
		r, in, o := ly.rank(), ly.linear.In(), ly.linear.Out()
		ipA, unA := a.avgIpt[3*li], a.avgUnc[3*li]
		ipB, unB := a.avgIpt[3*li+1], a.avgUnc[3*li+1]
		ipE, unE := a.avgIpt[3*li+2], a.avgUnc[3*li+2]
		s := make([]float32, r)
		for q := 0; q < r; q++ {
			var sa, sb float64
			for j := 0; j < in; j++ {
				sa += float64(ipA[q*in+j] * unA[q*in+j])
			}
			for j := 0; j < o; j++ {
				sb += float64(ipB[j*r+q] * unB[j*r+q])
			}
			s[q] = ipE[q]*unE[q] + (float32(sa/float64(in)) + float32(sb/float64(o)))
		}
		out[li] = s
	}
	return out
}

// maskToBudget zeroes λ of every triplet scoring at or below the
// (b₀ − budget)-th smallest score and returns the rank pattern.
func (a *allocator) maskToBudget(budget int) map[string][]bool {
	scores := a.scores()
	threshold := float32(math.Inf(-1))
	if k := a.initBgt - budget; k > 0 {
		all := slices.Concat(scores...)
		slices.Sort(all)
		threshold = all[k-1]
	}
	pattern := map[string][]bool{}
	for li, ly := range a.layers {
		keep := make([]bool, ly.rank())
		for q, s := range scores[li] {
			keep[q] = !(s <= threshold)
			if !keep[q] {
				ly.E.Value.Data[q] = 0
			}
		}
		pattern[ly.patternKey()] = keep
	}
	return pattern
}

// maskByPattern re-applies the final pattern (PEFT's
// mask_using_rank_pattern).
func (a *allocator) maskByPattern() {
	for _, ly := range a.layers {
		keep, ok := a.cfg.RankPattern[ly.patternKey()]
		if !ok {
			continue
		}
		for q, k := range keep {
			if !k {
				ly.E.Value.Data[q] = 0
			}
		}
	}
}

// AfterUpdate implements peft.StepHook: the allocator runs after each
// optimizer update, the gradients still in place.
func (m *Method) AfterUpdate(step int) error { return m.alloc.step(step) }

// ExtraLoss implements peft.LossTerm: orth_reg_weight times the mean over
// every Q and P of ‖QQᵀ − I‖_F and ‖PᵀP − I‖_F (unsquared, as PEFT and the
// reference code compute it).
func (m *Method) ExtraLoss(p *nn.Pass) (*autograd.Var, error) {
	if m.Cfg.OrthRegWeight == 0 || len(m.layers) == 0 {
		return nil, nil
	}
	var total *autograd.Var
	for _, ly := range m.layers {
		for _, t := range []*autograd.Var{orthDistance(p.Tape, ly.A, false), orthDistance(p.Tape, ly.B, true)} {
			if total == nil {
				total = t
			} else {
				total = p.Tape.Add(total, t)
			}
		}
	}
	return p.Tape.Scale(total, float32(m.Cfg.OrthRegWeight/float64(2*len(m.layers)))), nil
}

// state is the allocator's JSON part of a checkpoint.
type state struct {
	RankPattern map[string][]bool `json:"rank_pattern"`
}

// TrainState implements peft.Stateful: Ī and Ū of every tensor, and the
// rank pattern so far.
func (m *Method) TrainState() peft.State {
	ts := map[string]*tensor.Tensor{}
	i := 0
	for _, ly := range m.layers {
		for _, p := range ly.params() {
			ts["exp_avg_ipt/"+p.Name] = tensor.FromData(m.alloc.avgIpt[i], p.Var.Value.Shape...)
			ts["exp_avg_unc/"+p.Name] = tensor.FromData(m.alloc.avgUnc[i], p.Var.Value.Shape...)
			i++
		}
	}
	js, _ := json.Marshal(state{RankPattern: m.Cfg.RankPattern})
	return peft.State{Tensors: ts, JSON: js}
}

// RestoreTrainState implements peft.Stateful.
func (m *Method) RestoreTrainState(s peft.State) error {
	var st state
	if err := json.Unmarshal(s.JSON, &st); err != nil {
		return fmt.Errorf("adalora: checkpoint state: %w", err)
	}
	i := 0
	for _, ly := range m.layers {
		for _, p := range ly.params() {
			for _, kind := range []string{"exp_avg_ipt/", "exp_avg_unc/"} {
				t, ok := s.Tensors[kind+p.Name]
				if !ok || t.Numel() != p.Var.Value.Numel() {
					return fmt.Errorf("adalora: checkpoint state lacks %s%s of %d values", kind, p.Name, p.Var.Value.Numel())
				}
				dst := m.alloc.avgIpt[i]
				if kind == "exp_avg_unc/" {
					dst = m.alloc.avgUnc[i]
				}
				copy(dst, t.F32())
			}
			i++
		}
	}
	m.Cfg.RankPattern = st.RankPattern
	return nil
}
