package main

// The cases of issue 13, each run as a user would: every one gives either
// the setting honoured or an error naming the flag, key or file (a non-nil
// error is exit code 1), and no file changes that the user did not ask to
// change.

import (
	"crypto/sha256"
	"encoding/json"
	"io/fs"
	"math"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/gopeft/gopeft/internal/shared"
	"github.com/gopeft/gopeft/model/format"
	"github.com/gopeft/gopeft/model/llama"
	"github.com/gopeft/gopeft/train"
)

// snapshot hashes every file under dir, by relative path.
func snapshot(t *testing.T, dir string) map[string][32]byte {
	t.Helper()
	out := map[string][32]byte{}
	filepath.WalkDir(dir, func(p string, d fs.DirEntry, err error) error {
		if err != nil || d.IsDir() {
			return nil
		}
		b, err := os.ReadFile(p)
		if err != nil {
			t.Fatal(err)
		}
		rel, _ := filepath.Rel(dir, p)
		out[rel] = sha256.Sum256(b)
		return nil
	})
	return out
}

// unchanged fails the test unless dir holds exactly the files of before.
func unchanged(t *testing.T, what, dir string, before map[string][32]byte) {
	t.Helper()
	after := snapshot(t, dir)
	for f, h := range before {
		if g, ok := after[f]; !ok {
			t.Errorf("%s: %s was removed", what, f)
		} else if g != h {
			t.Errorf("%s: %s was changed", what, f)
		}
	}
	for f := range after {
		if _, ok := before[f]; !ok {
			t.Errorf("%s: %s was added", what, f)
		}
	}
}

// mustFail runs args, requires an error containing every one of want, and
// returns it.
func mustFail(t *testing.T, args []string, want ...string) {
	t.Helper()
	_, err := run(t, args...)
	if err == nil {
		t.Errorf("%v: no error", args)
		return
	}
	for _, w := range want {
		if !strings.Contains(err.Error(), w) {
			t.Errorf("%v: error %q does not mention %q", args, err, w)
		}
	}
}

// quickTrain is a two-step LoRA run on Shakespeare, fast enough to repeat.
func quickTrain(t *testing.T, out string, extra ...string) []string {
	model := shared.Path(t, "data/models/stories260K/stories260K.bin")
	text := shared.Path(t, "data/text/tinyshakespeare.txt")
	args := []string{"train", "--model", model, "--data", text, "--format", "text", "--seq-len", "16", "--limit", "8",
		"--steps", "2", "--batch", "2", "--save-every", "1", "--output", out}
	return append(args, extra...)
}

func TestReliabilityTrainOutputDirectory(t *testing.T) {
	out := filepath.Join(t.TempDir(), "run")
	if _, err := run(t, quickTrain(t, out, "--steps", "4")...); err != nil {
		t.Fatal(err)
	}
	before := snapshot(t, out)

	// A second run into the same directory is refused, saying how to go on.
	mustFail(t, quickTrain(t, out), "--resume", "--overwrite-output-dir")
	unchanged(t, "train into a used directory", out, before)

	// --resume of the finished run says so and changes nothing (it used to
	// rewrite metrics.jsonl empty).
	mustFail(t, quickTrain(t, out, "--steps", "4", "--resume"), "already finished")
	unchanged(t, "resume of a finished run", out, before)

	// --resume with other settings is refused before recipe.yaml is
	// rewritten; on a llama2.c model the message also names the one change
	// that is not the user's: a run begun before its q/k rows were permuted.
	mustFail(t, quickTrain(t, out, "--steps", "4", "--lr", "1e-2", "--resume"), "different run", "older gopeft")
	unchanged(t, "resume with other settings", out, before)

	// --resume and --overwrite-output-dir contradict each other.
	mustFail(t, quickTrain(t, out, "--resume", "--overwrite-output-dir"), "not both")

	// --overwrite-output-dir replaces the old run whole: no checkpoint of
	// its steps 3 and 4 is left beside the new run's.
	if _, err := run(t, quickTrain(t, out, "--overwrite-output-dir")...); err != nil {
		t.Fatal(err)
	}
	cks, err := train.ListCheckpoints(filepath.Join(out, "checkpoints"))
	if err != nil || len(cks) == 0 || cks[len(cks)-1].Step != 2 {
		t.Errorf("checkpoints after --overwrite-output-dir: %v, %v", cks, err)
	}
	if recs, err := train.ReadMetricsFile(filepath.Join(out, "metrics.jsonl")); err != nil || len(recs) != 2 {
		t.Errorf("metrics after --overwrite-output-dir: %d records, %v", len(recs), err)
	}

	// --resume where there is nothing to resume.
	mustFail(t, quickTrain(t, filepath.Join(t.TempDir(), "none"), "--resume"), "--resume", "does not exist")

	// A run never writes over its own input: a full fine-tune into the
	// model's own directory is refused.
	hf := filepath.Join(t.TempDir(), "hf")
	if _, err := run(t, "convert", "--model", shared.Path(t, "data/models/stories260K/stories260K.bin"), "--output", hf); err != nil {
		t.Fatal(err)
	}
	hfBefore := snapshot(t, hf)
	args := quickTrain(t, hf, "--method", "FULL", "--overwrite-output-dir",
		"--tokenizer", shared.Path(t, "data/models/stories260K/tok512.bin"))
	args[2] = hf // --model
	mustFail(t, args, "model's own directory")
	unchanged(t, "train into the model's directory", hf, hfBefore)
}

func TestReliabilityTrainSettings(t *testing.T) {
	dir := t.TempDir()
	out := filepath.Join(dir, "out")
	cases := []struct {
		flags []string
		want  string
	}{
		{[]string{"--lr", "0"}, "--lr"},
		{[]string{"--lr", "NaN"}, "--lr"},
		{[]string{"--lr", "-1"}, "--lr"},
		{[]string{"--batch", "0"}, "--batch"},
		{[]string{"--batch", "-1"}, "--batch"},
		{[]string{"--grad-accum", "0"}, "--grad-accum"},
		{[]string{"--max-grad-norm", "-1"}, "--max-grad-norm"},
		{[]string{"--eval-every", "-1"}, "--eval-every"},
		{[]string{"--save-every", "-1"}, "--save-every"},
		{[]string{"--log-every", "0"}, "--log-every"},
		{[]string{"--steps", "0"}, "--steps"},
		{[]string{"--warmup", "-1"}, "--warmup"},
		{[]string{"--weight-decay", "NaN"}, "--weight-decay"},
		{[]string{"--schedule", "foo"}, "--schedule"},
		{[]string{"--optimizer", "adam"}, "--optimizer"},
		{[]string{"--template", "foo"}, "--template"},
		{[]string{"--format", "foo"}, "--format"},
		{[]string{"--template", "alpaca"}, "--template"},
		{[]string{"--eval-fraction", "0.1", "--eval-data", "x.txt"}, "--eval-data"},
		{[]string{"--seq-len", "100000"}, "context of 512"},
		{[]string{"--seq-len", "0"}, "--seq-len"},
		{[]string{"--max-len", "-1"}, "--max-len"},
		{[]string{"--eval-fraction", "1"}, "--eval-fraction"},
		{[]string{"--limit", "-1"}, "--limit"},
		{[]string{"--rank", "0"}, "--rank"},
		{[]string{"--alpha", "NaN"}, "--alpha"},
		{[]string{"--dropout", "1"}, "--dropout"},
		{[]string{"--method", "FOO"}, "--method"},
	}
	for _, c := range cases {
		mustFail(t, quickTrain(t, out, c.flags...), c.want)
		if _, err := os.Stat(out); err == nil {
			t.Fatalf("%v created %s", c.flags, out)
		}
	}
	// A recipe's values are checked the same way, named by their key.
	recipe := filepath.Join(dir, "r.yaml")
	for body, want := range map[string]string{
		"train:\n  lr: 0\n":                "train.lr",
		"train:\n  grad_accum: 0\n":        "train.grad_accum",
		"train:\n  keep_checkpoints: -1\n": "train.keep_checkpoints",
		"train:\n  momentum: 1\n":          "train.momentum",
		"data:\n  template: foo\n":         "data.template",
		"peft:\n  r: 0\n":                  "peft.r) is 0: must be at least 1",
		"peft:\n  lora_alpha: .nan\n":      "peft.lora_alpha",
	} {
		if err := os.WriteFile(recipe, []byte(body), 0o644); err != nil {
			t.Fatal(err)
		}
		mustFail(t, quickTrain(t, out, "--config", recipe), want)
	}
	// The recipe written beside a run records what trained: the CLI's
	// defaults are train.DefaultConfig's.
	d := train.DefaultConfig()
	fl := newTrainCmd().Flags()
	for flag, want := range map[string]string{"batch": itoa(d.BatchSize), "lr": "0.002", "grad-accum": itoa(d.GradAccum), "steps": itoa(d.Steps)} {
		if got := fl.Lookup(flag).DefValue; got != want {
			t.Errorf("--%s defaults to %s, train.DefaultConfig to %s", flag, got, want)
		}
	}
}

func TestReliabilityGenerate(t *testing.T) {
	model := shared.Path(t, "data/models/stories260K/stories260K.bin")
	for _, c := range []struct{ flag, value string }{
		{"--temperature", "-1"}, {"--temperature", "NaN"}, {"--top-p", "0"}, {"--top-p", "1.5"}, {"--top-p", "NaN"}, {"--top-k", "-1"},
		{"-n", "-1"},
	} {
		mustFail(t, []string{"generate", "--model", model, c.flag, c.value}, strings.TrimLeft(c.flag, "-"))
	}
	// A billion new tokens: clamped to the context, with a notice.
	out, err := run(t, "generate", "--model", model, "--temperature", "0", "-n", "1000000000")
	if err != nil || !strings.Contains(out, "at most 511 tokens") {
		t.Errorf("-n 1000000000: %v\n%.300s", err, out)
	}
	// A tokenizer smaller than the model's vocabulary: tok512.bin cut after
	// 500 tokens.
	short := filepath.Join(t.TempDir(), "tok500.bin")
	if err := os.WriteFile(short, cutLlama2cTokenizer(t, shared.Path(t, "data/models/stories260K/tok512.bin"), 500), 0o644); err != nil {
		t.Fatal(err)
	}
	mustFail(t, []string{"generate", "--model", model, "--tokenizer", short, "-n", "3"}, "500 tokens", "512")
}

// cutLlama2cTokenizer returns the first n tokens of a llama2.c
// tokenizer.bin (int32 max length, then per token float32 score, int32
// length, bytes).
func cutLlama2cTokenizer(t *testing.T, path string, n int) []byte {
	b, err := os.ReadFile(path)
	if err != nil {
		t.Fatal(err)
	}
	off := 4
	for i := 0; i < n; i++ {
		l := int(b[off+4]) | int(b[off+5])<<8 | int(b[off+6])<<16 | int(b[off+7])<<24
		off += 8 + l
	}
	return b[:off]
}

func TestReliabilityModelFiles(t *testing.T) {
	dir := t.TempDir()
	bin := shared.Path(t, "data/models/stories260K/stories260K.bin")
	tok := shared.Path(t, "data/models/stories260K/tok512.bin")
	write := func(name string, b []byte) string {
		p := filepath.Join(dir, name)
		if err := os.MkdirAll(filepath.Dir(p), 0o755); err != nil {
			t.Fatal(err)
		}
		if err := os.WriteFile(p, b, 0o644); err != nil {
			t.Fatal(err)
		}
		return p
	}
	// Misleading messages: the real problem is named.
	mustFail(t, []string{"inspect", "--model", write("empty/model.safetensors", nil)}, "empty")
	mustFail(t, []string{"inspect", "--model", write("bad.gguf", []byte("GGUXxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxx"))}, "not a GGUF file", `"GGUX"`)
	// Special files never end: refused by name, not read.
	if _, err := os.Stat("/dev/zero"); err == nil {
		mustFail(t, []string{"generate", "--model", "/dev/zero"}, "/dev/zero", "not a regular file")
		mustFail(t, quickTrain(t, filepath.Join(dir, "out"), "--data", "/dev/zero"), "/dev/zero", "not a regular file")
		mustFail(t, []string{"eval", "--model", bin, "--task", "arc_easy", "--data", "/dev/zero"}, "/dev/zero", "not a regular file")
		mustFail(t, []string{"generate", "--model", bin, "--tokenizer", "/dev/zero"}, "/dev/zero")
	}
	// A config.json the code would run wrongly, or that describes more than
	// the file holds.
	hf := filepath.Join(dir, "hf")
	if _, err := run(t, "convert", "--model", bin, "--output", hf); err != nil {
		t.Fatal(err)
	}
	cfg, err := os.ReadFile(filepath.Join(hf, "config.json"))
	if err != nil {
		t.Fatal(err)
	}
	for key, v := range map[string]any{"hidden_act": "gelu", "model_type": "gpt2", "num_hidden_layers": 1_000_000_000} {
		var m map[string]any
		json.Unmarshal(cfg, &m)
		m[key] = v
		b, _ := json.Marshal(m)
		bad := filepath.Join(dir, "bad-"+key)
		write("bad-"+key+"/config.json", b)
		if err := os.Link(filepath.Join(hf, "model.safetensors"), filepath.Join(bad, "model.safetensors")); err != nil {
			t.Fatal(err)
		}
		mustFail(t, []string{"inspect", "--model", bad}, key)
	}

	// Non-finite weights are refused on load, naming the tensor; with
	// --allow-nonfinite generation stops at the first NaN logit instead.
	m, err := llama.Load(bin, llama.LoadOptions{})
	if err != nil {
		t.Fatal(err)
	}
	m.Norm.Weight.Value.Data[3] = float32(math.NaN())
	nan := filepath.Join(dir, "nan")
	if err := llama.SaveHF(m, nan); err != nil {
		t.Fatal(err)
	}
	mustFail(t, []string{"generate", "--model", nan, "--tokenizer", tok, "-n", "5"}, "model.norm.weight", "--allow-nonfinite")
	mustFail(t, []string{"generate", "--model", nan, "--tokenizer", tok, "-n", "5", "--allow-nonfinite"}, "generation step 1")
	mustFail(t, []string{"merge", "--model", nan, "--adapter", shared.Path(t, "golden/stories260K/lora"), "--output", filepath.Join(dir, "m1")}, "model.norm.weight")

	// An adapter with a NaN, and a SEQ_CLS adapter without its head.
	lora := shared.Path(t, "golden/stories260K/lora")
	ad := copyAdapter(t, lora, filepath.Join(dir, "nan-lora"), func(ts map[string]*format.Tensor, cfg map[string]any) {
		for _, x := range ts {
			v, _ := x.Float32()
			v[0] = float32(math.Inf(1))
			*x = *format.TensorFromF32(x.Name, x.Shape, v)
			break
		}
	})
	merged := filepath.Join(dir, "merged")
	mustFail(t, []string{"merge", "--model", hf, "--adapter", ad, "--output", merged}, "--allow-nonfinite")
	mustFail(t, []string{"generate", "--model", hf, "--adapter", ad, "--tokenizer", tok, "-n", "3"}, "nan-lora")
	if _, err := os.Stat(merged); err == nil {
		t.Error("merge wrote a model from a non-finite adapter")
	}
	cls := copyAdapter(t, lora, filepath.Join(dir, "cls-lora"), func(_ map[string]*format.Tensor, cfg map[string]any) {
		cfg["task_type"] = "SEQ_CLS"
	})
	_, err = run(t, "inspect", "--model", hf, "--adapter", cls)
	if err == nil || !strings.Contains(err.Error(), "classification head") || strings.Contains(err.Error(), "AddScoreHead") {
		t.Errorf("SEQ_CLS adapter without its head: %v", err)
	}
}

// copyAdapter copies a PEFT adapter directory to dst, letting edit change
// its tensors and config first.
func copyAdapter(t *testing.T, src, dst string, edit func(map[string]*format.Tensor, map[string]any)) string {
	t.Helper()
	ts, _, err := format.ReadSafetensors(filepath.Join(src, "adapter_model.safetensors"))
	if err != nil {
		t.Fatal(err)
	}
	raw, err := os.ReadFile(filepath.Join(src, "adapter_config.json"))
	if err != nil {
		t.Fatal(err)
	}
	var cfg map[string]any
	if err := json.Unmarshal(raw, &cfg); err != nil {
		t.Fatal(err)
	}
	edit(ts, cfg)
	if err := os.MkdirAll(dst, 0o755); err != nil {
		t.Fatal(err)
	}
	var list []*format.Tensor
	for _, x := range ts {
		list = append(list, x)
	}
	if err := format.WriteSafetensors(filepath.Join(dst, "adapter_model.safetensors"), list, nil); err != nil {
		t.Fatal(err)
	}
	b, _ := json.Marshal(cfg)
	if err := os.WriteFile(filepath.Join(dst, "adapter_config.json"), b, 0o644); err != nil {
		t.Fatal(err)
	}
	return dst
}

func TestReliabilityNoOutputOverInput(t *testing.T) {
	dir := t.TempDir()
	bin := shared.Path(t, "data/models/stories260K/stories260K.bin")
	tok := shared.Path(t, "data/models/stories260K/tok512.bin")
	hf := filepath.Join(dir, "hf")
	if _, err := run(t, "convert", "--model", bin, "--output", hf); err != nil {
		t.Fatal(err)
	}
	// convert and merge write the model directory anew: a stale index and
	// shard of an older model do not survive (the old model would load).
	out := filepath.Join(dir, "out")
	os.MkdirAll(out, 0o755)
	os.WriteFile(filepath.Join(out, format.HFIndexFile), []byte(`{"weight_map":{"lm_head.weight":"model-00001-of-00002.safetensors"}}`), 0o644)
	os.WriteFile(filepath.Join(out, "model-00001-of-00002.safetensors"), []byte("old"), 0o644)
	for _, args := range [][]string{
		{"convert", "--model", bin, "--output", out},
		{"merge", "--model", hf, "--adapter", shared.Path(t, "golden/stories260K/lora"), "--output", out},
	} {
		if _, err := run(t, args...); err != nil {
			t.Fatal(err)
		}
		got := snapshot(t, out)
		if len(got) != 2 {
			t.Errorf("%s left %v, want config.json and model.safetensors only", args[0], got)
		}
		if _, err := run(t, "inspect", "--model", out); err != nil {
			t.Errorf("%s wrote a model that does not load: %v", args[0], err)
		}
	}
	// A directory with other work in it is not replaced.
	work := filepath.Join(dir, "work")
	os.MkdirAll(work, 0o755)
	os.WriteFile(filepath.Join(work, "notes.txt"), []byte("mine"), 0o644)
	mustFail(t, []string{"convert", "--model", bin, "--output", work}, "notes.txt")
	// No command writes over its own input.
	before := snapshot(t, hf)
	mustFail(t, []string{"convert", "--model", hf, "--output", hf}, "--output", "--model")
	mustFail(t, []string{"merge", "--model", hf, "--adapter", shared.Path(t, "golden/stories260K/lora"), "--output", dir}, "--output")
	mustFail(t, []string{"eval", "--model", hf, "--tokenizer", tok, "--task", "arc_easy", "--limit", "1",
		"--output", filepath.Join(hf, "model.safetensors")}, "--output", "--model")
	mustFail(t, []string{"eval", "--model", hf, "--tokenizer", tok, "--task", "arc_easy", "--limit", "1",
		"--samples", filepath.Join(hf, "config.json")}, "--samples")
	unchanged(t, "outputs pointed at the inputs", hf, before)
	tokCopy := filepath.Join(dir, "tok512.bin")
	b, _ := os.ReadFile(tok)
	os.WriteFile(tokCopy, b, 0o644)
	mustFail(t, []string{"eval", "--model", bin, "--tokenizer", tokCopy, "--task", "arc_easy", "--limit", "1", "--output", tokCopy}, "--tokenizer")
}
