#!/bin/bash
#SBATCH --time=2
#SBATCH --mem=1127M
#SBATCH --cpus-per-task=4
#SBATCH --ntasks=1
#SBATCH --nodes=1
#SBATCH --gres=gpu:a100:2
#SBATCH --partition=gpu
#SBATCH --account=lab42
#SBATCH --qos=normal
#SBATCH --constraint=intel&ib
#SBATCH --reservation=maint-window
#SBATCH --exclusive
#SBATCH --mail-type=NONE
# Pairio job job123, written by the Pairio Slurm bridge.
set -u
JOB_DIR=/shared/pairio/jobs/job123
PYTHON=/opt/pairio/venv/bin/python
rm -f "$JOB_DIR/slurm_exit_code" "$JOB_DIR/result.json" "$JOB_DIR/watcher.json"
printf "%s\n" "${SLURM_JOB_ID:-}" > "$JOB_DIR/slurm_job_id"
trap 'status=$?; printf "%s\n" "$status" > "$JOB_DIR/slurm_exit_code.tmp" && mv -f "$JOB_DIR/slurm_exit_code.tmp" "$JOB_DIR/slurm_exit_code"' EXIT
export HDF5_USE_FILE_LOCKING=FALSE
export LAB_NOTE='it'"'"'s a "test" $(whoami)'
# site prologue
set +u
module load python/3.11
source /shared/venvs/pairio/bin/activate
set -u
WATCHER_FLAGS="-I"; if [ -r /proc/self/stat ]; then WATCHER_FLAGS="-I -S"; fi
"$PYTHON" $WATCHER_FLAGS -c 'import importlib.util as u, sys; s = u.spec_from_file_location("pairio_watch", sys.argv.pop(1)); m = u.module_from_spec(s); sys.modules[s.name] = m; s.loader.exec_module(m); sys.exit(m.main())' "$JOB_DIR/pairio_watch.py" --job-dir "$JOB_DIR" --time-sec 61 --memory-gb 1.1 --num-cpus 4 '--pass-env=SLURM_*' --pass-env=HDF5_USE_FILE_LOCKING --pass-env=LAB_NOTE --gpus "${CUDA_VISIBLE_DEVICES:-}" -- python /apps/main.py
exit $?
