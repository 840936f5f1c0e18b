package llama

import (
	"fmt"
	"runtime/debug"
	"strings"

	"github.com/gopeft/gopeft/autograd"
	"github.com/gopeft/gopeft/nn"
	"github.com/gopeft/gopeft/tensor"
)

// Model is a LLaMA decoder with its LM head. Every weight starts frozen;
// PEFT methods and full fine-tuning mark what they train.
type Model struct {
	Config Config
	Embed  *nn.Embedding // model.embed_tokens [vocab, hidden]
	Layers []*Block
	Norm   *nn.RMSNorm // model.norm [hidden]
	// LMHead is lm_head [vocab, hidden]; with tied embeddings its weight is
	// the embedding's.
	LMHead *nn.Linear
	// Score is the optional sequence-classification head "score"
	// [num_labels, hidden] (LlamaForSequenceClassification's); nil for a
	// plain causal LM. See AddScoreHead and ClassifyLogits.
	Score *nn.Linear
	// StopAtBOS ends generation at a BOS token too: llama2.c's models
	// delimit stories with BOS.
	StopAtBOS bool
	// Adapter is the adapter a pass that names none runs (the active
	// adapter of peft.Model); "" runs the base alone.
	Adapter string
	// GradientCheckpointing keeps only each decoder block's input during a
	// recorded forward and recomputes the block in the backward
	// (autograd.Checkpoint): the activations of one block instead of all,
	// for one more forward.
	GradientCheckpointing bool
	// CheckpointBlocks, when above 0, checkpoints only the first
	// CheckpointBlocks decoder blocks (Megatron's --recompute-num-layers
	// with its block method) and keeps the others' activations: memory and
	// the extra forward both shrink in proportion, so a budget can be met
	// at the least recomputation. It implies GradientCheckpointing.
	CheckpointBlocks int

	rope *autograd.RoPE
}

// checkpointed reports whether a recorded forward recomputes block i in
// the backward instead of keeping its activations.
func (m *Model) checkpointed(i int) bool {
	if m.CheckpointBlocks > 0 {
		return i < m.CheckpointBlocks
	}
	return m.GradientCheckpointing
}

// Block is one decoder layer: h = x + o(Attn(RMSNorm(x))), out = h +
// down(silu(gate(u)) ⊙ up(u)) with u = RMSNorm(h). Each part is a hook
// site (nn's doc lists them): the norms, the seven Linears, the attention
// (key/value prefixes) and the two sublayers' outputs.
type Block struct {
	Index                        int
	InputNorm, PostAttentionNorm *nn.RMSNorm
	Q, K, V, O, Gate, Up, Down   *nn.Linear
	Attn                         *nn.Attention // model.layers.i.self_attn: prefixes
	AttnOut, MLPOut              *nn.Sublayer  // after self_attn and after mlp
}

// Tensor names, as Hugging Face's LlamaForCausalLM state dict has them.
const (
	ModuleEmbed = "model.embed_tokens"
	ModuleNorm  = "model.norm"
	NameEmbed   = ModuleEmbed + ".weight"
	NameNorm    = ModuleNorm + ".weight"
	NameLMHead  = "lm_head.weight"
)

func layerName(i int, suffix string) string { return fmt.Sprintf("model.layers.%d.%s", i, suffix) }

// linearNames are the Linear modules of a block, by their name suffix.
var linearNames = []string{"self_attn.q_proj", "self_attn.k_proj", "self_attn.v_proj", "self_attn.o_proj", "mlp.gate_proj", "mlp.up_proj", "mlp.down_proj"}

// hasBias reports whether block Linear j (linearNames' order) has a bias.
func (c *Config) hasBias(j int) bool {
	if j < 4 {
		return c.AttentionBias
	}
	return c.MLPBias
}

// Shapes lists every tensor the config needs, by Hugging Face name.
func (c *Config) Shapes() map[string][]int {
	d, h, kv, q := c.HiddenSize, c.IntermediateSize, c.KVDim(), c.QDim()
	s := map[string][]int{NameEmbed: {c.VocabSize, d}, NameNorm: {d}}
	if !c.TieWordEmbeddings {
		s[NameLMHead] = []int{c.VocabSize, d}
	}
	lin := [][]int{{q, d}, {kv, d}, {kv, d}, {d, q}, {h, d}, {h, d}, {d, h}}
	for i := 0; i < c.NumHiddenLayers; i++ {
		for j, n := range linearNames {
			s[layerName(i, n+".weight")] = lin[j]
			if c.hasBias(j) {
				s[layerName(i, n+".bias")] = lin[j][:1]
			}
		}
		s[layerName(i, "input_layernorm.weight")] = []int{d}
		s[layerName(i, "post_attention_layernorm.weight")] = []int{d}
	}
	return s
}

// New builds a model from tensors named as Hugging Face names them. Every
// tensor the config needs must be present with its shape; a tensor nobody
// uses is an error too (it would mean a mismatched config), except RoPE
// caches that some checkpoints store. source names the checkpoint in errors.
func New(cfg Config, tensors map[string]*tensor.Tensor, source string) (*Model, error) {
	if err := cfg.Validate(); err != nil {
		return nil, fmt.Errorf("%s: %w", source, err)
	}
	if err := checkSize(&cfg, tensors); err != nil {
		return nil, fmt.Errorf("%s: %w", source, err)
	}
	want := cfg.Shapes()
	for _, name := range sortedKeys(want) {
		t, ok := tensors[name]
		if !ok {
			return nil, fmt.Errorf("%s: missing tensor %s (shape %v)", source, name, want[name])
		}
		if !tensor.SameShape(t.Shape, want[name]) {
			return nil, fmt.Errorf("%s: tensor %s has shape %v, the config needs %v", source, name, t.Shape, want[name])
		}
	}
	for _, name := range sortedKeys(tensors) {
		if _, ok := want[name]; !ok && !strings.HasSuffix(name, "rotary_emb.inv_freq") {
			if name == NameLMHead && cfg.TieWordEmbeddings {
				continue // a tied checkpoint may store the head too
			}
			if sh := tensors[name].Shape; name == NameScore && len(sh) == 2 && sh[0] > 0 && sh[1] == cfg.HiddenSize {
				continue // a classification head (a fully fine-tuned classifier)
			}
			return nil, fmt.Errorf("%s: unexpected tensor %s (shape %v) for this config", source, name, tensors[name].Shape)
		}
	}
	weightsOffHeap(tensors)
	frozen := func(name string) *autograd.Var { return autograd.Param(name, tensors[name], false) }
	eps := float32(cfg.RMSNormEps)
	norm := func(module string) *nn.RMSNorm {
		return &nn.RMSNorm{Name: module, Weight: frozen(module + ".weight"), Eps: eps}
	}
	m := &Model{Config: cfg, Embed: &nn.Embedding{Name: ModuleEmbed, Weight: frozen(NameEmbed)}, Norm: norm(ModuleNorm)}
	if cfg.TieWordEmbeddings {
		m.LMHead = nn.NewLinear("lm_head", m.Embed.Weight, nil)
	} else {
		m.LMHead = nn.NewLinear("lm_head", frozen(NameLMHead), nil)
	}
	for i := 0; i < cfg.NumHiddenLayers; i++ {
		lin := make([]*nn.Linear, len(linearNames))
		for j, n := range linearNames {
			var bias *autograd.Var
			if cfg.hasBias(j) {
				bias = frozen(layerName(i, n+".bias"))
			}
			lin[j] = nn.NewLinear(layerName(i, n), frozen(layerName(i, n+".weight")), bias)
		}
		m.Layers = append(m.Layers, &Block{
			Index:             i,
			InputNorm:         norm(layerName(i, "input_layernorm")),
			PostAttentionNorm: norm(layerName(i, "post_attention_layernorm")),
			Q:                 lin[0], K: lin[1], V: lin[2], O: lin[3], Gate: lin[4], Up: lin[5], Down: lin[6],
			Attn:    &nn.Attention{Name: layerName(i, "self_attn"), Layer: i},
			AttnOut: &nn.Sublayer{Name: layerName(i, "self_attn")},
			MLPOut:  &nn.Sublayer{Name: layerName(i, "mlp")},
		})
	}
	if t, ok := tensors[NameScore]; ok {
		m.setScore(t)
	}
	m.rope = &autograd.RoPE{InvFreq: cfg.InvFreq(), Style: cfg.RoPE}
	return m, nil
}

// Params lists the base model's parameters under their Hugging Face names,
// in state-dict order. A tied LM head is listed once, as the embedding.
func (m *Model) Params() nn.Params {
	ps := nn.Params{{Name: NameEmbed, Var: m.Embed.Weight}}
	for _, b := range m.Layers {
		ps = append(ps, nn.Param{Name: b.InputNorm.Name + ".weight", Var: b.InputNorm.Weight})
		for _, l := range b.Linears() {
			ps = append(ps, nn.Param{Name: l.Name + ".weight", Var: l.Weight})
			if l.Bias != nil {
				ps = append(ps, nn.Param{Name: l.Name + ".bias", Var: l.Bias})
			}
		}
		ps = append(ps, nn.Param{Name: b.PostAttentionNorm.Name + ".weight", Var: b.PostAttentionNorm.Weight})
	}
	ps = append(ps, nn.Param{Name: NameNorm, Var: m.Norm.Weight})
	if !m.Config.TieWordEmbeddings {
		ps = append(ps, nn.Param{Name: NameLMHead, Var: m.LMHead.Weight})
	}
	if m.Score != nil {
		ps = append(ps, nn.Param{Name: NameScore, Var: m.Score.Weight})
	}
	return ps
}

// Linears returns the block's Linear layers in Hugging Face order.
func (b *Block) Linears() []*nn.Linear {
	return []*nn.Linear{b.Q, b.K, b.V, b.O, b.Gate, b.Up, b.Down}
}

// Linears returns every Linear in the model: the blocks', the LM head,
// then the classification head when there is one.
func (m *Model) Linears() []*nn.Linear {
	var ls []*nn.Linear
	for _, b := range m.Layers {
		ls = append(ls, b.Linears()...)
	}
	ls = append(ls, m.LMHead)
	if m.Score != nil {
		ls = append(ls, m.Score)
	}
	return ls
}

// Sites lists every hook site of the model by its Hugging Face module
// name, in model order.
func (m *Model) Sites() nn.Sites {
	s := nn.Sites{Linears: m.Linears(), Embeddings: []*nn.Embedding{m.Embed}}
	for _, b := range m.Layers {
		s.Norms = append(s.Norms, b.InputNorm, b.PostAttentionNorm)
		s.Attentions = append(s.Attentions, b.Attn)
		s.Sublayers = append(s.Sublayers, b.AttnOut, b.MLPOut)
	}
	s.Norms = append(s.Norms, m.Norm)
	return s
}

// IsOutput reports whether l is one of the model's output layers (the LM
// head or the classification head), which "all-linear" leaves out.
func (m *Model) IsOutput(l *nn.Linear) bool { return l == m.LMHead || (l != nil && l == m.Score) }

// Tensors returns the weights by Hugging Face name, for saving.
func (m *Model) Tensors() map[string]*tensor.Tensor {
	out := map[string]*tensor.Tensor{}
	for _, p := range m.Params() {
		out[p.Name] = p.Var.Value
	}
	return out
}

// ToBF16 stores every weight matrix, the embedding (and so a tied LM head)
// included, in bfloat16; norm vectors stay float32. Products still
// accumulate in float32. For a frozen base: trainable tensors must be
// float32.
func (m *Model) ToBF16() {
	for _, p := range m.Params() {
		if len(p.Var.Value.Shape) == 2 && p.Var.Value.DType() == tensor.F32 {
			p.Var.Value = p.Var.Value.ToBF16()
		}
	}
}

// weightsOffHeap moves the weights out of the garbage-collected heap
// (tensor.OffHeap: the collector's headroom then scales with a step's
// allocations, not with the model), handing the heap copies back to the
// system every so often so that the weights are not held twice.
func weightsOffHeap(tensors map[string]*tensor.Tensor) {
	const every = 128 << 20
	var moved int64
	for _, name := range sortedKeys(tensors) {
		t := tensors[name]
		before := t.StorageBytes()
		if t.OffHeap(); t.IsOffHeap() {
			moved += before
		}
		if moved >= every {
			debug.FreeOSMemory()
			moved = 0
		}
	}
	if moved > 0 {
		debug.FreeOSMemory()
	}
}
