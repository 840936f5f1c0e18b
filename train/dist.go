package train

import (
	"context"
	"crypto/sha256"
	"encoding/binary"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"math"
	"os"
	"path/filepath"

	"github.com/gopeft/gopeft/autograd"
	"github.com/gopeft/gopeft/data"
	"github.com/gopeft/gopeft/dist"
	"github.com/gopeft/gopeft/nn"
)

// Data-parallel training (Run.Comm with more than one rank).
//
// Every rank holds the whole model and walks the same global data order;
// of each update's BatchSize×GradAccum sequences it computes its share:
//
//   - when the ranks divide BatchSize, BatchSize/N sequences of every
//     micro-batch (GradAccum passes of BatchSize/N sequences);
//   - otherwise, when they divide BatchSize×GradAccum (gradient
//     accumulation makes up the difference), the rank's block of
//     BatchSize×GradAccum/N consecutive sequences, in passes cut at the
//     micro-batch boundaries;
//   - otherwise Execute refuses to start.
//
// A rank scales its part of a micro-batch's mean loss by its share of the
// micro-batch's targets, so the gradients summed over the ranks are those
// of one process running the whole batch, up to float32 rounding: the
// weight gradient of a matrix is a sum over the batch's rows, and each
// rank sums its own rows before the ranks' partial sums are added. The
// gradients of the trainable parameters (and nothing else: a frozen base
// never moves) are summed in buckets (dist.Buckets) after the last
// micro-batch's backward; the tape has no per-parameter completion hook to
// start them earlier. Every rank then clips, runs the method's hooks and
// steps the optimizer on the same sums, so the parameters stay identical
// (checked at every checkpoint). The pass seed of a micro-batch is the
// same on every rank (so a draw made once per pass agrees); dropout masks
// are indexed by position in the rank's own batch, so with dropout the
// ranks draw other masks than one process would.
//
// Rank 0 alone writes: the output directory, checkpoints, metrics.jsonl,
// loss.png and the progress line. On --resume rank 0 reads the latest
// checkpoint and sends it to the other ranks, which need not see the
// output directory. Evaluation is sharded by batch and its sums reduced.

// dataParallel is a Run's view of its communicator; with one rank every
// method does what Execute did before it had one.
type dataParallel struct {
	comm       dist.Communicator
	rank, size int
	batch      int // BatchSize
	perUpdate  int // BatchSize × GradAccum
	buckets    *dist.Buckets
	params     nn.Params
	classify   bool
	stop       bool // a rank's context ended: every rank stops after this update
}

// CheckRanks is what Execute checks first when Comm has several ranks:
// that they can share the global batch, and that they run the same
// recipe on the same data. It is a collective (every rank calls it) and
// gives every rank the same answer; call it before writing anything, so
// that a run that cannot start leaves nothing behind.
func (r *Run) CheckRanks() error {
	c := dist.Or(r.Comm)
	if c.Size() == 1 {
		return nil
	}
	cfg := r.Config
	if perUpdate := cfg.BatchSize * cfg.GradAccum; cfg.BatchSize%c.Size() != 0 && perUpdate%c.Size() != 0 {
		return dist.Shared(fmt.Errorf("train: %d ranks cannot share an update of batch_size %d × grad_accum %d = %d sequences: make the batch size, or the batch size times grad_accum, a multiple of %d",
			c.Size(), cfg.BatchSize, cfg.GradAccum, perUpdate, c.Size()))
	}
	return dist.Shared(dist.Same(c, "recipe and data", r.digest(cfg)))
}

// newDataParallel checks the ranks (CheckRanks) and prepares the
// gradients' buckets.
func (r *Run) newDataParallel(cfg Config, params nn.Params) (*dataParallel, error) {
	c := dist.Or(r.Comm)
	d := &dataParallel{comm: c, rank: c.Rank(), size: c.Size(), batch: cfg.BatchSize, perUpdate: cfg.BatchSize * cfg.GradAccum,
		params: params, classify: r.Classify}
	if d.size == 1 {
		return d, nil
	}
	if err := r.CheckRanks(); err != nil {
		return nil, err
	}
	vars := make([]*autograd.Var, len(params))
	for i, p := range params {
		vars[i] = p.Var
	}
	d.buckets = dist.NewBuckets(vars, 0)
	return d, nil
}

// digest identifies what must be the same on every rank: the run's
// fingerprint, its settings, and every token, label and class of its data.
func (r *Run) digest(cfg Config) []byte {
	h := sha256.New()
	cj, _ := json.Marshal(cfg)
	fmt.Fprintf(h, "%q %s %v\n", r.Fingerprint, cj, r.Classify)
	var buf [8]byte
	put := func(v int) {
		binary.LittleEndian.PutUint64(buf[:], uint64(v))
		h.Write(buf[:])
	}
	for _, set := range [][]data.Example{r.Train, r.Eval} {
		put(len(set))
		for _, e := range set {
			put(len(e.IDs))
			for _, v := range e.IDs {
				put(v)
			}
			put(len(e.Labels))
			for _, v := range e.Labels {
				put(v)
			}
			put(e.Class)
		}
	}
	return h.Sum(nil)
}

// writes reports whether this rank writes the run's files (rank 0).
func (d *dataParallel) writes() bool { return d.rank == 0 }

// shard returns this rank's part of micro-batch micro (the micro-batch
// as one process would run it); it may be empty.
func (d *dataParallel) shard(batch []data.Example, micro int) []data.Example {
	if d.size == 1 {
		return batch
	}
	if d.batch%d.size == 0 {
		per := d.batch / d.size
		return batch[d.rank*per : (d.rank+1)*per]
	}
	per := d.perUpdate / d.size
	lo, hi := d.rank*per-micro*d.batch, (d.rank+1)*per-micro*d.batch
	lo, hi = max(lo, 0), min(hi, len(batch))
	if lo >= hi {
		return nil
	}
	return batch[lo:hi]
}

// share is the weight of this rank's mean loss over its n targets of
// micro-batch batch, and the micro-batch's targets over all ranks.
func (d *dataParallel) share(batch []data.Example, n int) (w float64, all int) {
	if d.size == 1 {
		return 1, n
	}
	all = countTargets(batch, d.classify)
	if all == 0 {
		return 0, 0
	}
	return float64(n) / float64(all), all
}

// countTargets is the number of targets batchLoss averages over for the
// whole batch: sequences for a classifier, predicted labels otherwise.
func countTargets(batch []data.Example, classify bool) int {
	if classify {
		return len(batch)
	}
	n := 0
	for _, e := range batch {
		for t := 1; t < min(len(e.Labels), len(e.IDs)); t++ {
			if e.Labels[t] != autograd.IgnoreIndex {
				n++
			}
		}
	}
	return n
}

// sumGrads sums the update's gradients, loss and tokens over the ranks,
// and whether any rank's ctx ended (then every rank stops after this
// update).
func (d *dataParallel) sumGrads(ctx context.Context, lossSum *float64, tokens *int) error {
	if d.size == 1 {
		return nil
	}
	stop := 0.0
	if ctx.Err() != nil {
		stop = 1
	}
	extra := []float64{*lossSum, float64(*tokens), stop}
	if err := d.buckets.Sum(d.comm, extra); err != nil {
		return err
	}
	*lossSum, *tokens, d.stop = extra[0], int(extra[1]), extra[2] > 0
	return nil
}

// errPeerStopped ends the ranks whose own context is live when another
// rank's ended.
var errPeerStopped = errors.New("train: another rank was interrupted; every rank stopped")

// stopped is the error to stop with before an update: ctx's on one
// process; with several ranks, only once every rank has learnt that one
// of them is stopping (so they all stop at the same update).
func (d *dataParallel) stopped(ctx context.Context) error {
	if d.size == 1 || !d.stop {
		if d.size == 1 {
			return ctx.Err()
		}
		return nil
	}
	if err := ctx.Err(); err != nil {
		return dist.Shared(err)
	}
	return dist.Shared(errPeerStopped)
}

// sumEval sums the evaluation's partial sums over the ranks.
func (d *dataParallel) sumEval(total *float64, count, correct *int) error {
	if d == nil || d.size == 1 { // nil: evaluated outside Execute, alone
		return nil
	}
	v := []float64{*total, float64(*count), float64(*correct)}
	if err := d.comm.SumFloat64(v); err != nil {
		return fmt.Errorf("train: summing the evaluation over the ranks: %w", err)
	}
	*total, *count, *correct = v[0], int(v[1]), int(v[2])
	return nil
}

// evalBatch reports whether this rank evaluates the eval set's i-th batch.
func (d *dataParallel) evalBatch(i int) bool { return d == nil || i%d.size == d.rank }

// checkSame fails, on every rank, when the ranks' trainable parameters
// differ: they must, after identical updates from identical sums.
func (d *dataParallel) checkSame(step int) error {
	if d.size == 1 {
		return nil
	}
	h := sha256.New()
	var buf [4]byte
	for _, p := range d.params {
		for _, v := range p.Var.Value.Data {
			binary.LittleEndian.PutUint32(buf[:], math.Float32bits(v))
			h.Write(buf[:])
		}
	}
	if err := dist.Same(d.comm, fmt.Sprintf("set of parameters after step %d", step), h.Sum(nil)); err != nil {
		return dist.Shared(fmt.Errorf("train: the ranks diverged (their MPI library gave them different sums?): %w", err))
	}
	return nil
}

// createLog opens the metrics log: the file on rank 0, nothing elsewhere.
func (d *dataParallel) createLog(path string) (*MetricsLog, error) {
	if !d.writes() {
		return NewMetricsLog(io.Discard), nil
	}
	return CreateMetricsLog(path)
}

// resumeLog reopens the metrics log after step on rank 0.
func (d *dataParallel) resumeLog(path string, step int) (*MetricsLog, error) {
	if !d.writes() {
		return NewMetricsLog(io.Discard), nil
	}
	return ResumeMetricsLog(path, step)
}

// progress is the progress line's writer: rank 0's.
func (d *dataParallel) progress(w io.Writer) io.Writer {
	if !d.writes() {
		return io.Discard
	}
	return orDiscard(w)
}

// latestCheckpoint loads the latest checkpoint in dir: rank 0 reads it
// and sends its files to the other ranks, which load them from a
// temporary directory (so they need not see dir). Every rank gets the
// same checkpoint or the same error.
func (d *dataParallel) latestCheckpoint(outputDir string) (*Checkpoint, string, error) {
	load := func() (string, error) {
		dir, ok, err := LatestCheckpoint(outputDir)
		if err != nil {
			return "", err
		}
		if !ok {
			return "", fmt.Errorf("train: --resume given but %s holds no checkpoint", outputDir)
		}
		return dir, nil
	}
	if d.size == 1 {
		dir, err := load()
		if err != nil {
			return nil, "", err
		}
		ck, err := LoadCheckpoint(dir)
		return ck, dir, err
	}
	var msg []byte
	var dir string
	if d.writes() {
		var err error
		if dir, err = load(); err == nil {
			msg, err = packCheckpoint(dir)
		}
		if err != nil {
			msg = append([]byte{1}, err.Error()...)
		}
	}
	msg, err := d.comm.Broadcast(0, msg)
	if err != nil {
		return nil, "", fmt.Errorf("train: sending the checkpoint to every rank: %w", err)
	}
	if len(msg) == 0 || msg[0] == 1 {
		if len(msg) == 0 {
			return nil, "", dist.Shared(errors.New("train: rank 0 sent an empty checkpoint"))
		}
		return nil, "", dist.Shared(fmt.Errorf("rank 0: %s", msg[1:]))
	}
	if d.writes() {
		ck, err := LoadCheckpoint(dir)
		return ck, dir, dist.Agree(d.comm, err)
	}
	ck, err := unpackCheckpoint(msg)
	return ck, "rank 0's checkpoint", dist.Agree(d.comm, err)
}

// packCheckpoint is a checkpoint directory's files as one message: a 0
// byte, then for each file its name and its bytes, each after its length.
func packCheckpoint(dir string) ([]byte, error) {
	msg := []byte{0}
	for _, name := range []string{StateFile, ParamsFile, OptimizerFile, MethodFile} {
		b, err := os.ReadFile(filepath.Join(dir, name))
		if errors.Is(err, os.ErrNotExist) && name != StateFile {
			continue
		}
		if err != nil {
			return nil, fmt.Errorf("load checkpoint: %w", err)
		}
		msg = binary.LittleEndian.AppendUint64(msg, uint64(len(name)))
		msg = append(msg, name...)
		msg = binary.LittleEndian.AppendUint64(msg, uint64(len(b)))
		msg = append(msg, b...)
	}
	return msg, nil
}

// unpackCheckpoint writes packCheckpoint's files into a temporary
// directory and loads them (checksums included) from there.
func unpackCheckpoint(msg []byte) (*Checkpoint, error) {
	tmp, err := os.MkdirTemp("", "gopeft-checkpoint-")
	if err != nil {
		return nil, err
	}
	defer os.RemoveAll(tmp)
	rest := msg[1:]
	next := func() ([]byte, error) {
		if len(rest) < 8 || binary.LittleEndian.Uint64(rest) > uint64(len(rest)-8) {
			return nil, errors.New("train: the checkpoint rank 0 sent is cut short")
		}
		n := binary.LittleEndian.Uint64(rest)
		b := rest[8 : 8+n]
		rest = rest[8+n:]
		return b, nil
	}
	for len(rest) > 0 {
		name, err := next()
		if err != nil {
			return nil, err
		}
		b, err := next()
		if err != nil {
			return nil, err
		}
		if filepath.Base(string(name)) != string(name) {
			return nil, fmt.Errorf("train: the checkpoint rank 0 sent names a file %q", name)
		}
		if err := os.WriteFile(filepath.Join(tmp, string(name)), b, 0o600); err != nil {
			return nil, err
		}
	}
	return LoadCheckpoint(tmp)
}
