#!/usr/bin/env bash
# Install the container engines the tests drive for real: podman with runc (crun refuses hybrid
# cgroups, and podman does not pull runc in), busybox-static for the offline test image, and a docker
# CLI (the tests point it at podman's Docker-compatible socket). Nothing in /etc is configured: the
# tests write a containers.conf of their own (tests/container_support.py). Skips what is installed.
# With CI=true a missing engine is an error, so container tests never skip silently in CI.
set -euo pipefail

need=()
command -v podman >/dev/null 2>&1 || need+=(podman)
command -v runc >/dev/null 2>&1 || [ -x /usr/sbin/runc ] || need+=(runc)
[ -x /bin/busybox ] || command -v busybox >/dev/null 2>&1 || need+=(busybox-static)
if ! command -v docker >/dev/null 2>&1; then
  # Debian 12 ships the CLI in docker.io; newer releases split it out as docker-cli
  if apt-cache show docker-cli >/dev/null 2>&1; then need+=(docker-cli); else need+=(docker.io); fi
fi

if [ ${#need[@]} -gt 0 ]; then
  if [ "$(id -u)" != 0 ]; then
    echo "ensure-container-engine: missing ${need[*]}; run as root or install them: apt-get install -y ${need[*]}" >&2
    exit 1
  fi
  echo "ensure-container-engine: installing ${need[*]} from the distribution's packages"
  export DEBIAN_FRONTEND=noninteractive
  apt-get update -qq
  if ! apt-get install -y -qq --no-install-recommends "${need[@]}" >/dev/null; then
    echo "ensure-container-engine: could not install ${need[*]}" >&2
    [ "${CI:-}" = "true" ] && exit 1
    echo "ensure-container-engine: the container tests will be skipped" >&2
  fi
fi
if [ "${CI:-}" = "true" ]; then
  for tool in podman runc busybox docker; do
    command -v "$tool" >/dev/null 2>&1 || [ -x "/usr/sbin/$tool" ] || { echo "ensure-container-engine: $tool is missing (CI=true)" >&2; exit 1; }
  done
fi
