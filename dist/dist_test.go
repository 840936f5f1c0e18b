package dist

import (
	"errors"
	"strings"
	"sync"
	"testing"

	"github.com/gopeft/gopeft/autograd"
	"github.com/gopeft/gopeft/tensor"
)

// onRanks runs f on every rank of an in-process group and waits.
func onRanks(n int, f func(c Communicator)) {
	var wg sync.WaitGroup
	for _, c := range NewLocal(n) {
		wg.Add(1)
		go func() {
			defer wg.Done()
			f(c)
		}()
	}
	wg.Wait()
}

// Gradients in buckets much smaller than a tensor (so tensors span
// buckets) come back as their sum over the ranks, in rank order, and a
// parameter without a gradient on every rank stays without one.
func TestBucketsSum(t *testing.T) {
	const ranks = 3
	sizes := []int{5, 1, 7, 3}
	var mu sync.Mutex
	results := map[int][][]float32{}
	nilGrad := map[int]bool{}
	onRanks(ranks, func(c Communicator) {
		r := c.Rank()
		var vars []*autograd.Var
		for i, n := range sizes {
			v := autograd.Param("p", tensor.New(n), true)
			if i != 3 && !(i == 1 && r != 2) { // p1 has a gradient on rank 2 only; p3 on none
				v.Grad = tensor.New(n)
				for j := range v.Grad.Data {
					v.Grad.Data[j] = float32(r*100 + i*10 + j)
				}
			}
			vars = append(vars, v)
		}
		b := NewBuckets(vars, 4)
		if b.Count() != 4 || b.Bytes() != 64 {
			t.Errorf("%d buckets, %d bytes", b.Count(), b.Bytes())
		}
		extra := []float64{float64(r), 1}
		if err := b.Sum(c, extra); err != nil {
			t.Error(err)
			return
		}
		if extra[0] != 3 || extra[1] != 3 {
			t.Errorf("rank %d: extra = %v", r, extra)
		}
		mu.Lock()
		defer mu.Unlock()
		for i, v := range vars {
			if v.Grad == nil {
				nilGrad[i] = true
				continue
			}
			results[r] = append(results[r], append([]float32(nil), v.Grad.Data...))
		}
	})
	if len(nilGrad) != 1 || !nilGrad[3] {
		t.Errorf("parameters left without a gradient: %v (want only 3)", nilGrad)
	}
	for r := 0; r < ranks; r++ {
		for i, g := range results[r] {
			for j, v := range g {
				want := float32(0)
				for q := 0; q < ranks; q++ {
					if i != 1 || q == 2 {
						want += float32(q*100 + i*10 + j)
					}
				}
				if v != want {
					t.Errorf("rank %d param %d [%d] = %v, want %v", r, i, j, v, want)
				}
			}
		}
	}
}

func TestAgreeAndSame(t *testing.T) {
	onRanks(3, func(c Communicator) {
		var mine error
		if c.Rank() > 0 {
			mine = errors.New("cannot read " + string(rune('a'+c.Rank())))
		}
		err := Agree(c, mine)
		if err == nil || err.Error() != "rank 1 of 3: cannot read b; rank 2 of 3: cannot read c" || !IsShared(err) {
			t.Errorf("rank %d: Agree = %v", c.Rank(), err)
		}
		if err := Agree(c, nil); err != nil {
			t.Errorf("rank %d: Agree(nil) = %v", c.Rank(), err)
		}
		if err := Same(c, "data", []byte{byte(c.Rank() / 2)}); err == nil || !strings.Contains(err.Error(), "rank 2 has a different data") {
			t.Errorf("rank %d: Same = %v", c.Rank(), err)
		}
		if err := Same(c, "data", []byte("x")); err != nil {
			t.Errorf("rank %d: Same = %v", c.Rank(), err)
		}
		b, err := c.Broadcast(2, []byte{byte(c.Rank())})
		if err != nil || len(b) != 1 || b[0] != 2 {
			t.Errorf("rank %d: Broadcast = %v, %v", c.Rank(), b, err)
		}
	})
	single := errors.New("x")
	if Agree(nil, single) != single || Same(nil, "data", nil) != nil || Describe(nil) != "" {
		t.Error("a process alone: Agree must return its error, Same nil, Describe nothing")
	}
}

// A rank that aborts ends the others' collectives with an error naming it.
func TestLocalAbort(t *testing.T) {
	onRanks(2, func(c Communicator) {
		if c.Rank() == 1 {
			c.Abort(3)
			return
		}
		err := c.SumFloat32(make([]float32, 2))
		if err == nil || !strings.Contains(err.Error(), "rank 1 ended the job (code 3)") {
			t.Errorf("rank 0: %v", err)
		}
	})
}
