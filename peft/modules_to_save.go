package peft

import (
	"strings"

	"github.com/gopeft/gopeft/autograd"
	"github.com/gopeft/gopeft/nn"
)

// modulesToSave tracks the trainable full copies that modules_to_save makes
// (an LM head, a classification head): each adapter has its own copy, and
// the module computes with the active adapter's copy or its original.
type modulesToSave struct {
	orig   map[*nn.Linear]*autograd.Var
	copies map[*Adapter]map[*nn.Linear]*autograd.Var
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

func (m *Model) attachModulesToSave(a *Adapter) (nn.Params, error) {
	list := a.Method.Config().Base().ModulesToSave
	if len(list) == 0 {
		return nil, nil
	}
	if m.saved == nil {
		m.saved = &modulesToSave{orig: map[*nn.Linear]*autograd.Var{}, copies: map[*Adapter]map[*nn.Linear]*autograd.Var{}}
	}
	var ps nn.Params
	for _, l := range m.Linears() {
		if !matchesModulesToSave(list, l.Name) {
			continue
		}
		if _, ok := m.saved.orig[l]; !ok {
			m.saved.orig[l] = l.Weight
		}
		w := autograd.Param(SavePrefix+l.Name+".weight", m.saved.orig[l].Value.ToF32(), true)
		if m.saved.copies[a] == nil {
			m.saved.copies[a] = map[*nn.Linear]*autograd.Var{}
		}
		m.saved.copies[a][l] = w
		ps = append(ps, nn.Param{Name: w.Name, Var: w})
	}
	return ps, nil
}

// applyModulesToSave points each saved module at the active adapter's copy.
func (m *Model) applyModulesToSave() {
	if m.saved == nil {
		return
	}
	for l, orig := range m.saved.orig {
		l.Weight = orig
		for a, cs := range m.saved.copies {
			if c, ok := cs[l]; ok && a.active {
				l.Weight = c
			}
		}
	}
}

// bakeModulesToSave makes the active copies the modules' own weights. An
// LM head that was tied to the embedding is untied.
func (m *Model) bakeModulesToSave() {
	if m.saved == nil {
		return
	}
	m.applyModulesToSave()
	if w, ok := m.saved.orig[m.Base.LMHead]; ok && w == m.Base.Embed && m.Base.LMHead.Weight != w {
		m.Base.Config.TieWordEmbeddings = false
	}
	m.saved = nil
}
