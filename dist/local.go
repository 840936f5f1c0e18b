package dist

import (
	"fmt"
	"sync"
)

// NewLocal returns a group of n ranks inside one process, for tests and
// for trying data-parallel code without MPI: rank i is the i-th element,
// each to be used by its own goroutine. Reductions add the ranks' values
// in rank order, so results are reproducible bit for bit; Abort makes
// every rank's pending and later collectives fail instead of ending the
// process.
func NewLocal(n int) []Communicator {
	g := &localGroup{n: n, slots: make([]any, n)}
	g.cond = sync.NewCond(&g.mu)
	cs := make([]Communicator, n)
	for i := range cs {
		cs[i] = &local{g: g, rank: i}
	}
	return cs
}

type localGroup struct {
	n       int
	mu      sync.Mutex
	cond    *sync.Cond
	gen     int   // collectives completed
	arrived int   // ranks waiting in the current one
	slots   []any // their inputs
	result  any   // the last completed collective's result
	err     error // set by Abort: the group is dead
}

type local struct {
	g    *localGroup
	rank int
}

// run is one collective: every rank deposits in, the last to arrive
// computes combine over all inputs (in rank order), and every rank gets
// the result. A later collective cannot complete before every rank has
// read this one's result (it needs every rank), so result stays valid.
func (g *localGroup) run(rank int, in any, combine func([]any) any) (any, error) {
	g.mu.Lock()
	defer g.mu.Unlock()
	if g.err != nil {
		return nil, g.err
	}
	gen := g.gen
	g.slots[rank] = in
	g.arrived++
	if g.arrived == g.n {
		g.result = combine(g.slots)
		g.slots = make([]any, g.n)
		g.arrived = 0
		g.gen++
		g.cond.Broadcast()
		return g.result, nil
	}
	for g.gen == gen && g.err == nil {
		g.cond.Wait()
	}
	if g.gen == gen {
		return nil, g.err
	}
	return g.result, nil
}

func (c *local) Rank() int         { return c.rank }
func (c *local) Size() int         { return c.g.n }
func (c *local) Transport() string { return "goroutines" }

func (c *local) SumFloat32(buf []float32) error {
	res, err := c.g.run(c.rank, buf, func(in []any) any {
		sum := append([]float32(nil), in[0].([]float32)...)
		for _, x := range in[1:] {
			x := x.([]float32)
			if len(x) != len(sum) {
				return fmt.Errorf("dist: ranks sum buffers of %d and %d elements", len(sum), len(x))
			}
			for i, v := range x {
				sum[i] += v
			}
		}
		return sum
	})
	if err != nil {
		return err
	}
	if e, ok := res.(error); ok {
		return e
	}
	copy(buf, res.([]float32))
	return nil
}

func (c *local) SumFloat64(buf []float64) error {
	res, err := c.g.run(c.rank, buf, func(in []any) any {
		sum := append([]float64(nil), in[0].([]float64)...)
		for _, x := range in[1:] {
			x := x.([]float64)
			if len(x) != len(sum) {
				return fmt.Errorf("dist: ranks sum buffers of %d and %d elements", len(sum), len(x))
			}
			for i, v := range x {
				sum[i] += v
			}
		}
		return sum
	})
	if err != nil {
		return err
	}
	if e, ok := res.(error); ok {
		return e
	}
	copy(buf, res.([]float64))
	return nil
}

func (c *local) Broadcast(root int, b []byte) ([]byte, error) {
	res, err := c.g.run(c.rank, b, func(in []any) any { return append([]byte(nil), in[root].([]byte)...) })
	if err != nil {
		return nil, err
	}
	return append([]byte(nil), res.([]byte)...), nil
}

func (c *local) Gather(b []byte) ([][]byte, error) {
	res, err := c.g.run(c.rank, append([]byte(nil), b...), func(in []any) any {
		out := make([][]byte, len(in))
		for i, x := range in {
			out[i] = x.([]byte)
		}
		return out
	})
	if err != nil {
		return nil, err
	}
	all := res.([][]byte)
	out := make([][]byte, len(all))
	for i, x := range all {
		out[i] = append([]byte(nil), x...)
	}
	return out, nil
}

func (c *local) Abort(code int) {
	c.g.mu.Lock()
	defer c.g.mu.Unlock()
	if c.g.err == nil {
		c.g.err = fmt.Errorf("dist: rank %d ended the job (code %d)", c.rank, code)
	}
	c.g.cond.Broadcast()
}

func (c *local) Close() error { return nil }
