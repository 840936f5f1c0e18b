// Package train holds the reusable pieces of a training loop: optimizers
// (AdamW, SGD), learning-rate schedules with warm-up, gradient clipping and
// finiteness checks, checkpoints that survive interruption, a JSONL metrics
// log, a loss-curve plot and a progress line.
//
// The loop itself (forward, backward, accumulation, evaluation) lives with
// the caller. A typical step, with n micro-batches accumulated:
//
//	for micro := 0; micro < n; micro++ {
//		loss := model.Loss(tape, batch)   // mean over the micro-batch's tokens
//		tape.Backward(loss)               // gradients add up across calls
//	}
//	train.ScaleGrads(params, 1/float32(n)) // average, as HF divides the loss by n
//	norm := train.ClipGradNorm(params, 1.0)
//	if !train.IsFinite(norm) { opt.ZeroGrad(); continue } // skip a poisoned step
//	opt.Step(train.LR("cosine", 2e-4, step, warmup, total))
//	opt.ZeroGrad()
//
// Conventions follow PyTorch and Hugging Face transformers so that runs can
// be compared number for number: AdamW is torch.optim.AdamW, the schedules
// are transformers' get_*_schedule_with_warmup, clipping is
// torch.nn.utils.clip_grad_norm_. Every operation is deterministic: results
// do not depend on the number of threads.
package train
