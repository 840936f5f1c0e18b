// Package peft is the common machinery of parameter-efficient fine-tuning:
// a base model wrapped with named adapters (Model), target-module matching
// with Hugging Face PEFT's rules (Match, Targets), modules_to_save, the
// trainer's lifecycle hooks, and the PEFT file format (adapter_config.json +
// adapter_model.safetensors). Each method lives in its own sub-package
// (peft/lora, peft/full, ...) and registers itself by peft_type.
//
// # Writing a method
//
// A method is a folder under peft/ with a config and a layer, as in PEFT's
// tuners/<method>/. Take peft/lora as the pattern:
//
//  1. The config embeds BaseConfig (target_modules, modules_to_save, ...)
//     and adds the method's keys with PEFT's JSON names and defaults. Its
//     Validate returns a *KeyError naming the key and the allowed range.
//  2. The Method's Attach finds its sites — Targets for Linears, Match for
//     the other kinds of nn.Sites — and appends a hook to each (an nn.Delta
//     on a Linear, an nn.PrefixHook on an attention, ...). Every hook
//     embeds nn.OwnedBy{Adapter: a.Name}, so passes can run it for some
//     sequences only. Attach returns the trainable tensors, named as they
//     are saved: SavePrefix + the module's name + the method's suffix
//     (".lora_A.weight"). Shared pieces live in their own packages
//     (peft/lowrank for the LoRA family's factors).
//  3. init calls Register with the peft_type, a constructor and the
//     method's CLI flags (each a config key). train, eval, generate, merge,
//     inspect and bench then reach it by name, in any case; nothing above
//     this package asks which method it holds.
//
// Saving needs nothing more: SaveAdapter writes the config and the tensors
// Attach returned, and LoadAdapter reads them back strictly (every tensor
// present with its shape, nothing extra). A method whose file holds other
// tensors than it trains (prefix tuning's MLP output, AdaLoRA's sliced
// factors) implements Saver; one that folds into the base implements
// Merger (through nn.MergeInto, which knows each storage of a weight); one
// whose result is the whole model (full fine-tuning) implements WholeModel.
//
// Training calls the method only through optional interfaces (see
// lifecycle.go): LossTerm adds a regulariser, GradHook edits gradients
// before the update, StepHook runs after it, ParamGrouper gives parameters
// their own learning rate and weight decay, and Stateful puts the method's
// state into every checkpoint so that a resumed run continues bitwise.
//
// A method's gradients are checked with autograd.GradCheckModel through a
// small model (peft/sites_test.go defines a method at every site kind as an
// example), and its files against PEFT's golden outputs where PEFT has the
// method.
package peft
