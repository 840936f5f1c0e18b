package main

import (
	"errors"
	"fmt"
	"io"
	"maps"
	"math"
	"slices"
	"strconv"
	"strings"

	"github.com/gopeft/gopeft/data"
	"github.com/gopeft/gopeft/dist"
	"github.com/gopeft/gopeft/model/llama"
	"github.com/gopeft/gopeft/peft"
	"github.com/gopeft/gopeft/train"
)

// trainFlags maps the recipe's train.* keys to the flags that set them;
// keys without a flag are set in a recipe only.
var trainFlags = map[string]string{
	"steps": "--steps", "batch_size": "--batch", "grad_accum": "--grad-accum", "lr": "--lr",
	"schedule": "--schedule", "warmup_steps": "--warmup", "optimizer": "--optimizer",
	"weight_decay": "--weight-decay", "max_grad_norm": "--max-grad-norm", "eval_every": "--eval-every",
	"save_every": "--save-every", "log_every": "--log-every",
}

// settingName names a setting as the user gave it: its flag and its recipe
// key ("--lr (recipe train.lr)"), or the recipe key alone.
func settingName(section, key, flag string) string {
	if flag == "" {
		return "recipe " + section + "." + key
	}
	return flag + " (recipe " + section + "." + key + ")"
}

// stageOrigin records, for a stage of a pipeline, which settings the
// stage's own YAML gives ("train.lr", "data.seq_len", "peft.r"): an error
// about one of them names the stage's key, and one about a setting the
// stage inherits names the top level's flag and key.
type stageOrigin struct {
	index int
	set   map[string]bool
}

// setting names a setting of r as the user gave it: for a stage that sets
// it, the stage's recipe key ("recipe stages[1].train.lr"); otherwise the
// flag and top-level recipe key (settingName), marked as inherited in a
// stage.
func (r *Recipe) setting(section, key, flag string) string {
	if r.stage == nil {
		return settingName(section, key, flag)
	}
	if r.stage.set[section+"."+key] {
		return fmt.Sprintf("recipe stages[%d].%s.%s", r.stage.index, section, key)
	}
	return settingName(section, key, flag) + ", which the stage takes from the top level,"
}

// validate checks every setting of the recipe that can be checked without
// the model, naming the flag and recipe key and the allowed range, so that
// a bad value stops the run before anything is loaded. Nothing is replaced
// by a default: DefaultConfig gave the defaults when the flags were made.
func (r *Recipe) validate() error {
	if _, err := r.loadOptions(); err != nil {
		return err
	}
	if _, _, err := baseInBF16(r.BF16, r.FP32, nil); err != nil {
		return err
	}
	if r.Quant != "" && strings.EqualFold(r.Method, "FULL") {
		return fmt.Errorf("%s %s: full fine-tuning trains every weight, and a quantized base is frozen; drop --quant, or train an adapter such as LoRA over the quantized base (QLoRA)", "--quant (recipe quant)", r.Quant)
	}
	if err := r.Train.Validate(); err != nil {
		var fe *train.FieldError
		if errors.As(err, &fe) {
			return fmt.Errorf("%s is %v: %s", r.setting("train", fe.Key, trainFlags[fe.Key]), fe.Value, fe.Allowed)
		}
		return err
	}
	d := r.Data
	finite := func(x float64) bool { return !math.IsNaN(x) && !math.IsInf(x, 0) }
	checks := []struct {
		ok        bool
		key, flag string
		value     any
		allowed   string
	}{
		{d.SeqLen >= 1, "seq_len", "--seq-len", d.SeqLen, "must be at least 1"},
		{d.MaxLen >= 1, "max_len", "--max-len", d.MaxLen, "must be at least 1"},
		{finite(d.EvalFraction) && d.EvalFraction >= 0 && d.EvalFraction < 1, "eval_fraction", "--eval-fraction", d.EvalFraction, "must be in [0, 1)"},
		{d.Limit >= 0, "limit", "--limit", d.Limit, "must be ≥ 0 (0: all)"},
		{d.EvalLimit >= 0, "eval_limit", "--eval-limit", d.EvalLimit, "must be ≥ 0 (0: all)"},
	}
	for _, c := range checks {
		if !c.ok {
			return fmt.Errorf("%s is %v: %s", r.setting("data", c.key, c.flag), c.value, c.allowed)
		}
	}
	if err := data.CheckFormat(d.Format); err != nil {
		return fmt.Errorf("%s: %w", r.setting("data", "format", "--format"), err)
	}
	if d.Template != "" {
		if _, err := data.LookupTemplate(d.Template); err != nil {
			return fmt.Errorf("%s: %w", r.setting("data", "template", "--template"), err)
		}
		if strings.EqualFold(d.Format, data.FormatText) {
			return fmt.Errorf("%s %q applies to instruction data, and --format text packs plain text without one", r.setting("data", "template", "--template"), d.Template)
		}
	}
	if d.Packing && d.Task != "" {
		return fmt.Errorf("%s: task %s classifies whole sequences; packing applies to instruction data", r.setting("data", "packing", "--packing"), d.Task)
	}
	if d.EvalPath != "" && d.EvalFraction > 0 {
		return fmt.Errorf("give %s or %s, not both: the eval set is one or the other", r.setting("data", "eval_path", "--eval-data"), r.setting("data", "eval_fraction", "--eval-fraction"))
	}
	if _, err := r.newMethod(); err != nil {
		return err
	}
	return nil
}

// newMethod makes the recipe's method with its peft block read and
// validated.
func (r *Recipe) newMethod() (peft.Method, error) {
	reg, err := peft.Lookup(r.Method)
	if err != nil {
		return nil, fmt.Errorf("--method (recipe method): %w", err)
	}
	for _, k := range slices.Sorted(maps.Keys(r.Peft)) {
		if x, ok := r.Peft[k].(float64); ok && (math.IsNaN(x) || math.IsInf(x, 0)) {
			return nil, fmt.Errorf("%s is %v: must be a finite number", r.peftSetting(reg, k), x)
		}
	}
	pj, err := r.peftJSON()
	if err != nil {
		return nil, fmt.Errorf("recipe peft block: %w", err)
	}
	method := reg.New()
	if err := peft.DecodeConfig(pj, method.Config(), "recipe peft block", true); err != nil {
		var ke *peft.KeyError
		if errors.As(err, &ke) {
			return nil, fmt.Errorf("%s is %v: %s", r.peftSetting(reg, ke.Key), ke.Value, ke.Allowed)
		}
		return nil, err
	}
	return method, nil
}

// peftSetting names a key of a method's config with the flag that sets it.
func peftSetting(reg peft.Registration, key string) string {
	for _, f := range reg.Flags {
		if f.Key == key {
			return settingName("peft", key, "--"+f.Name)
		}
	}
	return settingName("peft", key, "")
}

// peftSetting names a key of r's method config: the stage's key when a
// stage sets it, else its flag and recipe key.
func (r *Recipe) peftSetting(reg peft.Registration, key string) string {
	if r.stage != nil && r.stage.set["peft."+key] {
		return r.setting("peft", key, "")
	}
	s := peftSetting(reg, key)
	if r.stage != nil {
		s += ", which the stage takes from the top level,"
	}
	return s
}

// namedKeyError words a method's out-of-range key as the user gave it: by
// its flag and recipe key.
func namedKeyError(reg peft.Registration, err error) error {
	var ke *peft.KeyError
	if errors.As(err, &ke) {
		return fmt.Errorf("%s is %v: %s", peftSetting(reg, ke.Key), ke.Value, ke.Allowed)
	}
	return err
}

// checkContext checks the sequence lengths against the model's context,
// once its config is known and before any data is read: a window longer
// than the positions the model was trained for computes garbage, and an
// enormous one exhausts memory. --seq-len matters to plain text and
// --max-len to instruction data; with --format auto both are checked.
func (r *Recipe) checkContext(cfg llama.Config) error {
	n := cfg.MaxPositionEmbeddings
	format := strings.ToLower(r.Data.Format)
	text := format == data.FormatText || format == data.FormatAuto || format == ""
	instr := r.Data.Task != "" || format != data.FormatText
	if r.Data.Task != "" {
		text = false
	}
	if text && r.Data.SeqLen > n {
		return fmt.Errorf("%s is %d, beyond the model's context of %d tokens (max_position_embeddings): give at most %d",
			r.setting("data", "seq_len", "--seq-len"), r.Data.SeqLen, n, n)
	}
	if instr && r.Data.MaxLen > n {
		return fmt.Errorf("%s is %d, beyond the model's context of %d tokens (max_position_embeddings): give at most %d",
			r.setting("data", "max_len", "--max-len"), r.Data.MaxLen, n, n)
	}
	return nil
}

// resolvePrecision decides the base's precision (precision.go), says it
// on out, and records a default's choice as the recipe's bf16, so that
// recipe.yaml says what ran and a resume loads the base as the run did.
// Data-parallel ranks must agree: a rank on a CPU without bf16 products
// would otherwise train in float32 beside ranks in bf16.
func (r *Recipe) resolvePrecision(out io.Writer) error {
	m, err := r.newMethod()
	if err != nil {
		return err
	}
	in, auto, err := baseInBF16(r.BF16, r.FP32, m)
	if err != nil {
		return err
	}
	r.BF16 = in
	fmt.Fprintln(out, precisionLine(in, auto))
	return dist.Same(r.comm, "precision of the frozen base (the default follows each CPU: give --bf16 or --fp32 to every rank)", []byte(strconv.FormatBool(in)))
}

// loadOptions are the recipe's storage settings as llama.LoadOptions,
// naming the setting of a bad value.
func (r *Recipe) loadOptions() (llama.LoadOptions, error) {
	o, err := quantFlags{quant: r.Quant, double: r.DoubleQuant}.options(r.BF16)
	if err != nil {
		return o, fmt.Errorf("%s: %w", "--quant (recipe quant)", err)
	}
	return o, nil
}

const checkpointBlocksUsage = "recompute only the first N decoder blocks in the backward and keep the others' activations (implies --gradient-checkpointing for those N; 0: as --gradient-checkpointing says)"

// checkBlocks checks a --checkpoint-blocks count against the model's
// decoder blocks.
func checkBlocks(n int, cfg llama.Config, setting string) error {
	if n < 0 || n > cfg.NumHiddenLayers {
		return fmt.Errorf("%s is %d: give 0 (off) to %d, the model's decoder blocks", setting, n, cfg.NumHiddenLayers)
	}
	return nil
}
