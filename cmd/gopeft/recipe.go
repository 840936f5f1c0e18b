package main

import (
	"bytes"
	"encoding/json"
	"fmt"

	"go.yaml.in/yaml/v3"

	"github.com/gopeft/gopeft/dist"
	"github.com/gopeft/gopeft/internal/safefile"
	"github.com/gopeft/gopeft/model/llama"
	"github.com/gopeft/gopeft/pipeline"
	"github.com/gopeft/gopeft/train"
)

// Recipe is a training job as a YAML file: everything `gopeft train` takes
// as flags. It is saved beside the result as recipe.yaml.
type Recipe struct {
	Model     string `yaml:"model"`
	Tokenizer string `yaml:"tokenizer,omitempty"`
	// BF16 and FP32 choose the frozen base's precision; with neither, it
	// is bf16 where the CPU multiplies bf16 natively (see precision.go).
	BF16 bool `yaml:"bf16,omitempty"`
	FP32 bool `yaml:"fp32,omitempty"`
	// Quant quantizes the frozen base's decoder Linears on load (nf4, fp4,
	// int8): QLoRA when the method is LoRA. DoubleQuant quantizes the
	// 4-bit scales too.
	Quant       string `yaml:"quant,omitempty"`
	DoubleQuant bool   `yaml:"double_quant,omitempty"`
	// GradientCheckpointing recomputes each decoder block in the backward
	// instead of keeping its activations.
	GradientCheckpointing bool `yaml:"gradient_checkpointing,omitempty"`
	// CheckpointBlocks recomputes only the first N decoder blocks (and
	// keeps the others' activations): less recomputation for a memory
	// budget between none and all.
	CheckpointBlocks int `yaml:"checkpoint_blocks,omitempty"`
	// Method is the peft_type (LORA, FULL, ...); Peft holds its
	// adapter_config.json keys (r, lora_alpha, target_modules, ...).
	Method string         `yaml:"method"`
	Peft   map[string]any `yaml:"peft,omitempty"`
	Data   DataRecipe     `yaml:"data"`
	Train  train.Config   `yaml:"train"`
	Output string         `yaml:"output"`
	// Stages make the recipe a pipeline: each stage a recipe of its own
	// whose keys default to the ones above (see pipeline.go), and
	// Continual its continual-learning strategy and forgetting matrix.
	Stages    []StageRecipe       `yaml:"stages,omitempty"`
	Continual *pipeline.Continual `yaml:"continual,omitempty"`

	// allowNonFinite skips the check for NaN and infinite weights on load
	// (--allow-nonfinite; not a recipe key).
	allowNonFinite bool
	// comm is the group of ranks the run trains on (nil: alone).
	comm dist.Communicator
	// stage, for a stage of a pipeline, says which settings its YAML gives
	// (errors name those by the stage's key).
	stage *stageOrigin
}

// DataRecipe says where the data is and how to turn it into sequences.
type DataRecipe struct {
	// Task, when set, is a GLUE classification task (sst2, mrpc, ...): the
	// data is its train split under DataDir, the eval set its dev split,
	// and the model trains a classification head (task_type SEQ_CLS).
	Task          string  `yaml:"task,omitempty"`
	DataDir       string  `yaml:"data_dir,omitempty"` // default: eval.DefaultDataDir()
	Path          string  `yaml:"path,omitempty"`
	Format        string  `yaml:"format,omitempty"`   // auto, text, alpaca, sharegpt, prompt_completion
	Template      string  `yaml:"template,omitempty"` // alpaca, llama2, chatml, plain
	EvalPath      string  `yaml:"eval_path,omitempty"`
	EvalFraction  float64 `yaml:"eval_fraction,omitempty"` // held out from the end of Path
	SeqLen        int     `yaml:"seq_len,omitempty"`       // text: window length
	MaxLen        int     `yaml:"max_len,omitempty"`       // instructions: truncation length
	TrainOnPrompt bool    `yaml:"train_on_prompt,omitempty"`
	Packing       bool    `yaml:"packing,omitempty"` // join training examples up to max_len, no attention across (data.Pack)
	SkipInvalid   bool    `yaml:"skip_invalid,omitempty"`
	Limit         int     `yaml:"limit,omitempty"` // use the first N training examples
	EvalLimit     int     `yaml:"eval_limit,omitempty"`
}

// readRecipe reads a recipe over r, refusing unknown keys (a typo would
// otherwise silently train something else).
func readRecipe(path string, r *Recipe) error {
	b, err := safefile.ReadFile(path)
	if err != nil {
		return err
	}
	return parseRecipe(b, path, r)
}

// parseRecipe decodes recipe YAML over r; name is used in errors.
func parseRecipe(b []byte, name string, r *Recipe) error {
	dec := yaml.NewDecoder(bytes.NewReader(b))
	dec.KnownFields(true)
	if err := dec.Decode(r); err != nil {
		return fmt.Errorf("%s: %w", name, err)
	}
	return nil
}

// peftJSON renders the peft block as adapter_config.json keys.
func (r *Recipe) peftJSON() ([]byte, error) {
	if r.Peft == nil {
		return []byte("{}"), nil
	}
	return json.Marshal(r.Peft)
}

func (r *Recipe) yaml() ([]byte, error) { return yaml.Marshal(r) }

// fingerprint identifies the run for resuming: what makes it the same run
// (model, method, data, hyper-parameters), not where it is written.
//
// A llama2.c model's q/k rows are permuted to Hugging Face's order on load
// (older gopeft kept the file's order); its runs say so, so that a
// checkpoint of an older run (adapter rows in the file's order) is refused
// instead of resumed onto rows it does not index. Other runs' fingerprints
// are unchanged.
func (r *Recipe) fingerprint() (string, error) {
	var qk string
	if isLlama2cFile(r.Model) {
		qk = "hf"
	}
	return train.Fingerprint(struct {
		Model, Method string
		Peft          map[string]any
		Data          DataRecipe
		Train         train.Config
		QKRows        string `json:",omitempty"`
	}{r.Model, r.Method, r.Peft, r.Data, r.Train, qk})
}

// isLlama2cFile reports whether path is a llama2.c checkpoint, whose q/k
// rows are permuted on load (see fingerprint).
func isLlama2cFile(path string) bool {
	f, _, err := llama.DetectFormat(path)
	return err == nil && f == llama.FormatLlama2c
}
