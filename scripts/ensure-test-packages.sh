#!/usr/bin/env bash
# Install the distribution packages the test suite drives for real: Slurm (slurmctld, slurmd,
# slurmdbd, the client commands and munge) for the Slurm bridge, OpenSSH's server for the SSH bridge,
# and Chromium for the web UI's browser tests. Nothing is started here: the tests start a
# throw-away Slurm cluster and sshd of their own on 127.0.0.1 and stop them afterwards.
# Works on Debian 12 (Slurm 22.05) and Debian 13 (Slurm 24.11). Skips what is installed.
set -euo pipefail

need=()
command -v slurmctld >/dev/null 2>&1 || need+=(slurmctld)
command -v slurmd >/dev/null 2>&1 || need+=(slurmd)
command -v sbatch >/dev/null 2>&1 || need+=(slurm-client)
command -v munged >/dev/null 2>&1 || [ -x /usr/sbin/munged ] || need+=(munge)
[ -x /usr/sbin/slurmdbd ] || need+=(slurmdbd)
[ -x /usr/sbin/sshd ] || need+=(openssh-server)
command -v ssh-keygen >/dev/null 2>&1 || need+=(openssh-client)
[ -x /usr/bin/chromium ] || need+=(chromium)

if [ ${#need[@]} -gt 0 ]; then
  if [ "$(id -u)" != 0 ]; then
    echo "ensure-test-packages: missing ${need[*]}; run as root or install them: apt-get install -y ${need[*]}" >&2
    exit 1
  fi
  echo "ensure-test-packages: installing ${need[*]} from the distribution's packages"
  export DEBIAN_FRONTEND=noninteractive
  apt-get update -qq
  # policy-rc.d may refuse to start the daemons: that is wanted, the tests start their own
  apt-get install -y -qq --no-install-recommends "${need[@]}" >/dev/null
fi
