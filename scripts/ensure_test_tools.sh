#!/usr/bin/env bash
# Installs what the tests need beyond the venv: Debian's Chromium for the browser tests
# (Playwright cannot download its own browser here) and git for the pipeline tests.
# Without root or password-less sudo it only says what is missing: those tests then skip.
set -uo pipefail

missing=()
[ -x /usr/bin/chromium ] || missing+=(chromium)
command -v git >/dev/null 2>&1 || missing+=(git)
[ ${#missing[@]} -eq 0 ] && exit 0

if [ "$(id -u)" -eq 0 ]; then
  sudo=()
elif command -v sudo >/dev/null 2>&1 && sudo -n true 2>/dev/null; then
  sudo=(sudo -n)
else
  echo "note: ${missing[*]} missing and no root or sudo to install it: the tests that need it will skip" >&2
  exit 0
fi

echo "installing ${missing[*]} with apt-get ..."
export DEBIAN_FRONTEND=noninteractive
if ! { "${sudo[@]}" apt-get update -qq && "${sudo[@]}" apt-get install -y -qq "${missing[@]}" >/dev/null; }; then
  echo "warning: could not install ${missing[*]}: the tests that need it will skip" >&2
fi
exit 0
