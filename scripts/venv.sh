# Sourced by the other scripts: creates .venv on first use and installs the project into it
# with the exact versions of constraints.txt; re-installs only when setup.py or the
# constraints change. Leaves the venv's bin/ first on PATH.
set -euo pipefail
repo_root="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
venv="${VGGFACE_EMOTION_VENV:-$repo_root/.venv}"
# The Pythons that TensorFlow 2.21, Beam 2.77 and the other pins ship wheels for (setup.py's
# python_requires): the first that runs, unless $PYTHON names one.
accepted="3.11 3.12 3.13"
runs_accepted() {
  "$1" -c 'import sys; sys.exit(0 if f"{sys.version_info[0]}.{sys.version_info[1]}" in sys.argv[1].split() else 1)' "$accepted" 2>/dev/null
}
python_bin=""
for candidate in ${PYTHON:-python3.11 python3.12 python3.13 python3}; do
  if runs_accepted "$candidate"; then python_bin="$candidate"; break; fi
done
if [ -z "$python_bin" ]; then
  echo "vggface-emotion needs Python ${accepted// /, } (TensorFlow 2.21 and Apache Beam 2.77 ship no wheels for others);" >&2
  echo "found none of them${PYTHON:+ (PYTHON=$PYTHON)}. Install one (e.g. pyenv install 3.11), or set PYTHON=/path/to/python3.11." >&2
  exit 2
fi

if [ ! -x "$venv/bin/python" ]; then
  echo "Creating virtualenv $venv ($("$python_bin" --version))"
  "$python_bin" -m venv "$venv"
fi
stamp="$venv/.installed-$(cat "$repo_root/setup.py" "$repo_root/constraints.txt" | sha256sum | cut -c1-16)"
if [ ! -f "$stamp" ]; then
  echo "Installing vggface-emotion and its pinned dependencies into $venv (first run: a few minutes)"
  "$venv/bin/python" -m pip install --quiet --upgrade pip
  "$venv/bin/python" -m pip install --quiet -c "$repo_root/constraints.txt" -e "$repo_root[dev,cloud,preprocess,mobile,web]"
  rm -f "$venv"/.installed-*
  touch "$stamp"
fi
export PATH="$venv/bin:$PATH"
cd "$repo_root"
