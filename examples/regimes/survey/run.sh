#!/bin/sh
# The survey's second table: standard, multi-stage, continual,
# domain-adaptive and instruction fine-tuning of stories260K, each trained
# with the recipe beside this script, then scored on tasks no stage trained
# on (C4 perplexity, ARC-Easy, PIQA). Run from the repository root:
#   sh examples/regimes/survey/run.sh        (GOPEFT=path/to/gopeft to choose the binary)
# Writes out/survey/<regime>/ and out/survey/<regime>.{time,eval-*.json}.
set -e
G=${GOPEFT:-gopeft}
M=../shared/data/models/stories260K/stories260K.bin
T=../shared/data/models/stories260K/tok512.bin # the merged model's folder has none
O=out/survey
mkdir -p $O
score() { # name model [adapter]
	a=""; [ -n "$3" ] && a="--adapter $3"
	$G eval --model $2 --tokenizer $T $a --task arc_easy,piqa --limit 200 --output $O/$1.eval-tasks.json
	$G eval --model $2 --tokenizer $T $a --task perplexity --data ../shared/data/text/c4_demo.jsonl --limit 50 --output $O/$1.eval-c4.json
}
score base $M
for r in standard multi-stage continual domain-adaptive instruction; do
	/usr/bin/time -v -o $O/$r.time $G train --config examples/regimes/survey/$r.yaml --overwrite-output-dir
	grep -E "Elapsed|Maximum resident" $O/$r.time
	case $r in
	standard|instruction) score $r $M $O/$r ;;
	multi-stage|continual) score $r $M $O/$r/target ;;
	domain-adaptive)
		rm -rf $O/$r/merged
		$G merge --model $M --adapter $O/$r/domain --output $O/$r/merged
		score $r $O/$r/merged $O/$r/target ;;
	esac
done
