"""Running a user's handler file as `__main__`, for `worker-kit dev` and `worker-kit work`.

The file runs exactly as `python handler.py ARGS` would (its directory importable, ARGS in
sys.argv), so a file that calls `worker_kit.start()` works as is. A file that fails to load
gets one line on stderr saying what is wrong, not a traceback.
"""

from __future__ import annotations

import runpy
import sys
import traceback
from pathlib import Path

EXIT_USAGE = 2


def fail(prog: str, message: str) -> int:
    print(f"{prog}: error: {message}", file=sys.stderr, flush=True)
    return EXIT_USAGE


def run_file(path: Path, argv: list[str], prog: str) -> int | None:
    """Run `path` as __main__ with `argv`: its exit code if it exited (start() does), None if
    it simply returned, or 2 with one line on stderr if it failed to load."""
    saved_argv, saved_path = sys.argv, list(sys.path)
    sys.argv = [str(path), *argv]
    sys.path.insert(0, str(path.resolve().parent))
    try:
        runpy.run_path(str(path), run_name="__main__")
    except SystemExit as exc:
        return exit_code(exc)
    except KeyboardInterrupt:
        print(f"{prog}: interrupted", file=sys.stderr)
        return 130
    except SyntaxError as exc:
        where = f"{exc.filename}, line {exc.lineno}" if exc.filename else str(path)
        return fail(prog, f"{where}: syntax error: {exc.msg}; fix the file and run again")
    except ImportError as exc:
        where = _origin(exc, path)
        return fail(prog, f"{path} failed to import: {exc} ({where}); install the module or fix the import")
    except Exception as exc:
        return fail(prog, f"{path} raised {type(exc).__name__} while loading: {exc} ({_origin(exc, path)})")
    finally:
        sys.argv = saved_argv
        sys.path[:] = saved_path
    return None


def _origin(exc: BaseException, path: Path) -> str:
    """The innermost frame of the user's own file, else the innermost frame: file:line."""
    frames = traceback.extract_tb(exc.__traceback__)
    mine = [f for f in frames if Path(f.filename).resolve() == path.resolve()]
    frame = (mine or frames or [None])[-1]
    if frame is None:
        return str(path)
    return f"at {frame.filename}:{frame.lineno}"


def exit_code(exc: SystemExit) -> int:
    if exc.code is None:
        return 0
    if isinstance(exc.code, int):
        return exc.code
    print(exc.code, file=sys.stderr)
    return 1
