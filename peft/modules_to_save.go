package peft

import (
	"strings"

	"github.com/gopeft/gopeft/autograd"
	"github.com/gopeft/gopeft/nn"
)

// savedModule is modules_to_save's trainable full copy of a Linear (an LM
// head, a classification head) for one adapter: a Replacer at the layer,
// so sequences of that adapter compute with the copy and the others with
// the original.
type savedModule struct {
	nn.OwnedBy
	copy *autograd.Var
}

// Exclusive implements nn.Exclusive: the copy replaces the whole layer.
func (s *savedModule) Exclusive() string { return "modules_to_save's trained copy" }

// Replacement implements nn.Replacer.
func (s *savedModule) Replacement() *autograd.Var { return s.copy }

// Apply implements nn.Delta for a pass that runs the copy on some
// sequences only: their rows are recomputed with it.
func (s *savedModule) Apply(p *nn.Pass, l *nn.Linear, x, _ *autograd.Var) *autograd.Var {
	y := p.Tape.Linear(x, s.copy)
	if l.Bias != nil {
		y = p.Tape.Add(y, l.Bias)
	}
	return y
}

// matchesModulesToSave applies PEFT's rule: a module is saved when its name
// ends with an entry.
func matchesModulesToSave(list []string, name string) bool {
	for _, k := range list {
		if name == k || strings.HasSuffix(name, "."+k) {
			return true
		}
	}
	return false
}

// attachModulesToSave gives adapter a a trainable copy of each Linear that
// modules_to_save names, unless the method already trains that weight
// itself (full fine-tuning).
func (m *Model) attachModulesToSave(a *Adapter, trained nn.Params) nn.Params {
	list := a.Method.Config().Base().ModulesToSave
	var ps nn.Params
	for _, l := range m.Linears() {
		if !matchesModulesToSave(list, l.Name) || contains(trained, l.Weight) {
			continue
		}
		w := autograd.Param(SavePrefix+l.Name+".weight", l.Weight.Value.ToF32(), true)
		l.Deltas = append([]nn.Delta{&savedModule{OwnedBy: nn.OwnedBy{Adapter: a.Name}, copy: w}}, l.Deltas...)
		ps = append(ps, nn.Param{Name: w.Name, Var: w})
	}
	return ps
}

func contains(ps nn.Params, v *autograd.Var) bool {
	for _, p := range ps {
		if p.Var == v {
			return true
		}
	}
	return false
}

// bakeModulesToSave makes adapter a's copies the modules' own weights. An
// LM head that was tied to the embedding is untied.
func (m *Model) bakeModulesToSave(a *Adapter) {
	if a == nil {
		return
	}
	for _, l := range m.Linears() {
		for _, d := range l.Deltas {
			if s, ok := d.(*savedModule); ok && s.OwnedBy.Adapter == a.Name {
				if l == m.Base.LMHead && l.Weight == m.Base.Embed.Weight {
					m.Base.Config.TieWordEmbeddings = false
				}
				s.copy.SetTrainable(false)
				l.Weight = s.copy
			}
		}
	}
}
