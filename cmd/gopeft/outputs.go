package main

import (
	"errors"
	"fmt"
	"io"
	"io/fs"
	"os"
	"path/filepath"
	"slices"
	"strings"

	"github.com/gopeft/gopeft/internal/atomicfile"
	"github.com/gopeft/gopeft/model/format"
	"github.com/gopeft/gopeft/train"
)

// input is a file or directory a command reads, with the flag that named
// it, so that no output can be written over it.
type input struct{ flag, path string }

// realPath is path made absolute with symbolic links resolved, as far as
// it exists, so that two names for one file compare equal.
func realPath(path string) string {
	abs, err := filepath.Abs(path)
	if err != nil {
		return filepath.Clean(path)
	}
	if r, err := filepath.EvalSymlinks(abs); err == nil {
		return r
	}
	dir, base := filepath.Split(abs)
	if dir != abs && dir != "" {
		return filepath.Join(realPath(filepath.Clean(dir)), base)
	}
	return abs
}

// within reports whether path is dir or lies below it.
func within(path, dir string) bool {
	rel, err := filepath.Rel(dir, path)
	return err == nil && rel != ".." && !strings.HasPrefix(rel, ".."+string(filepath.Separator)) && !filepath.IsAbs(rel)
}

// checkFileOutput refuses an output file that is one of the inputs or,
// for an input directory (a model or an adapter), one of its files:
// `eval --output` pointed at the model would otherwise overwrite it.
func checkFileOutput(flag, out string, inputs []input) error {
	st, err := os.Stat(out)
	if err != nil {
		return nil // a new file cannot be an input
	}
	for _, in := range inputs {
		if in.path == "" || strings.HasPrefix(in.path, "preset:") {
			continue
		}
		ist, err := os.Stat(in.path)
		if err != nil {
			continue
		}
		files := []string{in.path}
		if ist.IsDir() {
			files = nil
			entries, _ := os.ReadDir(in.path)
			for _, e := range entries {
				files = append(files, filepath.Join(in.path, e.Name()))
			}
		}
		for _, f := range files {
			if fst, err := os.Stat(f); err == nil && os.SameFile(st, fst) {
				return fmt.Errorf("%s %s is the input %s (%s): refusing to write over it; choose another file", flag, out, f, in.flag)
			}
		}
	}
	return nil
}

// checkDirOutput refuses an output directory that is, or holds, one of the
// inputs: convert and merge replace the whole directory.
func checkDirOutput(flag, out string, inputs []input) error {
	o := realPath(out)
	for _, in := range inputs {
		if in.path == "" || strings.HasPrefix(in.path, "preset:") {
			continue
		}
		if within(realPath(in.path), o) {
			return fmt.Errorf("%s %s holds the input %s (%s), and writing the output replaces it; choose another directory", flag, out, in.path, in.flag)
		}
	}
	return nil
}

// modelDirFiles are the names a Hugging Face model directory may hold
// besides its weights; a directory with anything else is not replaced.
var modelDirFiles = []string{format.HFConfigFile, format.HFIndexFile, "generation_config.json", "tokenizer.json",
	"tokenizer_config.json", "tokenizer.model", "special_tokens_map.json", "README.md"}

// writeModelDir writes a Hugging Face model directory through write, into
// a temporary directory beside out that then takes out's place: no stale
// shard or index of an older model survives, and an interrupted write
// leaves the old directory whole. An existing out must be empty or hold
// only a model's files, so that a directory of other work is never swept
// away.
func writeModelDir(flag, out string, write func(dir string) error) error {
	if wd, err := os.Getwd(); err == nil && within(realPath(wd), realPath(out)) {
		return fmt.Errorf("%s %s is (or holds) the working directory, which cannot be replaced; give a new directory", flag, out)
	}
	entries, err := os.ReadDir(out)
	switch {
	case errors.Is(err, fs.ErrNotExist):
	case err != nil:
		return fmt.Errorf("%s %s: %w", flag, out, err)
	default:
		for _, e := range entries {
			n := e.Name()
			if !e.Type().IsRegular() || !(slices.Contains(modelDirFiles, n) || strings.HasSuffix(n, ".safetensors")) {
				return fmt.Errorf("%s %s holds %s, which is not a model file: refusing to replace the directory; give a new or empty one", flag, out, n)
			}
		}
	}
	return atomicfile.ReplaceDir(out, write)
}

// trainOutputs are what a training run leaves in its output directory.
var trainOutputs = []string{"recipe.yaml", "metrics.jsonl", "loss.png", "adapter_config.json", "adapter_model.safetensors",
	format.HFConfigFile, format.HFSafetensorsFile, format.HFIndexFile, "checkpoints"}

// outputPlan is what a training run will do to its output directory:
// remove lists the old results --overwrite-output-dir replaces.
type outputPlan struct {
	dir    string
	remove []string
}

// clear removes the old results, once the new run's model and data have
// loaded (a run that cannot start leaves them as they were).
func (p outputPlan) clear(out io.Writer) error {
	for _, f := range p.remove {
		if err := os.RemoveAll(f); err != nil {
			return fmt.Errorf("--overwrite-output-dir: %w", err)
		}
	}
	if len(p.remove) > 0 {
		fmt.Fprintf(out, "removed the previous results in %s (--overwrite-output-dir)\n", p.dir)
	}
	return nil
}

// checkTrainOutput decides, before anything is loaded, whether a run may
// use r.Output: a new run needs a directory without another run's results
// (or --overwrite-output-dir, which removes them), a resumed run the same
// run's unfinished checkpoints. fingerprint identifies this run. No input
// may lie where the run writes.
func checkTrainOutput(r *Recipe, resume, overwrite bool, fingerprint string, inputs []input) (outputPlan, error) {
	plan := outputPlan{dir: r.Output}
	if resume && overwrite {
		return plan, fmt.Errorf("give --resume (continue the run in %s) or --overwrite-output-dir (replace it), not both", r.Output)
	}
	o := realPath(r.Output)
	for _, in := range inputs {
		if in.path == "" {
			continue
		}
		p := realPath(in.path)
		if p == o {
			return plan, fmt.Errorf("--output %s is the model's own directory (%s %s): choose another directory", r.Output, in.flag, in.path)
		}
		for _, name := range trainOutputs {
			if within(p, filepath.Join(o, name)) {
				return plan, fmt.Errorf("--output %s would write over the input %s (%s): choose another directory", r.Output, in.path, in.flag)
			}
		}
	}
	st, err := os.Stat(r.Output)
	if errors.Is(err, fs.ErrNotExist) {
		if resume {
			return plan, fmt.Errorf("--resume: %s does not exist, so there is no run to continue; start one without --resume", r.Output)
		}
		return plan, nil
	}
	if err != nil {
		return plan, err
	}
	if !st.IsDir() {
		return plan, fmt.Errorf("--output %s is a file, not a directory", r.Output)
	}
	var found []string
	for _, name := range trainOutputs {
		if _, err := os.Lstat(filepath.Join(r.Output, name)); err == nil {
			found = append(found, name)
		}
	}
	switch {
	case resume:
		return plan, checkResumable(r, fingerprint)
	case len(found) == 0:
		return plan, nil
	case overwrite:
		for _, name := range found {
			plan.remove = append(plan.remove, filepath.Join(r.Output, name))
		}
		return plan, nil
	}
	return plan, fmt.Errorf("--output %s already holds results (%s): continue that run with --resume, or replace them with --overwrite-output-dir",
		r.Output, strings.Join(found, ", "))
}

// checkResumable requires an unfinished checkpoint of this very run.
func checkResumable(r *Recipe, fingerprint string) error {
	ckDir := filepath.Join(r.Output, "checkpoints")
	dir, ok, err := train.LatestCheckpoint(ckDir)
	if err != nil {
		return err
	}
	if !ok {
		return fmt.Errorf("--resume: %s holds no checkpoint to continue from; start the run without --resume", ckDir)
	}
	step, fp, err := train.PeekCheckpoint(dir)
	if err != nil {
		return err
	}
	if fp != fingerprint {
		var also string
		if isLlama2cFile(r.Model) {
			also = "; or a run begun by an older gopeft, whose adapter indexes this llama2.c file's q/k rows in the file's order, where they are now permuted to Hugging Face's on load"
		}
		return fmt.Errorf("--resume: %s: %w (another model, method, data or hyper-parameters than its recipe.yaml%s); resume with the same settings, or start anew with --overwrite-output-dir",
			dir, train.ErrFingerprint, also)
	}
	if step >= r.Train.Steps {
		return fmt.Errorf("--resume: the run in %s already finished (step %d of %d); nothing was changed. To train again, use another --output or --overwrite-output-dir",
			r.Output, step, r.Train.Steps)
	}
	return nil
}
