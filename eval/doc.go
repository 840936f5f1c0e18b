// Package eval runs benchmark tasks on a language model by log-likelihood
// scoring, the way lm-evaluation-harness ("lm-eval") does, against the
// abstract model interface LM (so this package imports no model code).
//
// # Scoring
//
// A multiple-choice item has a context (few-shot examples, then the item's
// prompt) and choices. Each choice becomes one Request: the context tokens
// are BOS followed by Encode(context), and the continuation tokens are
// Encode(context + delimiter + choice) with the first len(Encode(context))
// tokens removed — lm-eval's _encode_pair, which scores the continuation as
// the tokenizer would split the whole text. Trailing spaces of the context
// move into the continuation first, as lm-eval does. A choice's score is the
// summed log-probability of its continuation tokens. All requests of an
// item go to LM.LogLikelihood in one call, so an implementation may share
// the context's computation.
//
//   - acc: argmax of the summed log-likelihoods (the first on ties).
//   - acc_norm: argmax of log-likelihood divided by the choice's length in
//     characters (Unicode code points, without the delimiter): lm-eval's
//     acc_norm uses Python len() of the choice string.
//   - acc_bytes: the same divided by the choice's UTF-8 byte length
//     (lm-eval's acc_bytes); it equals acc_norm for ASCII choices.
//
// WinoGrande scores the other way round (lm-eval's "partial evaluation"):
// the choices are contexts (the sentence up to the blank, with each option
// filled in) and the shared continuation " " + rest of sentence is scored
// under each.
//
// The standard error of a mean metric (acc, acc_norm) is lm-eval's
// mean_stderr: the sample standard deviation over √n, which for 0/1 scores
// is √(p(1-p)/(n-1)). F1, MCC, Pearson and Spearman get a bootstrap
// standard error (lm-eval bootstraps F1 and MCC too; it uses 100,000
// resamples, here Options.BootstrapIters, 1,000 by default).
//
// # Prompts
//
// GLUE prompts and answer words are lm-eval's (lm_eval/tasks/glue/*/
// default.yaml; mnli/utils.py), e.g. SST-2 "{sentence}\nQuestion: Is this
// sentence positive or negative?\nAnswer:" with choices " negative" and
// " positive". STS-B has no lm-eval task; here it asks for a 0–5 similarity
// and predicts the expected value under the softmax of the six answers'
// log-likelihoods, reporting Pearson and Spearman correlation with the gold
// scores.
//
// The QA and reasoning files (llm-foundry's {query, choices, gold}) already
// hold a formatted query; to get lm-eval's prompts, BoolQ, ARC and PIQA
// append "\nAnswer:" to the query (after trimming trailing white space):
// lm-eval's arc_easy is "Question: {q}\nAnswer:", piqa
// "Question: {goal}\nAnswer:", boolq "{passage}\nQuestion: {q}?\nAnswer:"
// (the BoolQ file's query is "Passage: {passage}\nQuestion: {q}?"). OpenBookQA's
// query is the bare question stem, as in lm-eval. The SIQA file's query
// already ends in "Answer:" with lettered choices, so it is used as is
// (lm-eval's social_iqa prompt differs: "Q: {context} {question}\nA:" with
// the answer texts). Choices always follow a single space.
//
// HellaSwag's text file (klosax/hellaswag_text_data) has one line of
// context "{activity_label}: {ctx}". lm-eval preprocesses the text: strip,
// replace " [title]" by ". ", remove "[...]" spans, replace double spaces by
// single ones, and capitalise ctx_b.
// The file already has " [title]" replaced; this package applies the same
// preprocessing (it is idempotent) to context and endings. ctx_b's
// capitalisation cannot be recovered because the file joins ctx_a and
// ctx_b, so it is left as stored.
//
// # Few-shot
//
// With Options.Shots = k, each item's context starts with k examples drawn
// without replacement by a PCG generator seeded with Options.Seed, from the
// task's training split where one exists (GLUE train files; the Alpaca-style
// train/{ARC-Easy,ARC-Challenge,openbookqa,boolq}.train.json, mapped back to
// {query, choices, gold}: "Question: " + question for ARC, the bare question
// for OpenBookQA, "Question: {q}" with choices no/yes for BoolQ, whose
// training file has no passages). Tasks without a training split (PIQA,
// SIQA, WinoGrande, HellaSwag) draw from the evaluation set itself,
// excluding the item being scored, as lm-eval does. An example is its
// prompt, a space and its gold answer; examples and the item are joined by
// "\n\n" (lm-eval's fewshot_delimiter).
//
// # Perplexity
//
// The perplexity task scores a plain-text file as one document (with
// Options.Limit, its first Limit lines), or a JSONL file's "text" rows as
// documents (c4_demo.jsonl; Limit rows), with lm-eval's
// loglikelihood_rolling: each document's tokens are cut into windows of at
// most MaxLen predicted tokens; the first is predicted from BOS alone,
// each later one from the token before it (lm-eval's context_len = 1; the
// last, shorter window reads a full MaxLen of context), all through
// LM.LogLikelihood — no separate token-log-prob interface is needed. It
// reports token, word and byte perplexity and bits per byte, summed over
// documents before dividing (lm-eval's weighted_perplexity, as for
// wikitext; words are counted as Python's len(re.split(r"\s+", text))).
// The default file is text/wiki_demo.txt.
//
// # Data
//
// Files are looked up under Options.DataDir (default DefaultDataDir(): the
// shared/data folder beside the module root, i.e. ../shared/data from the
// repository). Options.Data names the evaluation file directly. Evaluation
// (and few-shot training) files by task:
//
//	sst2, mrpc, cola, rte,   glue/<SST-2|MRPC|CoLA|RTE|QQP|MNLI|QNLI|STS-B|WNLI>/
//	qqp, mnli, qnli, stsb,     (or <same>/ directly under DataDir; see GLUEPath):
//	wnli, mnli_mismatched      dev.tsv (train.tsv); CoLA in_domain_dev.tsv
//	                           (in_domain_train.tsv); RTE val.jsonl (train.jsonl);
//	                           MNLI dev_matched.tsv / dev_mismatched.tsv (train.tsv)
//	boolq                    qa/boolq.jsonl (train/boolq.train.json)
//	arc_easy                 qa/arc_easy.jsonl (train/ARC-Easy.train.json)
//	arc_challenge            qa/arc_challenge.jsonl (train/ARC-Challenge.train.json)
//	openbookqa               qa/openbook_qa.jsonl (train/openbookqa.train.json)
//	piqa, siqa               reasoning/piqa.jsonl, reasoning/siqa.jsonl
//	winogrande               reasoning/winogrande.jsonl
//	hellaswag                reasoning/hellaswag_val_full.txt.bz2 (or .txt)
//	perplexity               text/wiki_demo.txt
//
// Metrics by task: acc for sst2, rte, qnli, wnli, mnli, boolq, siqa and
// winogrande; acc and f1 for mrpc and qqp; mcc and acc for cola; pearson and
// spearman for stsb; acc, acc_norm and acc_bytes for arc_easy,
// arc_challenge, openbookqa, piqa and hellaswag; token_perplexity,
// word_perplexity, byte_perplexity and bits_per_byte for perplexity.
package eval
