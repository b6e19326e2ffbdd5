#!/usr/bin/env bash
# The GPU checks in one call (CUDA tests, a CLI run, step, IWAE and AIS benchmarks, Fashion-MNIST epochs, a reduced
# gap decomposition), for a lent GPU machine with torch but without pyro-ppl. Prepare here:
#   bash ../shared/gpu/fetch_wheels.sh   # plus arviz-base/-stats/-plots for arviz 1.x, into .whl/
#   mkdir -p .data/fashion-mnist && cp /usr/share/datasets/fashion-mnist/*.gz .data/fashion-mnist/
# then run it there with `carry = [".whl", ".data"]`: `bash benchmarks/gpu_checklist.sh SECONDS`.
# Each step has its own time limit so that a slow one leaves time for the rest; the log goes to $OUT/gpu_log.txt.
set -u
budget=${1:-540}
start=$(date +%s)
out=${OUT:-/tmp/gpu_out}
mkdir -p "$out"
log="$out/gpu_log.txt"
export PYTHONUNBUFFERED=1
left() { echo $((budget - ($(date +%s) - start))); }
step() {  # step LIMIT_S NAME COMMAND...: runs COMMAND under min(LIMIT_S, time left - 5)
  local limit=$1 name=$2
  shift 2
  local l
  l=$(left)
  l=$((l - 5 < limit ? l - 5 : limit))
  if [ "$l" -le 5 ]; then
    echo "== $name: skipped (no time left)" | tee -a "$log"
    return
  fi
  echo "== $name (limit ${l}s): $*" | tee -a "$log"
  local t0=$SECONDS rc
  timeout "$l" "$@" >>"$log" 2>&1
  rc=$?
  echo "== $name: exit $rc after $((SECONDS - t0)) s" | tee -a "$log"
}

python3 -m pip install -q --no-index --no-deps --no-compile --no-cache-dir --upgrade --target /tmp/site .whl/*.whl \
  >>"$log" 2>&1 || exit 1
export PYTHONPATH=/tmp/site:$PWD
{
  nvidia-smi --query-gpu=name,memory.total,driver_version --format=csv
  python3 -c "import torch, pyro; print('torch', torch.__version__, 'cuda', torch.version.cuda, 'pyro', pyro.__version__)"
} >>"$log" 2>&1
py=python3
fm=(--set data.root=.data/fashion-mnist --set train.device=cuda --set train.progress=false)

step 240 "CUDA tests" $py -m pytest -v -n 8 -p no:cacheprovider tests/test_gpu.py  # pytest-xdist is on the machine
step 60 "CLI train digits on cuda" $py -m pyro_lvm train experiments/digits_vae.toml --set train.device=cuda \
  --set train.progress=false --set train.out_dir=/tmp/runs/digits_cuda
$py -c "import json; h=json.load(open('/tmp/runs/digits_cuda/metrics.json'))['history'][-1]; print('digits', h)" \
  >>"$log" 2>&1
step 60 "CLI train digits on cuda, graph step" $py -m pyro_lvm train experiments/digits_vae.toml --set train.device=cuda \
  --set train.step=graph --set train.progress=false --set train.out_dir=/tmp/runs/digits_graph
$py -c "import json; m=json.load(open('/tmp/runs/digits_graph/metrics.json')); print('digits graph', m['elbo_path'], \
  m['history'][-1])" >>"$log" 2>&1
step 120 "VAE step ratio" $py benchmarks/vae_step.py --device cuda --batch 128 1024 --elbos trace mean_field \
  --jit auto pure graph --compiled-ref --graph-ref --rounds 5 --steps 20
step 45 "IWAE throughput" $py benchmarks/iwae_eval.py --device cuda --points 320 --batch 64 --chunk 1000
step 60 "AIS speed" $py benchmarks/ais_speed.py --device cuda --points 4000 --steps 50 --pyro-transitions 20
for kind in eager graph; do
  for b in 128 1024; do
    s=$((55000 / b + 1))
    step 45 "Fashion-MNIST epoch, batch $b, $kind step" $py -m pyro_lvm train experiments/fashion_mnist_cremer.toml \
      "${fm[@]}" --set train.step=$kind --set train.batch_size=$b --set train.steps=$s --set train.eval_every=$s \
      --set train.out_dir=/tmp/runs/fm_${kind}_$b
    $py -c "import json; h=json.load(open('/tmp/runs/fm_${kind}_$b/metrics.json'))['history'][-1]; print('fm $b $kind', h)" \
      >>"$log" 2>&1
  done
done
step 400 "reduced gap decomposition" $py -m pyro_lvm compare experiments/fashion_mnist_cremer.toml "${fm[@]}" \
  --set train.steps=20000 --set train.eval_every=20000 --set "compare.guides=['amortized']" --set "compare.guide_options={}" \
  --set compare.gap_points=200 --set compare.qstar_max_steps=5000 --set compare.qstar_init=encoder \
  --set eval.num_samples=1000 --set eval.num_points=200 --set eval.batch_size=50 --set compare.out_dir=/tmp/runs/cremer
cp /tmp/runs/cremer/comparison.json "$out/" 2>/dev/null
echo "== done after $(($(date +%s) - start)) s" | tee -a "$log"
