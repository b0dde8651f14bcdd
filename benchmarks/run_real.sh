#!/usr/bin/env bash
# Run the whole workflow on a real dataset in the AnimalCLEF layout and print its scores and wall time.
# Usage: benchmarks/run_real.sh [DATA_ROOT] [WORKDIR]   (default: ../shared/datasets/dogfacenet)
set -euo pipefail
repo="$(cd "$(dirname "$0")/.." && pwd)"
data="$(cd "${1:-$repo/../shared/datasets/dogfacenet}" && pwd)"
work="${2:-$repo/results/benchmarks/real}"
mkdir -p "$work"
for name in Snakefile rules config envs report; do ln -sfn "$repo/$name" "$work/$name"; done
export PATH="$repo/.venv/bin:$PATH" HF_HUB_OFFLINE=1
cd "$work"
start=$(date +%s)
snakemake --cores 2 --configfile "$repo/benchmarks/dogfacenet.yaml" --config data_root="$data" -q
end=$(date +%s)
echo "wall time: $((end - start)) s on $(nproc) cores"
cat results/shortlist/*.recall.json
cat results/scores.tsv
