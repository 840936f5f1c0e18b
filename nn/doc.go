// Package nn holds the model's hook sites — the places a PEFT method
// attaches — and the Pass that carries one call through the model.
//
// # Sites
//
// Every site has its Hugging Face module name (so target_modules matches
// it) and an ordered list of hooks:
//
//	Linear     model.layers.0.self_attn.q_proj, ...: InputDelta before the
//	           product (IA³ on feed-forward layers), Delta after it (LoRA,
//	           DoRA, IA³, BitFit, ...), Replacer for a whole trained copy
//	           (modules_to_save)
//	RMSNorm    model.layers.0.input_layernorm, model.norm: NormHook after
//	           the norm (SSF's scale and shift)
//	Embedding  model.embed_tokens: PromptHook, virtual tokens placed before
//	           each sequence (prompt tuning, P-tuning)
//	Attention  model.layers.0.self_attn: PrefixHook, key/value rows every
//	           query sees first (prefix tuning), in the KV cache too
//	Sublayer   model.layers.0.self_attn, model.layers.0.mlp: SublayerHook
//	           on the sublayer's output, seeing its residual and normalised
//	           input (serial, Pfeiffer and parallel adapters)
//
// Sites lists a model's sites by kind (llama.Model.Sites). A hook is a
// small type that embeds OwnedBy, naming the adapter it belongs to, and
// implements its site's one method on autograd ops recorded on the pass's
// tape. Two hooks at one site compose in list order: a Linear's output
// deltas each receive the output so far, as PEFT composes two adapters.
//
// # Passes
//
// A Pass is one forward: the tape (nil for inference), whether it trains,
// its seed and the adapter each sequence of the batch uses. The model keeps
// nothing per call, so one batch can mix adapters: a site runs a hook on
// the rows of the sequences whose adapter owns it (Pass.Route) and passes
// the other rows through; virtual tokens and prefixes are padding for the
// sequences that do not use them. Random draws come from Pass.SeedFor, a
// function of the pass's seed and a key, so each micro-batch draws its own
// dropout masks and a resumed run draws the same ones again.
//
// Writing a method is described in package peft.
package nn
