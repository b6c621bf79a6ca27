# Sourced by the other scripts: creates .venv on first use and installs the project into it
# with the exact versions of constraints.txt; re-installs only when setup.py or the
# constraints change. Leaves the venv's bin/ first on PATH.
set -euo pipefail
repo_root="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
venv="${VGGFACE_EMOTION_VENV:-$repo_root/.venv}"
python_bin="${PYTHON:-python3.11}"
command -v "$python_bin" >/dev/null || python_bin=python3

if [ ! -x "$venv/bin/python" ]; then
  echo "Creating virtualenv $venv ($("$python_bin" --version))"
  "$python_bin" -m venv "$venv"
fi
stamp="$venv/.installed-$(cat "$repo_root/setup.py" "$repo_root/constraints.txt" | sha256sum | cut -c1-16)"
if [ ! -f "$stamp" ]; then
  echo "Installing vggface-emotion and its pinned dependencies into $venv (first run: a few minutes)"
  "$venv/bin/python" -m pip install --quiet --upgrade pip
  "$venv/bin/python" -m pip install --quiet -c "$repo_root/constraints.txt" -e "$repo_root[dev,cloud]"
  rm -f "$venv"/.installed-*
  touch "$stamp"
fi
export PATH="$venv/bin:$PATH"
cd "$repo_root"
