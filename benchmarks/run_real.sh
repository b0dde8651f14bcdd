#!/usr/bin/env bash
# Run the whole workflow with the shipped defaults (config/config.yaml, no dataset-specific overlay) on a real
# dataset in the AnimalCLEF layout, under nice, and print each stage's score, BAKS, BAUS, the shortlist's
# recall@k, the cascade's choice and the wall time (total and per measured rule).
# Usage: benchmarks/run_real.sh [DATA_ROOT] [WORKDIR] [SNAKEMAKE ARGS...]   (default: ../shared/datasets/dogfacenet)
set -euo pipefail
repo="$(cd "$(dirname "$0")/.." && pwd)"
data="$(cd "${1:-$repo/../shared/datasets/dogfacenet}" && pwd)"
work="${2:-$repo/results/benchmarks/real}"
shift $(($# < 2 ? $# : 2))
mkdir -p "$work"
for name in Snakefile rules config envs report; do ln -sfn "$repo/$name" "$work/$name"; done
export PATH="$repo/.venv/bin:$PATH" HF_HUB_OFFLINE=1
cd "$work"
start=$(date +%s)
nice snakemake --cores 2 --config data_root="$data" --quiet progress "$@"
end=$(date +%s)
echo "wall time: $((end - start)) s on $(nproc) cores (load average at the end: $(cut -d' ' -f1-3 /proc/loadavg))"
echo "shortlist recall@k (known queries whose individual is among the k candidates):"
for f in results/shortlist/*/*.recall.json; do echo "  $f: $(tr -d '\n ' < "$f")"; done
echo "cascade choice (simulated open-set score on the gallery):"
for f in results/stages/cascade/*/choice.json; do
  python -c 'import json, sys; c = json.load(open(sys.argv[1])); print("  ", sys.argv[1], c.get("mode"), json.dumps(c.get("steps")), c.get("simulated", ""))' "$f"
done
echo "seconds per measured rule (Snakemake benchmark files):"
find logs/benchmarks -name '*.tsv' 2>/dev/null | sort | while read -r f; do echo "  $f: $(tail -n 1 "$f" | cut -f1)"; done
echo "scores (results/scores.tsv):"
column -t -s $'\t' results/scores.tsv
if [[ -f results/discovery_scores.tsv ]]; then
  echo "discovery (results/discovery_scores.tsv, ARI / AMI against two trivial clusterings):"
  column -t -s $'\t' results/discovery_scores.tsv
fi
