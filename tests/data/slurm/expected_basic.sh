#!/bin/bash
#SBATCH --time=60
#SBATCH --mem=4096M
#SBATCH --cpus-per-task=2
#SBATCH --ntasks=1
#SBATCH --nodes=1
# Pairio job job123, written by the Pairio Slurm bridge.
set -u
JOB_DIR=/shared/pairio/jobs/job123
PYTHON=/opt/pairio/venv/bin/python
rm -f "$JOB_DIR/slurm_exit_code" "$JOB_DIR/result.json" "$JOB_DIR/watcher.json"
printf "%s\n" "${SLURM_JOB_ID:-}" > "$JOB_DIR/slurm_job_id"
trap 'status=$?; printf "%s\n" "$status" > "$JOB_DIR/slurm_exit_code.tmp" && mv -f "$JOB_DIR/slurm_exit_code.tmp" "$JOB_DIR/slurm_exit_code"' EXIT
WATCHER_FLAGS="-I"; if [ -r /proc/self/stat ]; then WATCHER_FLAGS="-I -S"; fi
"$PYTHON" $WATCHER_FLAGS -c 'import importlib.util as u, sys; s = u.spec_from_file_location("pairio_watch", sys.argv.pop(1)); m = u.module_from_spec(s); sys.modules[s.name] = m; s.loader.exec_module(m); sys.exit(m.main())' "$JOB_DIR/pairio_watch.py" --job-dir "$JOB_DIR" --time-sec 3600 --memory-gb 4 --num-cpus 2 '--pass-env=SLURM_*' -- python main.py
exit $?
