# Sourced by tests/run.sh and tests/check.sh: the project's private virtualenv, made and
# brought up to date with the package and its test extras (the checks' tools included).
if [ ! -x .venv/bin/python ]; then
  python3 -m venv .venv
fi
.venv/bin/python -m pip install -q --disable-pip-version-check -e '.[test]'
