#!/bin/sh
# The selective methods next to LoRA (docs/results.md, "Selective methods"):
# each method trained on Shakespeare (stories260K, held-out loss) and on
# SST-2 (dev accuracy), one after the other in one session so the wall
# times and peak memory are comparable. Run from the repository root:
#   sh examples/selective/run.sh      (GOPEFT=path/to/gopeft to choose the binary;
#                                      STEPS, SST_STEPS to change the budget)
# Writes out/selective/<task>-<method>/, <task>-<method>.{time,log}, then the
# table (summary.py).
set -e
G=${GOPEFT:-gopeft}
STEPS=${STEPS:-50}
SST_STEPS=${SST_STEPS:-$STEPS}
LIMIT=${LIMIT:-2048}
M=../shared/data/models/stories260K/stories260K.bin
O=${OUT:-out/selective}
mkdir -p $O
# Each method's own settings; everything else is common to all.
flags() {
	case $1 in
	LORA) echo "--targets all-linear --rank 8 --alpha 16" ;;
	DIFF_PRUNING) echo "--density 0.005 --l0-steps $(($2 / 2))" ;;
	FISHMASK) echo "--density 0.005 --num-samples 256" ;;
	FISH_DIP) echo "--density 0.005 --num-samples 25 --reevaluate-after-steps $(($2 / 3))" ;;
	CHILD_TUNING_D) echo "--density 0.005 --num-samples 256" ;;
	PAFI) echo "--density 0.005" ;;
	esac
}
METHODS=${METHODS:-"LORA BITFIT LN_TUNING DIFF_PRUNING FISHMASK FISH_DIP CHILD_TUNING_F CHILD_TUNING_D PAFI FULL"}
for m in $METHODS; do
	/usr/bin/time -v -o $O/shakespeare-$m.time $G train --model $M \
		--data ../shared/data/text/tinyshakespeare.txt --format text --seq-len 128 --eval-fraction 0.1 \
		--eval-limit 256 --limit $LIMIT --steps $STEPS --batch 8 --lr 3e-3 --log-every 10 \
		--method $m $(flags $m $STEPS) --overwrite-output-dir --output $O/shakespeare-$m | tee $O/shakespeare-$m.log
	/usr/bin/time -v -o $O/sst2-$m.time $G train --task sst2 --model $M \
		--limit $LIMIT --steps $SST_STEPS --batch 32 --lr 2e-3 --warmup $(($SST_STEPS / 10)) --log-every 10 \
		--method $m $(flags $m $SST_STEPS) --overwrite-output-dir --output $O/sst2-$m | tee $O/sst2-$m.log
done
python3 examples/selective/summary.py $O $METHODS
