"""The trusted supervisor of forgetless.data.sandbox, run as a script: `python -I -S
sandbox_supervisor.py CONFIG` (standard library only, empty environment, the job on stdin). It sets
up the view of the isolation level it is given, forks the child that defines and runs the untrusted
code, waits for it to a deadline, kills every process the code left behind and prints one JSON line.
What each level does and guarantees: forgetless.data.sandbox's docstring and docs/guarantees.md.
Kept apart from the caller side so that this file imports nothing outside the standard library.
"""

from __future__ import annotations

import json
import os
import select
import signal
import sys
import time

NOBODY = 65534
MAX_OUTPUT = 1 << 20  # bytes of the code's stdout kept; the rest is dropped
NPROC = 64  # RLIMIT_NPROC of the code (it counts per uid, so a fork bomb stops there)
SCRATCH_MB = 16
_UNSHARE_FLAGS = ["--mount", "--net", "--pid", "--ipc", "--fork", "--kill-child", "--mount-proc"]


# ---------------------------------------------------------------- the process tree (both sides)

def _descendants(root: int) -> list[int]:
    """Pids below `root`, from one scan of /proc (ppid links)."""
    children: dict[int, list[int]] = {}
    for name in os.listdir("/proc"):
        if not name.isdigit():
            continue
        try:
            with open(f"/proc/{name}/stat", "rb") as fh:
                ppid = int(fh.read().rsplit(b")", 1)[1].split()[1])
        except (OSError, IndexError, ValueError):
            continue  # gone since listdir
        children.setdefault(ppid, []).append(int(name))
    found, todo = [], [root]
    while todo:
        for pid in children.get(todo.pop(), ()):
            found.append(pid)
            todo.append(pid)
    return found


def _kill_tree(root: int, seconds: float = 2.0) -> None:
    """SIGKILL everything below `root` until nothing is left. Run by a subreaper (or on one that
    is alive), orphans reparent to it, so a setsid() grandchild is still found. Each pass kills
    what it sees; the children of a killed process reappear below `root` in the next pass."""
    if not os.path.isdir("/proc/self"):
        return  # not Linux: the process group kill of the caller is all there is
    end = time.monotonic() + seconds
    while time.monotonic() < end:
        found = _descendants(root)
        if not found:
            return
        for pid in found:
            try:
                os.kill(pid, signal.SIGKILL)
            except OSError:
                pass
        while root == os.getpid():  # reap our zombies, or they are found again forever
            try:
                if os.waitpid(-1, os.WNOHANG)[0] == 0:
                    break
            except ChildProcessError:
                break
        time.sleep(0.002)


# ---------------------------------------------------------------- the supervisor (script side)

def _libc():
    import ctypes

    return ctypes, ctypes.CDLL(None, use_errno=True)


def _read_only_view(scratch_uid: int) -> None:
    """In our own mount namespace: every mount read-only and nosuid, then a small tmpfs on /tmp
    (the scratch dir) and an empty read-only /run (host sockets live there)."""
    ctypes, libc = _libc()

    class MountAttr(ctypes.Structure):
        _fields_ = [(f, ctypes.c_uint64) for f in ("set", "clr", "propagation", "userns_fd")]

    attr = MountAttr(0x1 | 0x2, 0, 0, 0)  # MOUNT_ATTR_RDONLY | MOUNT_ATTR_NOSUID
    # mount_setattr(AT_FDCWD, "/", AT_RECURSIVE, ...) is syscall 442 on every architecture.
    if libc.syscall(ctypes.c_long(442), ctypes.c_int(-100), b"/", ctypes.c_uint(0x8000),
                    ctypes.byref(attr), ctypes.c_size_t(ctypes.sizeof(attr))) != 0:
        raise OSError(ctypes.get_errno(), "mount_setattr(/, read-only, recursive)")
    opts = f"size={SCRATCH_MB}m,nr_inodes=4096,mode=0700,uid={scratch_uid},gid={scratch_uid}"
    mounts = [(b"/tmp", 2 | 4, opts)]  # MS_NOSUID | MS_NODEV
    if os.path.isdir("/run"):
        mounts.append((b"/run", 1 | 2 | 4 | 8, "size=4k,mode=0755"))  # + MS_RDONLY, MS_NOEXEC
    for target, flags, data in mounts:
        if libc.mount(b"tmpfs", target, b"tmpfs", ctypes.c_ulong(flags), data.encode()) != 0:
            raise OSError(ctypes.get_errno(), f"mount tmpfs on {target.decode()}")


def _keep_stdlib_reachable() -> None:
    """The interpreter may live where uid 65534 cannot pass (e.g. ~root/.pyenv). Open each
    import directory now, while we still can, and import through /proc/self/fd/N: that link
    skips the permission checks on the directories above, not those inside."""
    if not os.path.isdir("/proc/self/fd"):
        return
    for i, entry in enumerate(sys.path):
        if os.path.isdir(entry):
            _IMPORT_FDS[entry] = f"/proc/self/fd/{os.open(entry, os.O_RDONLY | os.O_DIRECTORY)}"
            sys.path[i] = _IMPORT_FDS[entry]
    _repath(_IMPORT_FDS)


_IMPORT_FDS: dict[str, str] = {}  # import directory -> /proc/self/fd/N (see above)


def _repath(moves: dict[str, str]) -> None:
    """sys.path and the __path__ of packages already imported (encodings, json), each `old`
    prefix replaced by `new`."""
    sys.path[:] = [next((new + p[len(old):] for old, new in moves.items()
                         if p == old or p.startswith(old + os.sep)), p) for p in sys.path]
    for module in list(sys.modules.values()):
        path = getattr(module, "__path__", None)
        if isinstance(path, list):
            for old, new in moves.items():
                path[:] = [new + p[len(old):] if p == old or p.startswith(old + os.sep) else p for p in path]
    sys.path_importer_cache.clear()


def _close_inherited_fds() -> None:
    """In the code's process, under its own uid: every descriptor but stdin, stdout (the pipe) and
    stderr is closed, except an import directory that this uid cannot reach by its path (e.g. an
    interpreter under ~root): without it no module could be imported. What it opens is that
    directory's tree, which `python -I` reads anyway."""
    keep = set()
    back = {}
    for old, new in _IMPORT_FDS.items():
        fd = int(new.rsplit("/", 1)[1])
        if os.access(old, os.R_OK | os.X_OK):
            back[new] = old  # reachable: import by the path, close the descriptor
        else:
            keep.add(fd)
    _repath(back)
    try:
        open_fds = [int(n) for n in os.listdir("/proc/self/fd")]
    except OSError:
        open_fds = list(range(3, 1024))
    for fd in open_fds:
        if fd > 2 and fd not in keep:
            try:
                os.close(fd)
            except OSError:
                pass  # the listing's own descriptor, already closed


def _drop_privileges(to_nobody: bool) -> None:
    """No capability can ever come back: empty bounding set, then nobody (or zero caps in a user
    namespace), then no_new_privs so no setuid binary raises us again."""
    linux = sys.platform.startswith("linux")
    if linux:
        ctypes, libc = _libc()
        cap = 0
        while libc.prctl(24, cap, 0, 0, 0) == 0:  # PR_CAPBSET_DROP until EINVAL (past the last)
            cap += 1
    if to_nobody:
        os.setgroups([])
        os.setgid(NOBODY)
        os.setuid(NOBODY)
    if not linux:
        return
    header = (ctypes.c_uint32 * 2)(0x20080522, 0)  # _LINUX_CAPABILITY_VERSION_3, this process
    libc.capset(header, (ctypes.c_uint32 * 6)())  # effective, permitted, inheritable: none
    libc.prctl(38, 1, 0, 0, 0)  # PR_SET_NO_NEW_PRIVS


def _child(job: dict, cfg: dict, write_fd: int) -> None:
    """The forked process that runs the code. Never returns."""
    try:
        import resource

        os.dup2(write_fd, 1)  # our stdout is the supervisor's pipe, not the caller's
        devnull = os.open(os.devnull, os.O_RDWR)
        os.dup2(devnull, 0)
        os.dup2(devnull, 2)
        for fd in (write_fd, devnull):
            os.close(fd)
        if sys.platform.startswith("linux"):
            _libc()[1].prctl(1, signal.SIGKILL, 0, 0, 0)  # PR_SET_PDEATHSIG: die with the supervisor
        os.chdir(cfg["scratch"])
        _drop_privileges(cfg["to_nobody"])
        _close_inherited_fds()
        mem = cfg["memory_mb"] * 1024 * 1024
        for res, value in ((resource.RLIMIT_CPU, cfg["cpu_s"]), (resource.RLIMIT_AS, mem),
                           (resource.RLIMIT_FSIZE, cfg["fsize"]), (resource.RLIMIT_NOFILE, 32),
                           (resource.RLIMIT_CORE, 0), (resource.RLIMIT_NPROC, NPROC)):
            hard = resource.getrlimit(res)[1]
            value = value if hard == resource.RLIM_INFINITY else min(value, hard)
            resource.setrlimit(res, (value, value))
    except BaseException as err:
        os.write(1, json.dumps({"setup_error": f"{type(err).__name__}: {err}"}).encode())
        os._exit(0)
    try:
        scope = {"__name__": "__sandbox__"}
        exec(compile(job["code"], "<generated>", "exec"), scope)
        fn = scope[job["entry"]]
    except BaseException as err:
        print(json.dumps({"error": type(err).__name__ + ": " + str(err)[:200]}), flush=True)
        os._exit(0)
    out = []
    for args, _ in job["tests"]:
        try:
            value = fn(*args)
            out.append({"ok": True, "value": json.loads(json.dumps(value))})
        except BaseException as err:
            out.append({"ok": False, "error": type(err).__name__})
    sys.stdout.write("\n" + json.dumps({"results": out}) + "\n")
    sys.stdout.flush()
    os._exit(0)


def _supervise(cfg: dict) -> None:
    """Script entry: set up the view, fork the code, wait to the deadline, kill the rest, report."""
    start = time.monotonic()
    job = json.loads(sys.stdin.read())
    linux = sys.platform.startswith("linux")
    report: dict = {"timeout": False}
    try:
        _keep_stdlib_reachable()  # before /tmp is covered, in case the interpreter lives there
        if cfg["namespaces"]:
            _read_only_view(NOBODY if cfg["to_nobody"] else 0)
        if linux:
            libc = _libc()[1]
            libc.prctl(4, 0, 0, 0, 0)  # PR_SET_DUMPABLE 0: code of our uid cannot ptrace us
            libc.prctl(36, 1, 0, 0, 0)  # PR_SET_CHILD_SUBREAPER: orphans stay below us
    except OSError as err:
        print(json.dumps({"setup_error": f"{err.strerror or err}: {err.filename or ''}"}))
        return
    read_fd, write_fd = os.pipe()
    pid = os.fork()
    if pid == 0:
        os.close(read_fd)
        _child(job, cfg, write_fd)
    os.close(write_fd)
    out, eof, status = bytearray(), False, None
    deadline = start + cfg["timeout"]
    while True:
        done, st = os.waitpid(pid, os.WNOHANG)
        if done:
            status = st
            break
        left = deadline - time.monotonic()
        if left <= 0:
            report["timeout"] = True
            break
        if eof:  # a closed pipe is always readable: sleep instead of spinning
            time.sleep(min(left, 0.005))
        elif select.select([read_fd], [], [], min(left, 0.05))[0]:
            chunk = os.read(read_fd, 1 << 16)
            eof = not chunk
            out += chunk[:max(0, MAX_OUTPUT - len(out))]
    _kill_tree(os.getpid())  # every writer of the pipe is gone after this
    while not eof and select.select([read_fd], [], [], 0.1)[0]:
        chunk = os.read(read_fd, 1 << 16)
        eof = not chunk
        out += chunk[:max(0, MAX_OUTPUT - len(out))]
    if status is not None:
        report["signal" if os.WIFSIGNALED(status) else "exit"] = (
            os.WTERMSIG(status) if os.WIFSIGNALED(status) else os.WEXITSTATUS(status))
    report["stdout"] = out.decode("utf-8", "replace")
    sys.stdout.write(json.dumps(report) + "\n")
    sys.stdout.flush()


if __name__ == "__main__":  # the supervisor, started by sandbox._run
    _supervise(json.loads(sys.argv[1]))
