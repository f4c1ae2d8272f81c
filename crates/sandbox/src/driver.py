# The interpreter loop of a sandbox worker (reasonlab-sandbox). It runs inside the sandbox's
# limits; the parent speaks to it over private copies of stdin and stdout, and points the real
# fds 0, 1 and 2 at /dev/null so that user code can neither read the requests nor write into
# the replies with print() or os.write(1, ...).
#
# Frames: a 4-byte big-endian length, then UTF-8 JSON.
#   request {"code": str, "cpu": seconds, "max_output": bytes, "echo_last": bool, "fresh": bool}
#           (fresh: a new namespace and an emptied working directory first: a new session)
#   reply   {"stdout", "stderr", "exit_code", "truncated", "stopped", "threads"}
import json
import sys

# Started without `site` (-S, faster); the parent passes the interpreter's module path.
sys.path[:] = json.loads(sys.argv[1])

import io  # noqa: E402
import os  # noqa: E402
import resource  # noqa: E402
import struct  # noqa: E402
import threading  # noqa: E402

_IN = os.fdopen(os.dup(0), "rb", buffering=0)
_OUT = os.fdopen(os.dup(1), "wb", buffering=0)
_NULL = os.open(os.devnull, os.O_RDWR)
for _fd in (0, 1, 2):
    os.dup2(_NULL, _fd)
_WORKDIR = os.getcwd()


def _read_exact(n):
    buf = b""
    while len(buf) < n:
        chunk = _IN.read(n - len(buf))
        if not chunk:
            sys.exit(0)
        buf += chunk
    return buf


def _recv():
    (n,) = struct.unpack(">I", _read_exact(4))
    return json.loads(_read_exact(n).decode("utf-8"))


def _send(obj):
    data = json.dumps(obj).encode("utf-8")
    _OUT.write(struct.pack(">I", len(data)) + data)


class _Capped(io.TextIOBase):
    """A text stream that keeps the first `cap` bytes written to it."""

    def __init__(self, cap):
        self.cap = cap
        self.parts = []
        self.size = 0
        self.truncated = False

    def writable(self):
        return True

    def write(self, s):
        if not isinstance(s, str):
            raise TypeError("write() argument must be str, not " + type(s).__name__)
        if self.truncated:
            return len(s)
        room = self.cap - self.size
        # At most `room` characters are encoded: a huge string costs no second copy.
        data = s[:room].encode("utf-8", "replace")
        if len(s) > room or len(data) > room:
            data = data[:room]
            self.truncated = True
        self.parts.append(data)
        self.size += len(data)
        return len(s)

    def text(self):
        return b"".join(self.parts).decode("utf-8", "replace")


def _user_traceback(exc):
    import traceback

    tb = exc.__traceback__
    # Drop the driver's own frames: keep those of the user's cell.
    while tb is not None and tb.tb_frame.f_code.co_filename != "<cell>":
        tb = tb.tb_next
    return "".join(traceback.format_exception(type(exc), exc, tb))


def _cpu_used():
    r = resource.getrusage(resource.RUSAGE_SELF)
    return r.ru_utime + r.ru_stime


def _run(ns, req):
    out = _Capped(req.get("max_output", 65536))
    err = _Capped(req.get("max_output", 65536))
    cpu = req.get("cpu")
    if cpu:
        _, hard = resource.getrlimit(resource.RLIMIT_CPU)
        soft = int(_cpu_used()) + int(cpu) + 1
        if hard != resource.RLIM_INFINITY:
            soft = min(soft, hard)
        resource.setrlimit(resource.RLIMIT_CPU, (soft, hard))
    exit_code, stopped = 0, None
    sys.stdout, sys.stderr = out, err
    try:
        last = None
        if req.get("echo_last"):
            import ast

            tree = ast.parse(req["code"], "<cell>", "exec")
            if tree.body and isinstance(tree.body[-1], ast.Expr):
                last = ast.Expression(tree.body.pop().value)
            code = compile(tree, "<cell>", "exec")
        else:
            code = compile(req["code"], "<cell>", "exec")
        exec(code, ns)
        if last is not None:
            value = eval(compile(last, "<cell>", "eval"), ns)
            if value is not None:
                print(repr(value))
    except SystemExit as e:
        code = e.code
        if code is None:
            exit_code = 0
        elif isinstance(code, int):
            exit_code = code
        else:
            print(code, file=err)
            exit_code = 1
    except MemoryError:
        exit_code, stopped = 1, "memory"
        err.write("MemoryError: the sandbox's memory limit was reached\n")
    except BaseException as e:  # noqa: BLE001 - every user error is reported, none kills the loop
        exit_code = 1
        try:
            err.write(_user_traceback(e))
        except MemoryError:
            err.write(type(e).__name__ + "\n")
    finally:
        sys.stdout, sys.stderr = sys.__stdout__, sys.__stderr__
        sys.stdin = sys.__stdin__
    truncated = out.truncated or err.truncated
    if stopped is None and truncated:
        stopped = "output"
    return {
        "stdout": out.text(),
        "stderr": err.text(),
        "exit_code": exit_code,
        "truncated": truncated,
        "stopped": stopped,
        # A thread still running would run on into the next session: the parent retires the
        # interpreter instead.
        "threads": threading.active_count(),
    }


def _empty_workdir():
    import shutil

    os.chdir(_WORKDIR)
    for name in os.listdir(_WORKDIR):
        path = os.path.join(_WORKDIR, name)
        if os.path.isdir(path) and not os.path.islink(path):
            shutil.rmtree(path, ignore_errors=True)
        else:
            try:
                os.unlink(path)
            except OSError:
                pass


def _fresh():
    return {"__name__": "__main__", "__builtins__": __builtins__}


def main():
    preloaded = []
    for name in sys.argv[2:]:
        try:
            __import__(name)
            preloaded.append(name)
        except Exception:  # noqa: BLE001 - a missing optional module is not an error
            pass
    _send({"ready": True, "python": sys.version.split()[0], "preloaded": preloaded})
    ns = _fresh()
    while True:
        req = _recv()
        if req.get("fresh"):
            ns = _fresh()
            _empty_workdir()
        _send(_run(ns, req))


main()
