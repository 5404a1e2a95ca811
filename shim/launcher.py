"""Write the shim's launchers: `python -m wasm_oci.shim.launcher DIR`.

containerd runs `start` and `delete` for every container and waits for both (`delete` is on
the critical path of every stop); their logic is well under a millisecond, Python's start-up
is not. So the executable containerd runs, DIR/containerd-shim-wasm-oci-v1, is a POSIX sh
script that answers the common cases from files the daemon keeps:
  start   the task's group has a route (group.py) whose inputs match this call exactly and
          its daemon is alive with its door open (lifetime.py `Door`): take a reservation
          in the door, print the daemon's answer;
  delete  the daemon left the DeleteResponse in the bundle at the Delete RPC (as printf
          escapes, control.printable): print it.
Anything else (no daemon, a daemon leaving or dead, unusual flags, other actions) goes to
DIR/containerd-shim-wasm-oci-v1.py, the Python launcher, which runs `python -S` with this
installation's package folders on sys.path (pip's console script would pay for `site` too).
The daemon `start` spawns runs with `site` as usual. Rewrite both after moving the installation.
"""

from __future__ import annotations

import os
import shlex
import sys
from pathlib import Path

import wasm_oci
import wasm_oci.shim
from wasm_oci.shim.main import NAME, STDIN_HEX
from wasm_oci.shim.start import ROUTE_FORMAT

PYTHON_NAME = f"{NAME}.py"

PYTHON_TEMPLATE = """#!{python} -S
# {name}: Python launcher written by `python -m wasm_oci.shim.launcher` (runs without site).
import sys
sys.path[:0] = {roots!r}
import wasm_oci
wasm_oci.__path__.extend({extra!r})
from wasm_oci.shim.main import main
main()
"""

# Every read and write below is a shell builtin: the fast `start` execs only cat(1) (the spec)
# and, when containerd passes runtime options (stdin other than /dev/null, any byte), od(1); the
# fast `delete` execs nothing.
# Errors inside `fast` go to /dev/null: containerd reads start's stdout and stderr together.
SH_TEMPLATE = r"""#!/bin/sh
# {name}: written by `python -m wasm_oci.shim.launcher` (see wasm_oci/shim/launcher.py).
# Answers start and delete from the files a live shim daemon keeps; hands the rest to Python.
set -f
python={python}
script={script}

alive() {{  # pid, start time: that process still runs (not a zombie, not a reused pid)
	case $1 in '' | *[!0-9]*) return 1 ;; esac
	IFS= read -r stat <"/proc/$1/stat" || return 1
	set -- "$2" ${{stat##*) }}
	[ "$2" != Z ] && [ "$2" != X ] && [ "${{21}}" = "$1" ]
}}

start() {{
	[ -n "$address" ] && [ -n "$publish" ] || return 1
	spec=$(cat config.json) || return 1
	route=../{route_prefix}none
	case $spec in
	*'"io.kubernetes.cri.sandbox-id"'*)
		rest=${{spec#*'"io.kubernetes.cri.sandbox-id"'}}
		case $rest in ':"'*'"'*) ;; *) return 1 ;; esac
		rest=${{rest#':"'}}
		sandbox=${{rest%%'"'*}}
		case $sandbox in
		'') ;;
		*[!A-Za-z0-9_.-]*) return 1 ;;
		*) route=../{route_prefix}pod-$sandbox ;;
		esac
		;;
	esac
	{{
		IFS= read -r format && IFS= read -r r_ns && IFS= read -r r_address && IFS= read -r r_publish &&
			IFS= read -r r_env && IFS= read -r r_options && IFS= read -r r_source && IFS= read -r r_absent &&
			IFS= read -r dir && IFS= read -r version
	}} <"$route" || return 1
	[ "$format" = '{route_format}' ] && [ "$r_ns" = "$ns" ] && [ "$r_address" = "$address" ] &&
		[ "$r_publish" = "$publish" ] && [ "$r_env" = "${{WASM_OCI_SHIM_CONFIG-}}" ] || return 1
	# A restarted containerd (new socket), a replaced binary or an edited config: ask Python.
	[ "$route" -nt "$address" ] && [ "$route" -nt "$publish" ] || return 1
	if [ -n "$r_source" ]; then [ "$route" -nt "$r_source" ] || return 1; fi
	if [ -n "$r_absent" ]; then [ ! -e "$r_absent" ] || return 1; fi
	if [ /dev/stdin -ef /dev/null ]; then  # containerd's stdin when it has no runtime options
		options=
	else
		options=$(od -An -v -tx1) || return 1
		hexed=1
	fi
	set -- $options
	[ "$*" = "$r_options" ] || return 1
	# Reserve first, then check the door: a leaving daemon closes the door, then looks for
	# reservations (lifetime.py), so one of the two sees the other.
	reservation=$dir/reserved/$ns@$id
	printf '' >"$reservation" || return 1
	if {{ read -r who && IFS= read -r answer; }} <"$dir/open" && alive "${{who% *}}" "${{who#* }}" &&
		printf '%s' "$dir/control.sock" >{bundle_record}; then
		printf '{{"version":%s,%s' "$version" "$answer"
		return
	fi
	rm -f "$reservation"
	return 1
}}

delete() {{
	record=${{bundle:-.}}/{deleted_record}
	[ -f "$record" ] && IFS= read -r escaped <"$record" || return 1
	case $escaped in *[!0-7\\]*) return 1 ;; esac
	printf "$escaped"
}}

fast() {{
	while [ $# -gt 1 ]; do
		case $1 in
		-namespace) ns=$2 ;;
		-address) address=$2 ;;
		-publish-binary) publish=$2 ;;
		-id) id=$2 ;;
		-bundle) bundle=$2 ;;
		-debug)
			shift
			continue
			;;
		*) return 1 ;;
		esac
		shift 2
	done
	case $ns in '' | *[!A-Za-z0-9_.-]*) return 1 ;; esac
	case $id in '' | *[!A-Za-z0-9_.-]*) return 1 ;; esac
	case $1 in
	start) [ $# -eq 1 ] && start ;;
	delete) [ $# -eq 1 ] && delete ;;
	*) return 1 ;;
	esac
}}

ns= address= publish= id= bundle= hexed= options=
fast "$@" 2>/dev/null && exit 0
if [ -n "$hexed" ]; then  # start's stdin is spent: hand the options over in hex
	export {stdin_hex}=1
	exec "$python" -S "$script" "$@" <<EOF
$options
EOF
fi
exec "$python" -S "$script" "$@"
"""


def python_launcher_text(python: str = sys.executable) -> str:
    package_dirs = [os.path.abspath(p) for p in wasm_oci.__path__]
    roots = sorted({os.path.dirname(p) for p in package_dirs})
    # An editable install maps wasm_oci.shim (and its siblings) to folders outside wasm_oci/.
    extra = sorted({os.path.dirname(os.path.abspath(p)) for p in wasm_oci.shim.__path__} - set(package_dirs))
    return PYTHON_TEMPLATE.format(python=python, name=NAME, roots=roots, extra=extra)


def sh_launcher_text(script: Path, python: str = sys.executable) -> str:
    from wasm_oci.shim import control, group

    return SH_TEMPLATE.format(
        name=NAME,
        python=shlex.quote(python),
        script=shlex.quote(str(script)),
        route_prefix=group.ROUTE_PREFIX,
        route_format=ROUTE_FORMAT,
        bundle_record=control.BUNDLE_RECORD,
        deleted_record=control.DELETED_RECORD,
        stdin_hex=STDIN_HEX,
    )


def _install(path: Path, text: str) -> None:
    temporary = path.with_name(f".{path.name}.tmp")
    temporary.write_text(text)
    temporary.chmod(0o755)
    temporary.replace(path)


def write(directory: Path) -> Path:
    """Write both launchers into `directory`; the path of the one containerd runs."""
    directory.mkdir(parents=True, exist_ok=True)
    script = directory.absolute() / PYTHON_NAME
    _install(script, python_launcher_text())
    path = directory / NAME
    _install(path, sh_launcher_text(script))
    return path


if __name__ == "__main__":
    if len(sys.argv) != 2:
        sys.exit(f"usage: {sys.executable} -m wasm_oci.shim.launcher DIR")
    print(write(Path(sys.argv[1])))
