package train

import (
	"bufio"
	"bytes"
	"crypto/sha256"
	"encoding/binary"
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"maps"
	"os"
	"path/filepath"
	"slices"
	"sort"
	"strconv"
	"strings"
	"unsafe"

	"github.com/gopeft/gopeft/internal/safefile"
	"github.com/gopeft/gopeft/model/format"
	"github.com/gopeft/gopeft/nn"
	"github.com/gopeft/gopeft/peft"
	"github.com/gopeft/gopeft/tensor"
)

// A checkpoint is a directory:
//
//	trainer_state.json     counters, RNG state, fingerprint, optimizer kind,
//	                       hyperparameters and step counts, file checksums, meta
//	params.safetensors     the trainable tensors under their parameter names
//	optimizer.safetensors  optimizer buffers, named "<param>.<buffer>"
//	                       (e.g. "...q_proj.lora_A.weight.exp_avg"): F32,
//	                       or U8 for 8-bit codes (adamw_8bit's state1)
//	method.safetensors     the method's own state (peft.Stateful), when it
//	                       keeps some; its JSON part is in trainer_state.json
//
// It is written as <dir>.tmp and renamed into place, so an interrupted save
// leaves the previous checkpoint untouched. The safetensors files carry
// {"format":"pt"} and load with the Python safetensors library.

// Checkpoint files.
const (
	StateFile     = "trainer_state.json"
	ParamsFile    = "params.safetensors"
	OptimizerFile = "optimizer.safetensors"
	MethodFile    = "method.safetensors"
	ExtraFile     = "extra.safetensors"
)

// checkpointFormat and checkpointVersion identify trainer_state.json.
const (
	checkpointFormat  = "gopeft-checkpoint"
	checkpointVersion = 1
)

// ErrFingerprint is returned (wrapped) by Restore when a checkpoint belongs
// to another run.
var ErrFingerprint = errors.New("checkpoint belongs to a different run")

// Checkpoint is everything needed to resume training where it stopped.
type Checkpoint struct {
	Step    int   // optimizer updates completed
	Epoch   int   // epoch in progress
	DataPos int64 // position in the epoch's data order (the loop decides the unit)
	// RNG is the random generators' state, opaque to this package.
	RNG []uint64
	// Fingerprint identifies the run (see Fingerprint); Restore refuses a
	// checkpoint whose fingerprint differs from the resuming run's.
	Fingerprint string
	// Params holds the trainable tensors by parameter name (float32).
	Params map[string]*tensor.Tensor
	// Optimizer is the optimizer's state; nil saves none.
	Optimizer *OptimizerState
	// Meta is free-form JSON (config, recipe, best metric); nil for none.
	Meta json.RawMessage
	// Method is the PEFT method's own state (peft.Stateful); nil for none.
	Method *peft.State
	// Extra is the run's state beside the method's (Run.State: continual
	// learning's Fisher and anchors); nil for none.
	Extra *peft.State
}

// Capture points ck.Params and ck.Optimizer at the live trainable tensors of
// ps and the state of opt (nil for none). Nothing is copied: save before the
// next update.
func (ck *Checkpoint) Capture(ps nn.Params, opt Optimizer) {
	ck.Params = map[string]*tensor.Tensor{}
	for _, p := range Trainable(ps) {
		ck.Params[p.Name] = p.Var.Value
	}
	ck.Optimizer = nil
	if opt != nil {
		ck.Optimizer = opt.State()
	}
}

// Restore resumes from ck: it checks the run fingerprint, copies the saved
// tensors into the trainable parameters of ps (names and shapes must match
// exactly, in both directions) and loads the optimizer state into opt (when
// opt is non-nil). Nothing changes unless everything matches.
func (ck *Checkpoint) Restore(fingerprint string, ps nn.Params, opt Optimizer) error {
	if ck.Fingerprint != fingerprint {
		return fmt.Errorf("%w: checkpoint fingerprint %q, this run %q (another config, data or seed); start a new output directory or resume the original run",
			ErrFingerprint, ck.Fingerprint, fingerprint)
	}
	tr := Trainable(ps)
	for _, p := range tr {
		t, ok := ck.Params[p.Name]
		if !ok {
			return fmt.Errorf("checkpoint has no tensor for trainable parameter %q", p.Name)
		}
		if t == nil || t.DType() != tensor.F32 || !tensor.SameShape(t.Shape, p.Var.Value.Shape) || len(t.Data) != p.Var.Value.Numel() {
			return fmt.Errorf("checkpoint tensor %q is %s, the parameter is f32 %v", p.Name, describe(t), p.Var.Value.Shape)
		}
	}
	if len(ck.Params) != len(tr) {
		var extra []string
		for name := range ck.Params {
			if _, ok := tr.Get(name); !ok {
				extra = append(extra, name)
			}
		}
		sort.Strings(extra)
		return fmt.Errorf("checkpoint has tensors for parameters that are not trainable here: %q", extra)
	}
	if opt != nil {
		if ck.Optimizer == nil {
			return fmt.Errorf("checkpoint has no optimizer state")
		}
		// LoadState validates before it changes anything; run it before
		// the parameters are overwritten.
		if err := opt.LoadState(ck.Optimizer); err != nil {
			return err
		}
	}
	for _, p := range tr {
		copy(p.Var.Value.Data, ck.Params[p.Name].Data)
	}
	return nil
}

// Fingerprint returns a short hash of v's JSON encoding: pass what makes a
// run the same run (model, method config, data, seed, schedule), not what
// may change on resume (output paths, logging).
func Fingerprint(v any) (string, error) {
	b, err := json.Marshal(v)
	if err != nil {
		return "", fmt.Errorf("fingerprint: %w", err)
	}
	sum := sha256.Sum256(b)
	return hex.EncodeToString(sum[:8]), nil
}

// stateJSON is trainer_state.json.
type stateJSON struct {
	Format      string            `json:"format"`
	Version     int               `json:"version"`
	Step        int               `json:"step"`
	Epoch       int               `json:"epoch"`
	DataPos     int64             `json:"data_pos"`
	RNG         []uint64          `json:"rng"`
	Fingerprint string            `json:"fingerprint"`
	Params      []string          `json:"params"`
	Optimizer   *optimizerJSON    `json:"optimizer,omitempty"`
	Files       map[string]string `json:"files"` // file name → SHA-256 (hex)
	Meta        json.RawMessage   `json:"meta,omitempty"`
	Method      *methodJSON       `json:"method,omitempty"`
	Extra       *methodJSON       `json:"extra,omitempty"`
}

// methodJSON is a method's state: its JSON and the names of its tensors
// in method.safetensors.
type methodJSON struct {
	State   json.RawMessage `json:"state,omitempty"`
	Tensors []string        `json:"tensors"`
}

type optimizerJSON struct {
	Kind   string                    `json:"kind"`
	Hyper  map[string]float64        `json:"hyper,omitempty"`
	Params map[string]optimParamJSON `json:"params"`
}

type optimParamJSON struct {
	Step    int64    `json:"step"`
	Buffers []string `json:"buffers,omitempty"`
}

// optimTensorName is the name of a parameter's optimizer buffer in
// optimizer.safetensors.
func optimTensorName(param, buffer string) string { return param + "." + buffer }

// SaveCheckpoint writes ck to the directory dir, replacing a checkpoint
// already there. Everything is written under dir + ".tmp", synced, and then
// renamed to dir.
func SaveCheckpoint(dir string, ck *Checkpoint) error {
	if ck == nil {
		return fmt.Errorf("save checkpoint %s: no checkpoint", dir)
	}
	dir = filepath.Clean(dir)
	tmp := dir + ".tmp"
	if err := os.RemoveAll(tmp); err != nil { // left by an interrupted save
		return fmt.Errorf("save checkpoint %s: %w", dir, err)
	}
	if err := os.MkdirAll(tmp, 0o755); err != nil {
		return fmt.Errorf("save checkpoint %s: %w", dir, err)
	}
	if err := writeCheckpoint(tmp, ck); err != nil {
		os.RemoveAll(tmp)
		return fmt.Errorf("save checkpoint %s: %w", dir, err)
	}
	old := dir + ".old"
	replaced := false
	if _, err := os.Stat(dir); err == nil {
		// rename cannot replace a non-empty directory: move it aside first.
		if err := os.RemoveAll(old); err != nil {
			return fmt.Errorf("save checkpoint %s: %w", dir, err)
		}
		if err := os.Rename(dir, old); err != nil {
			return fmt.Errorf("save checkpoint %s: %w", dir, err)
		}
		replaced = true
	}
	if err := os.Rename(tmp, dir); err != nil {
		return fmt.Errorf("save checkpoint %s: %w", dir, err)
	}
	syncDir(filepath.Dir(dir))
	if replaced {
		os.RemoveAll(old)
	}
	return nil
}

// writeCheckpoint writes ck's files into the (fresh) directory tmp.
func writeCheckpoint(tmp string, ck *Checkpoint) error {
	st := stateJSON{
		Format: checkpointFormat, Version: checkpointVersion,
		Step: ck.Step, Epoch: ck.Epoch, DataPos: ck.DataPos, RNG: ck.RNG,
		Fingerprint: ck.Fingerprint, Params: []string{}, Files: map[string]string{}, Meta: ck.Meta,
	}
	if st.RNG == nil {
		st.RNG = []uint64{}
	}
	if len(ck.Meta) > 0 && !json.Valid(ck.Meta) {
		return fmt.Errorf("meta is not valid JSON")
	}
	var tensors []*format.Tensor
	for _, name := range slices.Sorted(maps.Keys(ck.Params)) {
		t := ck.Params[name]
		if t == nil || t.DType() != tensor.F32 {
			return fmt.Errorf("parameter %q: want a float32 tensor, have %s", name, describe(t))
		}
		st.Params = append(st.Params, name)
		tensors = append(tensors, f32Tensor(name, t))
	}
	sort.Strings(st.Params)
	sum, err := writeSafetensors(filepath.Join(tmp, ParamsFile), tensors)
	if err != nil {
		return err
	}
	st.Files[ParamsFile] = sum
	if o := ck.Optimizer; o != nil {
		oj := &optimizerJSON{Kind: o.Kind, Hyper: o.Hyper, Params: map[string]optimParamJSON{}}
		tensors = tensors[:0]
		for _, name := range slices.Sorted(maps.Keys(o.Params)) {
			ps := o.Params[name]
			if ps == nil {
				return fmt.Errorf("optimizer state for %q is nil", name)
			}
			pj := optimParamJSON{Step: ps.Step}
			for _, buf := range slices.Sorted(maps.Keys(ps.Buffers)) {
				t := ps.Buffers[buf]
				if t == nil || t.DType() != tensor.F32 {
					return fmt.Errorf("optimizer buffer %q.%s: want a float32 tensor, have %s", name, buf, describe(t))
				}
				pj.Buffers = append(pj.Buffers, buf)
				tensors = append(tensors, f32Tensor(optimTensorName(name, buf), t))
			}
			for _, buf := range slices.Sorted(maps.Keys(ps.Codes)) {
				c := ps.Codes[buf]
				if _, dup := ps.Buffers[buf]; dup {
					return fmt.Errorf("optimizer buffer %q.%s is both float32 and 8-bit", name, buf)
				}
				if c == nil || len(c.Data) != tensor.Numel(c.Shape) {
					return fmt.Errorf("optimizer buffer %q.%s: 8-bit codes that do not fill their shape", name, buf)
				}
				pj.Buffers = append(pj.Buffers, buf)
				tensors = append(tensors, &format.Tensor{Name: optimTensorName(name, buf), DType: "U8", Shape: slices.Clone(c.Shape), Data: c.Data})
			}
			sort.Strings(pj.Buffers)
			oj.Params[name] = pj
		}
		sum, err := writeSafetensors(filepath.Join(tmp, OptimizerFile), tensors)
		if err != nil {
			return err
		}
		st.Files[OptimizerFile] = sum
		st.Optimizer = oj
	}
	if st.Method, err = writeState(tmp, MethodFile, "method", ck.Method, st.Files); err != nil {
		return err
	}
	if st.Extra, err = writeState(tmp, ExtraFile, "extra", ck.Extra, st.Files); err != nil {
		return err
	}
	js, err := json.MarshalIndent(st, "", "  ")
	if err != nil {
		return fmt.Errorf("%s: %w", StateFile, err)
	}
	if err := writeSynced(filepath.Join(tmp, StateFile), func(w io.Writer) error {
		_, err := w.Write(append(js, '\n'))
		return err
	}); err != nil {
		return err
	}
	syncDir(tmp)
	return nil
}

// writeState writes a method's or the run's state to file (nothing for a
// nil state) and returns its trainer_state.json entry; what names it in
// errors.
func writeState(tmp, file, what string, m *peft.State, files map[string]string) (*methodJSON, error) {
	if m == nil {
		return nil, nil
	}
	if len(m.JSON) > 0 && !json.Valid(m.JSON) {
		return nil, fmt.Errorf("%s state is not valid JSON", what)
	}
	mj := &methodJSON{State: m.JSON, Tensors: []string{}}
	var tensors []*format.Tensor
	for _, name := range slices.Sorted(maps.Keys(m.Tensors)) {
		t := m.Tensors[name]
		if t == nil || t.DType() != tensor.F32 {
			return nil, fmt.Errorf("%s state %q: want a float32 tensor, have %s", what, name, describe(t))
		}
		mj.Tensors = append(mj.Tensors, name)
		tensors = append(tensors, f32Tensor(name, t))
	}
	sort.Strings(mj.Tensors)
	sum, err := writeSafetensors(filepath.Join(tmp, file), tensors)
	if err != nil {
		return nil, err
	}
	files[file] = sum
	return mj, nil
}

// readState reads the state a trainer_state.json entry describes (nil for
// none).
func readState(dir, file string, mj *methodJSON, files map[string]string) (*peft.State, error) {
	if mj == nil {
		return nil, nil
	}
	ts, err := readChecked(dir, file, files[file])
	if err != nil {
		return nil, err
	}
	path := filepath.Join(dir, file)
	st := &peft.State{JSON: mj.State, Tensors: map[string]*tensor.Tensor{}}
	for _, name := range mj.Tensors {
		if st.Tensors[name], err = takeF32(path, ts, name); err != nil {
			return nil, err
		}
	}
	if err := noneLeft(path, ts); err != nil {
		return nil, err
	}
	return st, nil
}

// writeSafetensors writes tensors with {"format":"pt"} metadata and returns
// the file's SHA-256.
func writeSafetensors(path string, tensors []*format.Tensor) (string, error) {
	h := sha256.New()
	err := writeSynced(path, func(w io.Writer) error {
		return format.EncodeSafetensors(io.MultiWriter(w, h), tensors, map[string]string{"format": "pt"})
	})
	if err != nil {
		return "", err
	}
	return hex.EncodeToString(h.Sum(nil)), nil
}

// writeSynced creates path, writes it through a buffer and syncs it.
func writeSynced(path string, write func(w io.Writer) error) error {
	f, err := os.Create(path)
	if err == nil {
		err = writeFile(f, write)
	}
	if err != nil {
		return fmt.Errorf("write %s: %w", path, err)
	}
	return nil
}

// writeFile writes f through a buffer, syncs and closes it.
func writeFile(f *os.File, write func(w io.Writer) error) error {
	bw := bufio.NewWriterSize(f, 1<<20)
	err := write(bw)
	if err == nil {
		err = bw.Flush()
	}
	if err == nil {
		err = f.Sync()
	}
	if cerr := f.Close(); err == nil {
		err = cerr
	}
	return err
}

// syncDir makes renames in dir durable; failure only weakens durability.
func syncDir(dir string) {
	if d, err := os.Open(dir); err == nil {
		d.Sync()
		d.Close()
	}
}

var littleEndian = binary.NativeEndian.Uint16([]byte{1, 0}) == 1

// f32Tensor describes t for the safetensors writer. On little-endian
// machines its bytes alias t's storage, so a multi-gigabyte optimizer state
// is not copied.
func f32Tensor(name string, t *tensor.Tensor) *format.Tensor {
	if !littleEndian || len(t.Data) == 0 {
		return format.TensorFromF32(name, t.Shape, t.Data)
	}
	b := unsafe.Slice((*byte)(unsafe.Pointer(&t.Data[0])), 4*len(t.Data))
	return &format.Tensor{Name: name, DType: format.F32, Shape: slices.Clone(t.Shape), Data: b}
}

// LoadCheckpoint reads the checkpoint directory dir. Every file's checksum
// is verified, so a truncated or corrupted file is reported by name.
func LoadCheckpoint(dir string) (*Checkpoint, error) {
	statePath := filepath.Join(dir, StateFile)
	data, err := os.ReadFile(statePath)
	if err != nil {
		return nil, fmt.Errorf("load checkpoint: %w", err)
	}
	st, err := parseState(statePath, data)
	if err != nil {
		return nil, fmt.Errorf("load checkpoint: %w", err)
	}
	ck := &Checkpoint{
		Step: st.Step, Epoch: st.Epoch, DataPos: st.DataPos, RNG: st.RNG,
		Fingerprint: st.Fingerprint, Meta: st.Meta,
	}
	params, err := readChecked(dir, ParamsFile, st.Files[ParamsFile])
	if err != nil {
		return nil, fmt.Errorf("load checkpoint: %w", err)
	}
	ck.Params = map[string]*tensor.Tensor{}
	path := filepath.Join(dir, ParamsFile)
	for _, name := range st.Params {
		t, err := takeF32(path, params, name)
		if err != nil {
			return nil, fmt.Errorf("load checkpoint: %w", err)
		}
		ck.Params[name] = t
	}
	if err := noneLeft(path, params); err != nil {
		return nil, fmt.Errorf("load checkpoint: %w", err)
	}
	if o := st.Optimizer; o != nil {
		bufs, err := readChecked(dir, OptimizerFile, st.Files[OptimizerFile])
		if err != nil {
			return nil, fmt.Errorf("load checkpoint: %w", err)
		}
		path := filepath.Join(dir, OptimizerFile)
		ck.Optimizer = &OptimizerState{Kind: o.Kind, Hyper: o.Hyper, Params: map[string]*ParamState{}}
		for _, name := range slices.Sorted(maps.Keys(o.Params)) {
			pj := o.Params[name]
			ps := &ParamState{Step: pj.Step, Buffers: map[string]*tensor.Tensor{}}
			for _, b := range pj.Buffers {
				if u := bufs[optimTensorName(name, b)]; u != nil && u.DType == "U8" {
					if ps.Codes == nil {
						ps.Codes = map[string]*Codes{}
					}
					ps.Codes[b] = &Codes{Shape: slices.Clone(u.Shape), Data: slices.Clone(u.Data)}
					delete(bufs, optimTensorName(name, b))
					continue
				}
				t, err := takeF32(path, bufs, optimTensorName(name, b))
				if err != nil {
					return nil, fmt.Errorf("load checkpoint: %w", err)
				}
				ps.Buffers[b] = t
			}
			ck.Optimizer.Params[name] = ps
		}
		if err := noneLeft(path, bufs); err != nil {
			return nil, fmt.Errorf("load checkpoint: %w", err)
		}
	}
	if ck.Method, err = readState(dir, MethodFile, st.Method, st.Files); err != nil {
		return nil, fmt.Errorf("load checkpoint: %w", err)
	}
	if ck.Extra, err = readState(dir, ExtraFile, st.Extra, st.Files); err != nil {
		return nil, fmt.Errorf("load checkpoint: %w", err)
	}
	return ck, nil
}

// parseState decodes and checks trainer_state.json; name is used in errors.
func parseState(name string, data []byte) (*stateJSON, error) {
	var st stateJSON
	dec := json.NewDecoder(bytes.NewReader(data))
	if err := dec.Decode(&st); err != nil {
		return nil, fmt.Errorf("%s: %v (file truncated or not a checkpoint?)", name, err)
	}
	if st.Format != checkpointFormat {
		return nil, fmt.Errorf("%s: not a gopeft checkpoint (format %q, want %q)", name, st.Format, checkpointFormat)
	}
	if st.Version != checkpointVersion {
		return nil, fmt.Errorf("%s: checkpoint version %d is not supported (want %d)", name, st.Version, checkpointVersion)
	}
	if st.Step < 0 || st.Epoch < 0 || st.DataPos < 0 {
		return nil, fmt.Errorf("%s: negative counter (step %d, epoch %d, data_pos %d)", name, st.Step, st.Epoch, st.DataPos)
	}
	if _, ok := st.Files[ParamsFile]; !ok {
		return nil, fmt.Errorf("%s: no checksum for %s", name, ParamsFile)
	}
	if _, ok := st.Files[OptimizerFile]; !ok && st.Optimizer != nil {
		return nil, fmt.Errorf("%s: no checksum for %s", name, OptimizerFile)
	}
	if _, ok := st.Files[MethodFile]; !ok && st.Method != nil {
		return nil, fmt.Errorf("%s: no checksum for %s", name, MethodFile)
	}
	if _, ok := st.Files[ExtraFile]; !ok && st.Extra != nil {
		return nil, fmt.Errorf("%s: no checksum for %s", name, ExtraFile)
	}
	if o := st.Optimizer; o != nil {
		for _, p := range slices.Sorted(maps.Keys(o.Params)) {
			pj := o.Params[p]
			if pj.Step < 0 {
				return nil, fmt.Errorf("%s: optimizer state for %q: negative step %d", name, p, pj.Step)
			}
		}
	}
	return &st, nil
}

// readChecked reads dir/file, verifies its SHA-256 and parses it.
func readChecked(dir, file, want string) (map[string]*format.Tensor, error) {
	path := filepath.Join(dir, file)
	data, err := os.ReadFile(path)
	if err != nil {
		return nil, err
	}
	sum := sha256.Sum256(data)
	if got := hex.EncodeToString(sum[:]); got != want {
		return nil, fmt.Errorf("%s: checksum mismatch (%d bytes, SHA-256 %s, %s records %s): the file is truncated or corrupt",
			path, len(data), got[:16]+"…", StateFile, short(want))
	}
	tensors, _, err := format.ParseSafetensors(path, data)
	return tensors, err
}

func short(s string) string {
	if len(s) > 16 {
		return s[:16] + "…"
	}
	return strconv.Quote(s)
}

// takeF32 removes tensor name from ts and decodes it as float32.
func takeF32(path string, ts map[string]*format.Tensor, name string) (*tensor.Tensor, error) {
	t, ok := ts[name]
	if !ok {
		return nil, fmt.Errorf("%s: missing tensor %q listed in %s", path, name, StateFile)
	}
	delete(ts, name)
	if t.DType != format.F32 {
		return nil, fmt.Errorf("%s: tensor %q is %s, want F32", path, name, t.DType)
	}
	v, err := t.Float32()
	if err != nil {
		return nil, fmt.Errorf("%s: %w", path, err)
	}
	return tensor.FromData(v, t.Shape...), nil
}

// numel is the element count of shape.
// noneLeft reports tensors in a file that trainer_state.json does not list.
func noneLeft(path string, ts map[string]*format.Tensor) error {
	if len(ts) == 0 {
		return nil
	}
	var names []string
	for n := range ts {
		names = append(names, n)
	}
	sort.Strings(names)
	return fmt.Errorf("%s: tensors not listed in %s: %q", path, StateFile, names)
}

// CheckpointPrefix starts the name of every checkpoint directory that
// SaveRotating writes: checkpoint-00000100 for step 100.
const CheckpointPrefix = "checkpoint-"

// CheckpointDir is the directory SaveRotating uses for step.
func CheckpointDir(outputDir string, step int) string {
	return filepath.Join(outputDir, fmt.Sprintf("%s%08d", CheckpointPrefix, step))
}

// SaveRotating saves ck as CheckpointDir(outputDir, ck.Step) and then
// deletes the oldest complete checkpoints so that at most keep remain
// (keep ≤ 0 keeps all). It returns the new checkpoint's directory.
func SaveRotating(outputDir string, ck *Checkpoint, keep int) (string, error) {
	if ck == nil {
		return "", fmt.Errorf("save checkpoint in %s: no checkpoint", outputDir)
	}
	dir := CheckpointDir(outputDir, ck.Step)
	if err := os.MkdirAll(outputDir, 0o755); err != nil {
		return "", fmt.Errorf("save checkpoint %s: %w", dir, err)
	}
	if err := SaveCheckpoint(dir, ck); err != nil {
		return "", err
	}
	if keep <= 0 {
		return dir, nil
	}
	all, err := ListCheckpoints(outputDir)
	if err != nil {
		return dir, err
	}
	for len(all) > keep {
		if all[0].Dir != dir { // never delete what was just written
			if err := os.RemoveAll(all[0].Dir); err != nil {
				return dir, fmt.Errorf("remove old checkpoint: %w", err)
			}
		}
		all = all[1:]
	}
	return dir, nil
}

// CheckpointInfo names a checkpoint directory and its step.
type CheckpointInfo struct {
	Dir  string
	Step int
}

// ListCheckpoints returns the complete checkpoints in outputDir (directories
// named checkpoint-<step> holding trainer_state.json, with or without zero
// padding), by increasing step. Unfinished saves (*.tmp) are ignored. A
// missing outputDir has none.
func ListCheckpoints(outputDir string) ([]CheckpointInfo, error) {
	entries, err := os.ReadDir(outputDir)
	if errors.Is(err, os.ErrNotExist) {
		return nil, nil
	}
	if err != nil {
		return nil, fmt.Errorf("list checkpoints: %w", err)
	}
	var out []CheckpointInfo
	for _, e := range entries {
		digits, ok := strings.CutPrefix(e.Name(), CheckpointPrefix)
		if !ok || !e.IsDir() || digits == "" || strings.Trim(digits, "0123456789") != "" {
			continue
		}
		step, err := strconv.Atoi(digits)
		if err != nil {
			continue
		}
		dir := filepath.Join(outputDir, e.Name())
		if fi, err := os.Stat(filepath.Join(dir, StateFile)); err != nil || !fi.Mode().IsRegular() {
			continue
		}
		out = append(out, CheckpointInfo{dir, step})
	}
	sort.Slice(out, func(i, j int) bool {
		if out[i].Step != out[j].Step {
			return out[i].Step < out[j].Step
		}
		return out[i].Dir < out[j].Dir
	})
	return out, nil
}

// LatestCheckpoint returns the directory of the complete checkpoint with the
// highest step in outputDir; ok is false when there is none.
func LatestCheckpoint(outputDir string) (dir string, ok bool, err error) {
	all, err := ListCheckpoints(outputDir)
	if err != nil || len(all) == 0 {
		return "", false, err
	}
	return all[len(all)-1].Dir, true, nil
}

// PeekCheckpoint reads only a checkpoint's trainer_state.json: its step and
// run fingerprint, so that a resume can be refused (another run, or one
// already finished) before the model and data are loaded.
func PeekCheckpoint(dir string) (step int, fingerprint string, err error) {
	statePath := filepath.Join(dir, StateFile)
	data, err := safefile.ReadFile(statePath)
	if err != nil {
		return 0, "", fmt.Errorf("load checkpoint: %w", err)
	}
	st, err := parseState(statePath, data)
	if err != nil {
		return 0, "", fmt.Errorf("load checkpoint: %w", err)
	}
	return st.Step, st.Fingerprint, nil
}
