#!/usr/bin/env bash
# Installs Debian packages the platform needs beyond the venv, each given as PACKAGE:COMMAND
# (installed when COMMAND is missing; a COMMAND naming a shared library, like libgomp.so.1, is
# looked up with ldconfig, and an absolute path may hold a glob, like PostgreSQL's
# /usr/lib/postgresql/*/bin/initdb): bubblewrap for the kernel sandbox (make up, make demo, make test),
# libgomp1 for LightGBM in the kernel, Chromium for the browser tests (Playwright cannot
# download its own browser here), git for the pipelines, prometheus (and its promtool) for the
# monitoring test and `make up MONITORING=1`, wrk for the serving benchmark (bench/serving) and
# its test, postgresql for the tests' private clusters. Without root or password-less sudo it only says what is
# missing: the browser tests then skip, and workers refuse to run notebooks until bubblewrap
# is installed (or KERNEL_SANDBOX=off is set on purpose).
set -uo pipefail

missing=()
for spec in "$@"; do
  package=${spec%%:*}
  command=${spec#*:}
  if [[ $command == *.so* ]]; then
    ldconfig -p 2>/dev/null | grep -qF "$command " || missing+=("$package")
  elif [[ $command == /* ]]; then
    compgen -G "$command" >/dev/null || missing+=("$package")
  else
    command -v "$command" >/dev/null 2>&1 || missing+=("$package")
  fi
done
[ ${#missing[@]} -eq 0 ] && exit 0

if [ "$(id -u)" -eq 0 ]; then
  sudo=()
elif command -v sudo >/dev/null 2>&1 && sudo -n true 2>/dev/null; then
  sudo=(sudo -n)
else
  echo "note: ${missing[*]} missing and no root or sudo to install it (see README: Development)" >&2
  exit 0
fi

echo "installing ${missing[*]} with apt-get ..."
export DEBIAN_FRONTEND=noninteractive
if ! { "${sudo[@]}" apt-get update -qq && "${sudo[@]}" apt-get install -y -qq "${missing[@]}" >/dev/null; }; then
  echo "warning: could not install ${missing[*]}" >&2
fi
exit 0
