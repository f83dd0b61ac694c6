#!/usr/bin/env bash
# The experiment graph's Slurm launcher for one perturbation (scripts/experiment.mk, LAUNCHER=slurm):
#
#   slurm-perturb.sh DIR N [SBATCH FLAG...] -- PERTURB [ARG...]
#
# submits PERTURB as a job array of N shards (`--shard K/N`, each with `--resume` so that a
# resubmitted task continues from its finished units) and `perturb merge` as a job that depends on
# it (--dependency=afterok), waits until both have left the queue, and leaves DIR/G.npy,
# DIR/G.se.npy and DIR/index.json. Shard K writes DIR/work/shardK.json (atomically, when it
# completes), keeps its finished units in DIR/work/shardK/ and logs to DIR/work/slurm-JOB_K.log;
# DIR must be on a filesystem that the nodes share with this machine.
#
# Run again after a failure: only the shards without a result are submitted (as --array=K,...),
# then the merge. Exit status 1, naming each missing shard and its log, when a shard or the merge
# failed or was cancelled; 2 on bad usage. Interrupting it (Ctrl-C) cancels the jobs it submitted.
set -euo pipefail

usage() {
	echo "slurm-perturb.sh: $1 (usage: slurm-perturb.sh DIR N [SBATCH FLAG...] -- PERTURB [ARG...])" >&2
	exit 2
}
(($# >= 3)) || usage "too few arguments"
dir=$1 shards=$2
shift 2
[[ $shards =~ ^[1-9][0-9]*$ ]] || usage "N='$shards': expected the number of shards, a positive integer"
sbatch_flags=()
while (($#)) && [[ $1 != -- ]]; do
	sbatch_flags+=("$1")
	shift
done
(($# >= 2)) || usage "no perturb command after --"
shift
perturb=("$@")
command -v sbatch >/dev/null || usage "sbatch not found: LAUNCHER=slurm needs the Slurm client commands (make setup-slurm)"

work=$dir/work
name=$(basename "$dir")
mkdir -p "$work"
rm -f "$dir/G.npy" "$dir/G.se.npy" "$dir/index.json"

missing=()
for ((k = 1; k <= shards; k++)); do
	[[ -e $work/shard$k.json ]] || missing+=("$k")
done
parts=()
for ((k = 1; k <= shards; k++)); do parts+=("$work/shard$k.json"); done

# The job scripts run under /bin/sh: printf %q quotes every word for it. A task runs as many
# threads as it was given CPUs (the array's --cpus-per-task), whatever the node's CPU count.
threads='[ -n "${SLURM_CPUS_ON_NODE:-}" ] && export RAYON_NUM_THREADS=$SLURM_CPUS_ON_NODE;'
task='${SLURM_ARRAY_TASK_ID}'
work_sh=$(printf %q "$work")
jobs=()
trap 'if ((${#jobs[@]})); then scancel "${jobs[@]}"; fi; exit 130' INT TERM

array=
if ((${#missing[@]})); then
	list=$(IFS=,; echo "${missing[*]}")
	array=$(sbatch --parsable "${sbatch_flags[@]}" --array="$list" --job-name="perturb-$name" \
		--output="$work/slurm-%A_%a.log" \
		--wrap "$threads exec $(printf '%q ' "${perturb[@]}") --shard $task/$shards -o $work_sh/shard$task.json --resume $work_sh/shard$task")
	array=${array%%;*}
	jobs+=("$array")
	echo "perturb $name: Slurm job array $array, shards $list of $shards" >&2
fi
merge=$(sbatch --parsable "${sbatch_flags[@]}" --job-name="merge-$name" --output="$work/slurm-%j.log" \
	${array:+--dependency=afterok:$array --kill-on-invalid-dep=yes} \
	--wrap "exec $(printf '%q ' "${perturb[0]}" merge "${parts[@]}" -o "$dir/G.npy" --se "$dir/G.se.npy" --index "$dir/index.json" -q)")
merge=${merge%%;*}
jobs+=("$merge")
echo "perturb $name: Slurm job $merge merges them" >&2

# Wait until every submitted job has left the queue (squeue lists array tasks under the array's id).
waited=0
while :; do
	queued=" $(squeue --me --noheader --format=%F | tr '\n' ' ') "
	still=0
	for job in "${jobs[@]}"; do
		[[ $queued == *" $job "* ]] && still=1
	done
	((still)) || break
	sleep $((waited < 60 ? 1 : 10))
	waited=$((waited + 1))
done
trap - INT TERM

failed=0
for ((k = 1; k <= shards; k++)); do
	if [[ ! -e $work/shard$k.json ]]; then
		echo "perturb $name: shard $k/$shards left no result (Slurm job ${array}_$k, log $work/slurm-${array}_$k.log)" >&2
		failed=1
	fi
done
if ((!failed)) && [[ ! -e $dir/G.npy || ! -e $dir/G.se.npy || ! -e $dir/index.json ]]; then
	echo "perturb $name: the merge (Slurm job $merge) did not finish; log $work/slurm-$merge.log" >&2
	failed=1
fi
if ((failed)); then
	echo "perturb $name: run make again to resubmit what is missing (shards resume from their finished units)" >&2
	exit 1
fi
