package nn

import (
	"fmt"

	"github.com/gopeft/gopeft/autograd"
)

// NormHook changes an RMSNorm's output (SSF's scale and shift after a
// norm): Apply receives the normalised, weighted y and returns the new one.
type NormHook interface {
	Hook
	ApplyNorm(p *Pass, n *RMSNorm, y *autograd.Var) *autograd.Var
}

// RMSNorm is x / √(mean(x²)+eps) ⊙ Weight over the last dimension, then its
// hooks: the site of every norm (model.layers.0.input_layernorm,
// model.norm). Its weight is a base parameter, so LN tuning trains it in
// place.
type RMSNorm struct {
	Name   string
	Weight *autograd.Var
	Eps    float32
	Hooks  []NormHook
}

// Forward normalises x [..., dim].
func (n *RMSNorm) Forward(p *Pass, x *autograd.Var) *autograd.Var {
	y := p.Tape.RMSNorm(x, n.Weight, n.Eps)
	for _, h := range n.Hooks {
		y = p.Route(h.Owner(), func(xs ...*autograd.Var) *autograd.Var { return h.ApplyNorm(p, n, xs[0]) }, y)
	}
	return y
}

// PromptHook supplies virtual tokens (prompt tuning, P-tuning): VirtualTokens
// returns their embeddings [n, hidden], which the model places before every
// sequence that uses the hook's adapter (and as padding before the others),
// with the attention mask, positions and labels extended as PEFT extends
// them: virtual token j at position j, label -100.
type PromptHook interface {
	Hook
	VirtualTokens(p *Pass, e *Embedding) *autograd.Var
}

// Embedding is the token embedding (model.embed_tokens) and the site of
// virtual tokens.
type Embedding struct {
	Name   string
	Weight *autograd.Var // [vocab, hidden]
	Hooks  []PromptHook
}

// Lookup returns the rows ids of the table.
func (e *Embedding) Lookup(p *Pass, ids []int) *autograd.Var {
	return p.Tape.Embedding(e.Weight, ids)
}

// PrefixHook supplies one layer's learned keys and values (prefix tuning,
// P-tuning v2): PrefixKV returns k and v [n, kvHeads·headDim], as the
// attention stores them (no rotary embedding). Every query of a sequence
// that uses the hook's adapter sees them before the sequence's own keys,
// and its real tokens take positions n, n+1, ...; a KV cache holds them
// from its first call on.
type PrefixHook interface {
	Hook
	PrefixKV(p *Pass, a *Attention) (k, v *autograd.Var)
}

// Attention is the site of one layer's self-attention
// (model.layers.0.self_attn) for key/value prefixes.
type Attention struct {
	Name  string
	Layer int
	Hooks []PrefixHook
}

// SublayerHook adapts one of a block's two sublayers (attention, FFN):
// given the sublayer's residual input (the stream before the norm), its
// normalised input and its output, it returns the output that is added to
// the residual stream. A serial adapter returns out + A(out), Pfeiffer's
// out + A(residual + out), a parallel one out + s·A(residual).
type SublayerHook interface {
	Hook
	ApplySublayer(p *Pass, s *Sublayer, residual, normed, out *autograd.Var) *autograd.Var
}

// Sublayer is the site after (or beside) one sublayer of a block:
// model.layers.0.self_attn or model.layers.0.mlp.
type Sublayer struct {
	Name  string
	Hooks []SublayerHook
}

// Forward runs the hooks on a sublayer's output.
func (s *Sublayer) Forward(p *Pass, residual, normed, out *autograd.Var) *autograd.Var {
	for _, h := range s.Hooks {
		out = p.Route(h.Owner(), func(xs ...*autograd.Var) *autograd.Var {
			return h.ApplySublayer(p, s, xs[1], xs[2], xs[0])
		}, out, residual, normed)
	}
	return out
}

// Sites lists a model's hook sites of each kind, in model order, by their
// Hugging Face module names.
type Sites struct {
	Linears    []*Linear
	Norms      []*RMSNorm
	Embeddings []*Embedding
	Attentions []*Attention
	Sublayers  []*Sublayer
}

// Check refuses an Exclusive hook that shares its site with another hook
// of the same adapter, naming the site and both.
func (s Sites) Check(adapter string) error {
	for _, l := range s.Linears {
		if err := exclusive(l.Name, adapter, append(hooks(l.Inputs), hooks(l.Deltas)...)); err != nil {
			return err
		}
	}
	for _, n := range s.Norms {
		if err := exclusive(n.Name, adapter, hooks(n.Hooks)); err != nil {
			return err
		}
	}
	for _, e := range s.Embeddings {
		if err := exclusive(e.Name, adapter, hooks(e.Hooks)); err != nil {
			return err
		}
	}
	for _, a := range s.Attentions {
		if err := exclusive(a.Name, adapter, hooks(a.Hooks)); err != nil {
			return err
		}
	}
	for _, b := range s.Sublayers {
		if err := exclusive(b.Name, adapter, hooks(b.Hooks)); err != nil {
			return err
		}
	}
	return nil
}

func hooks[H Hook](hs []H) []Hook {
	out := make([]Hook, len(hs))
	for i, h := range hs {
		out[i] = h
	}
	return out
}

func exclusive(site, adapter string, all []Hook) error {
	var mine []Hook
	for _, h := range all {
		if h.Owner() == adapter {
			mine = append(mine, h)
		}
	}
	for _, h := range mine {
		if x, ok := h.(Exclusive); ok && len(mine) > 1 {
			for _, o := range mine {
				if o != h {
					return fmt.Errorf("%s: %s of adapter %q cannot share the module with its %s", site, x.Exclusive(), adapter, describe(o))
				}
			}
		}
	}
	return nil
}

// describe names a hook for an error: its own words when it has them.
func describe(h Hook) string {
	if x, ok := h.(Exclusive); ok {
		return x.Exclusive()
	}
	if s, ok := h.(fmt.Stringer); ok {
		return s.String()
	}
	return fmt.Sprintf("%T hook", h)
}

// Remove deletes every hook owned by adapter from every site.
func (s Sites) Remove(adapter string) {
	for _, l := range s.Linears {
		l.Inputs = without(l.Inputs, adapter)
		l.Deltas = without(l.Deltas, adapter)
	}
	for _, n := range s.Norms {
		n.Hooks = without(n.Hooks, adapter)
	}
	for _, e := range s.Embeddings {
		e.Hooks = without(e.Hooks, adapter)
	}
	for _, a := range s.Attentions {
		a.Hooks = without(a.Hooks, adapter)
	}
	for _, b := range s.Sublayers {
		b.Hooks = without(b.Hooks, adapter)
	}
}

func without[H Hook](hs []H, adapter string) []H {
	out := hs[:0]
	for _, h := range hs {
		if h.Owner() != adapter {
			out = append(out, h)
		}
	}
	clear(hs[len(out):])
	return out[:len(out):len(out)]
}
