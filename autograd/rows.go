package autograd

import (
	"fmt"

	"github.com/gopeft/gopeft/tensor"
	"github.com/gopeft/gopeft/tensor/fused"
	"github.com/gopeft/gopeft/tensor/kernels"
)

// copyRow copies row i of t (float32 or bf16) into dst.
func copyRow(dst []float32, t *tensor.Tensor, i int) {
	c := t.Cols()
	if t.Half != nil {
		kernels.BF16ToF32(dst, t.Half[i*c:(i+1)*c])
		return
	}
	copy(dst, t.Data[i*c:(i+1)*c])
}

// gatherRows returns the rows idx of table (seen as a matrix) as a new
// [len(idx), cols] tensor, with a backward that scatter-adds in index order
// (deterministic when an index repeats).
func (tp *Tape) gatherRows(op string, table *Var, idx []int) *Var {
	n, c := table.Value.Rows(), table.Value.Cols()
	for i, r := range idx {
		if r < 0 || r >= n {
			panic(fmt.Sprintf("autograd.%s: index %d at position %d outside [0,%d) for shape %v", op, r, i, n, table.Value.Shape))
		}
	}
	idx = append([]int(nil), idx...)
	out := tensor.New(len(idx), c)
	for i, r := range idx {
		copyRow(out.Data[i*c:(i+1)*c], table.Value, r)
	}
	return tp.Result(out, func(o *Var) {
		g, dt := o.Grad.Data, table.GradBuf().Data
		for i, r := range idx {
			fused.Axpy(dt[r*c:(r+1)*c], 1, g[i*c:(i+1)*c], c)
		}
	}, table)
}

// Embedding returns rows ids of table [V, d] (float32, or bf16 when frozen)
// as [len(ids), d]. Its backward scatter-adds into the table's gradient in
// id order.
func (tp *Tape) Embedding(table *Var, ids []int) *Var {
	if len(table.Value.Shape) != 2 {
		panicShapes("Embedding", table.Value.Shape, []int{len(ids)})
	}
	return tp.gatherRows("Embedding", table, ids)
}

// GatherRows returns rows of x seen as a matrix [rows, cols] (for example
// each sequence's last real token) as [len(rows), cols]; the backward
// scatter-adds.
func (tp *Tape) GatherRows(x *Var, rows []int) *Var { return tp.gatherRows("GatherRows", x, rows) }

// ConcatSeq joins two batches of sequences along the sequence: for each of
// batch sequences, a's rows then b's. b is [batch·Tb, d]; a is [batch·Ta, d],
// or with broadcastA [Ta, d] shared by every sequence (prompt tuning), whose
// gradient is then summed over sequences in order. The result is
// [batch·(Ta+Tb), d].
func (tp *Tape) ConcatSeq(a, b *Var, batch int, broadcastA bool) *Var {
	d := b.Value.Cols()
	ar, br := a.Value.Rows(), b.Value.Rows()
	if batch <= 0 || a.Value.Cols() != d || br%batch != 0 || (!broadcastA && ar%batch != 0) {
		panicShapes(fmt.Sprintf("ConcatSeq(batch %d)", batch), a.Value.Shape, b.Value.Shape)
	}
	ta, tb := ar, br/batch
	if !broadcastA {
		ta = ar / batch
	}
	out := tensor.New(batch*(ta+tb), d)
	av, bv := a.Value.F32(), b.Value.F32()
	// aOff is where sequence s's rows of a start.
	aOff := func(s int) int {
		if broadcastA {
			return 0
		}
		return s * ta * d
	}
	for s := 0; s < batch; s++ {
		o := out.Data[s*(ta+tb)*d:]
		copy(o[:ta*d], av[aOff(s):aOff(s)+ta*d])
		copy(o[ta*d:(ta+tb)*d], bv[s*tb*d:(s+1)*tb*d])
	}
	return tp.Result(out, func(o *Var) {
		for s := 0; s < batch; s++ {
			g := o.Grad.Data[s*(ta+tb)*d:]
			if a.requiresGrad {
				fused.Axpy(a.GradBuf().Data[aOff(s):], 1, g, ta*d)
			}
			if b.requiresGrad {
				fused.Axpy(b.GradBuf().Data[s*tb*d:], 1, g[ta*d:], tb*d)
			}
		}
	}, a, b)
}

// ScatterRows returns x (seen as a matrix [rows, cols]) with its rows idx
// replaced by the rows of sub [len(idx), cols], in order; idx must not
// repeat. It is how a change computed on some sequences of a batch (those
// of one adapter) goes back into the batch: x's gradient is the output's
// with those rows zero, sub's is those rows.
func (tp *Tape) ScatterRows(x, sub *Var, idx []int) *Var {
	n, c := x.Value.Rows(), x.Value.Cols()
	if sub.Value.Cols() != c || sub.Value.Rows() != len(idx) {
		panicShapes(fmt.Sprintf("ScatterRows(%d rows)", len(idx)), x.Value.Shape, sub.Value.Shape)
	}
	seen := make([]bool, n)
	for i, r := range idx {
		if r < 0 || r >= n || seen[r] {
			panic(fmt.Sprintf("autograd.ScatterRows: index %d at position %d repeats or lies outside [0,%d)", r, i, n))
		}
		seen[r] = true
	}
	idx = append([]int(nil), idx...)
	out := tensor.New(x.Value.Shape...)
	copy(out.Data, x.Value.F32())
	sv := sub.Value.F32()
	for i, r := range idx {
		copy(out.Data[r*c:(r+1)*c], sv[i*c:(i+1)*c])
	}
	return tp.Result(out, func(o *Var) {
		g := o.Grad.Data
		if sub.requiresGrad {
			ds := sub.GradBuf().Data
			for i, r := range idx {
				fused.Axpy(ds[i*c:(i+1)*c], 1, g[r*c:(r+1)*c], c)
			}
		}
		if x.requiresGrad {
			dx := x.GradBuf().Data
			for r := 0; r < n; r++ {
				if !seen[r] {
					fused.Axpy(dx[r*c:(r+1)*c], 1, g[r*c:(r+1)*c], c)
				}
			}
		}
	}, x, sub)
}
