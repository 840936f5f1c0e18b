// Package train fine-tunes a peft.Model: Run.Execute (loop.go) is the
// training loop, with gradient accumulation, clipping, evaluation,
// checkpoints that survive interruption (a SIGKILLed run resumes bitwise),
// a JSONL metrics log, a loss-curve plot and a progress line; the pieces it
// is built from (optimizers, schedules, clipping, checkpoints) are exported
// for other loops.
//
// One optimizer update of Run.Execute, with n micro-batches accumulated:
//
//	for micro := 0; micro < n; micro++ {
//		pass := &nn.Pass{Tape: tape, Training: true, Seed: MicroBatchSeed(seed, step, micro)}
//		loss := model.Loss(pass, batch, labels)     // + the method's peft.LossTerm
//		tape.Backward(loss / n)                     // gradients add up across calls
//	}
//	norm := ClipGradNorm(params, maxNorm)           // stop on a non-finite loss or norm
//	method.BeforeUpdate(step)                       // peft.GradHook: gradient masks
//	opt.Step(schedule.At(step))                     // per-group rates: peft.ParamGrouper
//	opt.ZeroGrad()
//	method.AfterUpdate(step)                        // peft.StepHook
//	optimizer.MoveEntries(...)                      // peft.EntryMover: moved entries take their state along
//	checkpoint: parameters, optimizer, data position, peft.Stateful's state
//
// Each micro-batch's pass has its own seed, so dropout masks differ between
// micro-batches and repeat on resume. The method hooks are optional
// interfaces of the active adapter's method (see package peft).
//
// Conventions follow PyTorch and Hugging Face transformers so that runs can
// be compared number for number: AdamW is torch.optim.AdamW, the schedules
// are transformers' get_*_schedule_with_warmup, clipping is
// torch.nn.utils.clip_grad_norm_. Every operation is deterministic: results
// do not depend on the number of threads.
package train
