package main

import (
	"errors"
	"fmt"
	"os"
	"os/signal"
	"path/filepath"
	"syscall"

	"github.com/gopeft/gopeft/dist"
	"github.com/gopeft/gopeft/train"
)

// endRanks runs the training (run) once every rank has read its flags
// (setup is the ranks' agreed outcome) and ends the ranks together. An
// error every rank shares (dist.IsShared: bad input, the run's own checks)
// ends each rank cleanly with the message; an error of this rank alone
// may leave the others waiting for it in a collective, so this rank says
// what happened and aborts the job (mpirun then stops the others, whose
// onTermination says why).
func endRanks(c dist.Communicator, setup error, run func() error) error {
	err := setup
	if err == nil {
		err = run()
	}
	if c.Size() == 1 || err == nil || dist.IsShared(err) {
		if err != nil && c.Size() > 1 {
			if !errors.As(err, new(*dist.ErrRank)) {
				err = fmt.Errorf("rank %d of %d: %w", c.Rank(), c.Size(), err)
			}
			// The first rank to exit non-zero makes mpirun kill the
			// others at once, possibly before they have said why: every
			// rank writes its message, then they meet, then they exit.
			fmt.Fprintln(os.Stderr, "gopeft:", err)
			c.Gather(nil)
			err = printed{err}
		}
		if cerr := c.Close(); err == nil {
			err = cerr
		}
		return err
	}
	fmt.Fprintf(os.Stderr, "gopeft: rank %d of %d: %v\ngopeft: rank %d of %d: ending every rank of the job\n", c.Rank(), c.Size(), err, c.Rank(), c.Size())
	c.Abort(1)
	return err
}

// onTermination makes a rank of a multi-rank job say why it stops when
// mpirun ends the job with SIGTERM (another rank failed or was killed, or
// the job was interrupted): the job cannot go on without every rank, and
// resuming is the way forward. It returns a function that removes the
// handler.
func onTermination(c dist.Communicator, output string) func() {
	if c.Size() == 1 {
		return func() {}
	}
	sig := make(chan os.Signal, 1)
	signal.Notify(sig, syscall.SIGTERM)
	done := make(chan struct{})
	go func() {
		select {
		case <-sig:
		case <-done:
			return
		}
		ckDir := filepath.Join(output, "checkpoints")
		where := "the latest checkpoint in " + ckDir + " (on rank 0's machine)"
		if c.Rank() == 0 {
			if dir, ok, err := train.LatestCheckpoint(ckDir); err == nil && ok {
				where = "its latest checkpoint, " + dir
			} else {
				where = "nothing: no checkpoint was saved yet (start again without --resume)"
			}
		}
		fmt.Fprintf(os.Stderr, "gopeft: rank %d of %d: stopped: mpirun is ending the job (a rank failed or was killed — mpirun's message names it — or the job was interrupted); "+
			"the same command with --resume continues from %s\n", c.Rank(), c.Size(), where)
		os.Exit(143)
	}()
	return func() {
		signal.Stop(sig)
		close(done)
	}
}

// printed is an error whose message is already on stderr (a rank of a
// multi-rank job writes its own before the ranks exit together); main
// only sets the exit status.
type printed struct{ error }

func (p printed) Unwrap() error { return p.error }

// report writes err to stderr unless a rank has already done so.
func report(err error) {
	if !errors.As(err, new(printed)) {
		fmt.Fprintln(os.Stderr, "gopeft:", err)
	}
}
