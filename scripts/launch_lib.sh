# shellcheck shell=bash
# Shared by the training launchers (sourced, not run). One function does the work:
#
#   launch_train CONFIG [section.field=value ...]
#
# 1. resolves and validates the config, its overrides and the batch arithmetic for the world
#    size (`mm-gmpo train --dry-run --world-size N`, no GPU) and prints the resolved YAML and the
#    per-GPU memory plan (YAML comments), refusing a plan over GPU_MEM;
# 2. stops there when DRY_RUN=1 (or --dry-run was given);
# 3. otherwise writes the resolved config to <train.output_dir>/config.yaml (unless an earlier
#    run's is there, which `mm-gmpo train` then checks against this run's) plus the launch
#    command to launch.txt, and starts `mm-gmpo train` under the chosen launcher.
#
# Launcher settings (environment):
#   LAUNCHER        torchrun (default) | deepspeed | python (one process, no launcher)
#   NPROC_PER_NODE  processes (GPUs) per node; GPUS is an alias
#   NNODES          nodes (default 1); NODE_RANK this node's index (default 0)
#   MASTER_ADDR / MASTER_PORT   rank-0 host and port (default 127.0.0.1 / 29500)
#   RDZV_ENDPOINT   torchrun c10d rendezvous host:port instead of MASTER_ADDR/NODE_RANK
#                   (start the same command on every node; RDZV_ID names the job)
#   HOSTFILE        DeepSpeed hostfile ("host slots=N" lines): LAUNCHER becomes deepspeed and the
#                   world size is the sum of the slots; run the script once, on the first host
#   EXTRA_ARGS      more overrides, split on whitespace (positional overrides work too)
#   GPU_MEM         GiB per GPU for the dry run's memory plan (default 80); a plan over it stops
#                   the launch (exit 2) with the part to shrink and the setting that does it
#   PYTHON          interpreter (default: the repo's .venv, else python3)
#   LAUNCH_ECHO=1   print the launcher command instead of running it (tests)

LIB_REPO="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"

# Split the script's own arguments into DRY_RUN and OVERRIDES (an array).
parse_script_args() {
  OVERRIDES=()
  local arg
  for arg in "$@"; do
    case "$arg" in
      --dry-run) DRY_RUN=1 ;;
      -h | --help)
        sed -n '2,/^set -euo/p' "$0" | sed -e '/^set -euo/d' -e 's/^# \{0,1\}//'
        exit 0
        ;;
      *=*) OVERRIDES+=("$arg") ;;
      *)
        echo "error: unknown argument '$arg' (overrides look like section.field=value)" >&2
        exit 2
        ;;
    esac
  done
  if [ -n "${EXTRA_ARGS:-}" ]; then
    local extra
    read -r -a extra <<<"$EXTRA_ARGS"
    OVERRIDES+=("${extra[@]}")
  fi
}

# The overrides every recipe script takes from the environment, into RECIPE_ARGS:
#   recipe_args MODEL TRAIN_DATA OUTPUT_DIR
# LOSS (default gmpo; a non-GMPO loss gets its own default clip range, e.g. GRPO's 0.2, unless
# CLIP_LOW / CLIP_HIGH are set), STEPS, SEED and ZERO_STAGE (default: the config's), OFFLOAD=1,
# LORA_RANK (model.lora_rank: LoRA adapters instead of full fine-tuning).
recipe_args() {
  local loss="${LOSS:-gmpo}"
  RECIPE_ARGS=("model.path=$1" "data.train=$2" "train.output_dir=$3" "loss.name=$loss")
  case "$loss" in
    gmpo*) ;;
    *) RECIPE_ARGS+=("loss.clip_low=null" "loss.clip_high=null") ;;
  esac
  [ -z "${CLIP_LOW:-}" ] || RECIPE_ARGS+=("loss.clip_low=$CLIP_LOW")
  [ -z "${CLIP_HIGH:-}" ] || RECIPE_ARGS+=("loss.clip_high=$CLIP_HIGH")
  [ -z "${STEPS:-}" ] || RECIPE_ARGS+=("train.steps=$STEPS")
  [ -z "${SEED:-}" ] || RECIPE_ARGS+=("train.seed=$SEED")
  [ -z "${ZERO_STAGE:-}" ] || RECIPE_ARGS+=("train.zero_stage=$ZERO_STAGE")
  # ZeRO-3 with optimizer offload (optimizer states on the CPU): ZERO_STAGE=3 OFFLOAD=1
  [ "${OFFLOAD:-0}" = 0 ] || RECIPE_ARGS+=("train.offload=true")
  # LoRA adapters of this rank instead of full fine-tuning (0: full fine-tuning)
  [ -z "${LORA_RANK:-}" ] || RECIPE_ARGS+=("model.lora_rank=$LORA_RANK")
  return 0
}

pick_python() {
  if [ -n "${PYTHON:-}" ]; then
    echo "$PYTHON"
  elif [ -x "$LIB_REPO/.venv/bin/python" ]; then
    echo "$LIB_REPO/.venv/bin/python"
  else
    echo python3
  fi
}

# Sum of "slots=N" over the hostfile's host lines (a host without slots counts 1, as in DeepSpeed).
hostfile_slots() {
  awk '
    /^[[:space:]]*(#|$)/ { next }
    { n = 1; for (i = 2; i <= NF; i++) if ($i ~ /^slots=/) { split($i, kv, "="); n = kv[2] } total += n }
    END { print total + 0 }
  ' "$1"
}

launch_train() {
  local config="$1"
  shift
  local py
  py="$(pick_python)"
  local launcher="${LAUNCHER:-torchrun}"
  local nproc="${NPROC_PER_NODE:-${GPUS:-1}}"
  local nnodes="${NNODES:-1}"
  local world
  if [ -n "${HOSTFILE:-}" ]; then
    [ -f "$HOSTFILE" ] || { echo "error: HOSTFILE $HOSTFILE not found" >&2; return 2; }
    launcher=deepspeed
    world="$(hostfile_slots "$HOSTFILE")"
  elif [ "$launcher" = python ]; then
    world=1
  else
    world=$((nnodes * nproc))
  fi
  case "$launcher" in
    torchrun | deepspeed | python) ;;
    *) echo "error: LAUNCHER must be torchrun, deepspeed or python, got '$launcher'" >&2; return 2 ;;
  esac

  # 1. resolve + validate (config, overrides, world size); the output is YAML plus a comment line
  local resolved
  resolved="$(mktemp)"
  # shellcheck disable=SC2064  # expand now: the trap must remove this very file
  trap "rm -f '$resolved'" RETURN
  if ! "$py" -m mm_gmpo train "$config" "$@" --dry-run --world-size "$world" --gpu-mem "${GPU_MEM:-80}" \
    >"$resolved"; then
    sed -n '/^# dry run OK/,$p' "$resolved" >&2 # the memory plan, when that is what failed
    echo "error: the config did not validate for world size $world (see above)" >&2
    return 2
  fi
  echo "# resolved config ($config, world size $world, launcher $launcher)"
  cat "$resolved"
  if [ "${DRY_RUN:-0}" = 1 ]; then
    return 0
  fi

  # 2. a real run: refuse a missing local data file before any GPU time is spent (a relative
  #    path is looked up as the trainer does: working directory, then the data folder)
  local out train_data
  {
    read -r out
    read -r train_data
  } < <("$py" -c 'import sys, yaml
from mm_gmpo.data.loaders import resolve_data_source
c = yaml.safe_load(open(sys.argv[1]))
print(c["train"]["output_dir"]); print(resolve_data_source(c["data"]["train"]))' "$resolved")
  [ -n "${out:-}" ] || { echo "error: could not read train.output_dir from the resolved config" >&2; return 2; }
  case "$train_data" in
    *.jsonl | *.json | *.parquet | *.arrow)
      [ -e "$train_data" ] || { echo "error: data.train $train_data does not exist" >&2; return 2; }
      ;;
  esac

  local cmd
  case "$launcher" in
    python) cmd=("$py" -m mm_gmpo train "$config" "$@") ;;
    torchrun)
      cmd=("$py" -m torch.distributed.run --nnodes "$nnodes" --nproc_per_node "$nproc")
      if [ -n "${RDZV_ENDPOINT:-}" ]; then
        cmd+=(--rdzv_backend c10d --rdzv_endpoint "$RDZV_ENDPOINT" --rdzv_id "${RDZV_ID:-mm-gmpo}")
      else
        cmd+=(--node_rank "${NODE_RANK:-0}" --master_addr "${MASTER_ADDR:-127.0.0.1}"
          --master_port "${MASTER_PORT:-29500}")
      fi
      cmd+=(-m mm_gmpo train "$config" "$@")
      ;;
    deepspeed)
      cmd=("$py" -m deepspeed.launcher.runner --master_addr "${MASTER_ADDR:-127.0.0.1}"
        --master_port "${MASTER_PORT:-29500}" --no_local_rank)
      if [ -n "${HOSTFILE:-}" ]; then
        cmd+=(--hostfile "$HOSTFILE")
      else
        cmd+=(--num_nodes "$nnodes" --num_gpus "$nproc")
      fi
      cmd+=(--module mm_gmpo train "$config" "$@")
      ;;
  esac

  mkdir -p "$out"
  # An earlier run's config.yaml stays: `mm-gmpo train` compares it with this run's and refuses
  # to continue a different run there unless train.resume is given explicitly. The YAML is
  # written without the dry run's summary and memory plan.
  [ -e "$out/config.yaml" ] || sed '/^# dry run OK/,$d' "$resolved" >"$out/config.yaml"
  {
    echo "# $(date -u +%Y-%m-%dT%H:%M:%SZ) on $(hostname), world size $world"
    printf '%q ' "${cmd[@]}"
    echo
  } >"$out/launch.txt"
  echo "# config in $out/config.yaml; launching: $(printf '%q ' "${cmd[@]}")"
  if [ "${LAUNCH_ECHO:-0}" = 1 ]; then
    return 0
  fi
  "${cmd[@]}"
}

# Evaluation launchers: `launch_eval SUITE PROTOCOL_ARGS... -- USER_ARGS...` runs
# `mm-gmpo eval SUITE --model $CKPT --out $OUT PROTOCOL_ARGS USER_ARGS` (later options win).
# DRY_RUN=1 runs the same command without a model instead: the ground-truth backend on the first
# DRY_RUN_LIMIT (2) problems of each benchmark into a temporary folder, which checks the options,
# the protocol, every benchmark file and the verifiers without a GPU.
launch_eval() {
  local suite="$1"
  shift
  local protocol=()
  while [ "$#" -gt 0 ] && [ "$1" != -- ]; do
    protocol+=("$1")
    shift
  done
  [ "$#" -gt 0 ] && shift
  local py
  py="$(pick_python)"
  local cmd=("$py" -m mm_gmpo eval "$suite")
  [ -z "${DATA_DIR:-}" ] || cmd+=(--data-dir "$DATA_DIR")
  cmd+=("${protocol[@]}" "$@")
  if [ "${DRY_RUN:-0}" = 1 ]; then
    local tmp
    tmp="$(mktemp -d)"
    # shellcheck disable=SC2064  # expand now: the trap must remove this very folder
    trap "rm -rf '$tmp'" RETURN
    echo "# eval command (model: ${CKPT:-<CKPT>}, out: ${OUT:-<OUT>}):"
    echo "# $(printf '%q ' "${cmd[@]}")"
    if ! "${cmd[@]}" --backend ground-truth --limit "${DRY_RUN_LIMIT:-2}" --out "$tmp/dry_run" \
      --label dry-run --no-progress; then
      echo "error: the eval dry run failed (see above)" >&2
      return 2
    fi
    echo "# dry run OK: eval $suite (ground-truth answers on ${DRY_RUN_LIMIT:-2} problems per benchmark)"
    return 0
  fi
  if [ -z "${CKPT:-}" ]; then
    echo "error: set CKPT to a checkpoint (hub id, model folder, checkpoint or training run folder)" >&2
    return 2
  fi
  local out="${OUT:-runs/eval/$(basename "$CKPT")}"
  cmd+=(--model "$CKPT" --out "$out")
  [ -z "${LABEL:-}" ] || cmd+=(--label "$LABEL")
  echo "# $(printf '%q ' "${cmd[@]}")"
  "${cmd[@]}"
}
