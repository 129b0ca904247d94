# The warm parent: started by the agent through the ordinary sandbox (same tier, user, filter and
# limits as a cold run), as `python -c <this> <config json>`. It imports the build's modules once,
# then, for each run the agent sends on stdin (a SOCK_SEQPACKET socket), forks a child that becomes
# `python main.py`. The parent itself never runs user code: it only imports installed modules
# found under the build's prefix or the standard library, forks, waits and cleans up.
import sys

# Nothing is ever imported from the working directory (sys.path[0] of -c is the cwd).
sys.path[:] = [p for p in sys.path if p not in ("", ".")]

# What every child needs (run_main), imported once here rather than in each child: an import in
# a child costs milliseconds.
import atexit
import ctypes
import gc
import importlib
import importlib.machinery
import importlib.util
import json
import os
import signal
import socket
import threading
import time
import types

CONFIG = json.loads(sys.argv[1])
# Kept aside: the code may replace os._exit in its own process, which must still end there.
_exit = os._exit
CTL = socket.socket(fileno=0)
LIBC = ctypes.CDLL(None, use_errno=True)
PR_SET_DUMPABLE = 4
PR_SET_SECCOMP = 22
SECCOMP_MODE_FILTER = 2
KEYCTL_CLEAR = 7
KEY_SPEC_SESSION_KEYRING = -3
MODULES_FILE = ".envfabric-modules"
BASE_MODULES = frozenset()


def log(*args):
    print("warm:", *args, file=sys.stderr, flush=True)


def send(msg):
    CTL.send(json.dumps(msg).encode())


def prefixes():
    """The build's site-packages and the standard library: where preloaded modules may live (the
    paths as the interpreter sees them; a package linked into a cache is still the build's)."""
    import sysconfig

    paths = sysconfig.get_paths()
    out = {os.path.normpath(paths[k]) for k in ("stdlib", "platstdlib", "purelib", "platlib") if k in paths}
    for p in sys.path:
        if p.endswith("lib-dynload"):
            out.add(os.path.normpath(p))
    return sorted(out)


PREFIXES = prefixes()


def allowed(origin):
    """A module may be preloaded when its file lies under the build's prefix or the stdlib."""
    if origin in (None, "built-in", "frozen"):
        return True
    origin = os.path.normpath(os.path.abspath(origin))
    return any(origin == p or origin.startswith(p.rstrip("/") + "/") for p in PREFIXES)


def preload(names):
    done, failed = [], []
    for name in names:
        if not name.isidentifier() or name in sys.modules and name in done:
            continue
        try:
            spec = importlib.util.find_spec(name)
        except Exception as e:  # a broken package: logged, not fatal
            failed.append(name)
            log("find", name, type(e).__name__, e)
            continue
        if spec is None:
            continue
        locs = list(spec.submodule_search_locations or [])
        if not allowed(spec.origin) or not all(allowed(l) for l in locs):
            log("not preloading", name, "from", spec.origin)
            continue
        try:
            importlib.import_module(name)
            done.append(name)
        except BaseException as e:
            failed.append(name)
            log("import", name, type(e).__name__, e)
    return done, failed


def prctl(option, arg):
    if LIBC.prctl(option, ctypes.c_ulong(arg), 0, 0, 0) != 0:
        raise OSError(ctypes.get_errno(), "prctl %d" % option)


class SockFprog(ctypes.Structure):
    _fields_ = [("len", ctypes.c_ushort), ("filter", ctypes.c_char_p)]


def install_guard(prog):
    """The agent's extra system-call filter: the child cannot signal the parent (nor its group)."""
    if not prog:
        return
    n = len(prog) // 8
    buf = ctypes.create_string_buffer(prog, len(prog))
    fprog = SockFprog(n, ctypes.cast(buf, ctypes.c_char_p))
    if LIBC.prctl(PR_SET_SECCOMP, ctypes.c_ulong(SECCOMP_MODE_FILTER), ctypes.byref(fprog), 0, 0) != 0:
        raise OSError(ctypes.get_errno(), "install the run's signal guard")


def reseed():
    """Everything that would draw the same numbers in two children of one parent."""
    mods = sys.modules
    if "random" in mods:
        mods["random"].seed()
    np = mods.get("numpy")
    if np is not None and hasattr(np, "random"):
        try:
            np.random.seed()
        except Exception:
            pass
    tf = mods.get("tempfile")
    if tf is not None:
        tf.tempdir = None
        tf._name_sequence = None
    mp = mods.get("multiprocessing.process")
    if mp is not None:
        try:
            mp.current_process().authkey = os.urandom(32)
        except Exception:
            pass


def run_main(work):
    """Run main.py as `python main.py` would, and return the exit status."""
    path = os.path.join(work, "main.py")
    main = types.ModuleType("__main__")
    main.__file__ = path
    main.__builtins__ = __builtins__
    main.__cached__ = None
    main.__loader__ = importlib.machinery.SourceFileLoader("__main__", path)
    sys.modules["__main__"] = main
    sys.argv[:] = ["main.py"]
    if hasattr(sys, "orig_argv"):
        sys.orig_argv[:] = [sys.executable, "main.py"]
    sys.path.insert(0, work)
    code = 0
    try:
        with open(path, "rb") as f:
            source = f.read()
        exec(compile(source, path, "exec"), main.__dict__)
    except SystemExit as e:
        code = exit_code(e)
    except BaseException as e:
        # The traceback starts at main.py: this frame is the server's.
        e = e.with_traceback(e.__traceback__.tb_next)
        sys.excepthook(type(e), e, e.__traceback__)
        # Python ends an uncaught KeyboardInterrupt by SIGINT, as the shell expects.
        code = "SIGINT" if isinstance(e, KeyboardInterrupt) else 1
    # What Py_FinalizeEx does: join non-daemon threads, then the atexit handlers.
    try:
        threading._shutdown()
    except SystemExit as e:
        code = exit_code(e)
    except BaseException:
        pass
    try:
        atexit._run_exitfuncs()
    except BaseException:
        pass
    for stream in (sys.stdout, sys.stderr):
        try:
            if stream is not None:
                stream.flush()
        except Exception:
            if code == 0:
                code = 120
    return code


def exit_code(e):
    c = e.code
    if c is None:
        return 0
    if isinstance(c, int):
        return c & 0xFF
    try:
        print(c, file=sys.stderr)
    except Exception:
        pass
    return 1


def child(run_fd, arm):
    """A child forked ahead of its run ("armed"): it says hello (the agent learns its host pid and
    puts it in the run's cgroup meanwhile), does everything that does not depend on the code (its
    working directory and environment, fresh random state, the guard against signalling the
    parent), then waits for the run itself: its stdout and stderr, main.py being in place. What a
    fork, a cgroup join and this set-up cost is paid before the run arrives."""
    os.setsid()
    run = socket.socket(fileno=run_fd)
    # The kernel attaches this process's credentials (its host pid) to the message.
    run.send(b"hello")
    keep = run.fileno()
    os.closerange(3, keep)  # every descriptor of the parent but fd 0 (until the run) ...
    os.closerange(keep + 1, 1 << 20)
    work = arm["dir"]
    os.chdir(work)
    os.environ.clear()
    for kv in arm["env"]:
        k, _, v = kv.partition("=")
        os.environ[k] = v
    reseed()
    install_guard(bytes.fromhex(arm.get("guard", "")))
    prctl(PR_SET_DUMPABLE, 1)
    signal.signal(signal.SIGINT, signal.default_int_handler)
    prefault(work)
    try:
        msg, fds = recv_fds(run)
    except OSError:
        _exit(71)
    if not msg or len(fds) != 2:
        _exit(71)
    out_fd, err_fd = fds
    os.dup2(out_fd, 1)
    os.dup2(err_fd, 2)
    null = os.open("/dev/null", os.O_RDONLY)
    os.dup2(null, 0)  # ... the parent's control socket, which the run never holds
    for fd in (out_fd, err_fd, null):
        os.close(fd)
    run.close()  # the run holds descriptors 0, 1 and 2 only
    code = run_main(work)
    try:
        # Only what the run imported beyond the parent's: walking every module object would copy
        # the pages of each (their reference counts) for nothing.
        if len(sys.modules) > len(BASE_MODULES):
            names = sorted({m.partition(".")[0] for m in sys.modules.keys() - BASE_MODULES if m and not m.startswith("_")})
            if names:
                with open(os.path.join(work, MODULES_FILE), "w") as f:
                    f.write("\n".join(names))
    except BaseException:
        pass
    if code != "SIGINT":
        # The output is flushed: closing it lets the agent see the end of the run before this
        # process's teardown (unmapping what it shares with the parent takes milliseconds); it
        # then reads the exit status the kernel records first (parent.go, exitedEarly).
        try:
            os.close(1)
            os.close(2)
        except BaseException:
            pass
    if code == "SIGINT":
        signal.signal(signal.SIGINT, signal.SIG_DFL)
        os.kill(os.getpid(), signal.SIGINT)
        code = 130
    _exit(code)


def prefault(work):
    """Run an empty main the way run_main runs one, in a scratch namespace: the interpreter's
    pages it writes (reference counts, caches) become this child's copies now, not page faults
    on the run's time. Nothing of it stays: the module and its file are gone before the run."""
    saved = (sys.modules.get("__main__"), list(sys.argv), list(sys.path))
    try:
        path = os.path.join(work, ".envfabric-prefault.py")
        main = types.ModuleType("__main__")
        main.__file__ = path
        main.__builtins__ = __builtins__
        exec(compile(b"pass\n", path, "exec"), main.__dict__)
        sys.stdout.flush()
        sys.stderr.flush()
    except BaseException:
        pass
    finally:
        if saved[0] is not None:
            sys.modules["__main__"] = saved[0]
        sys.argv[:] = saved[1]
        sys.path[:] = saved[2]


def cleanup():
    """Remove everything a run could leave where a later run would see it. False: the parent
    cannot vouch for itself any more, and exits (the agent starts another)."""
    ok = True
    if CONFIG.get("pid_namespace"):
        # Every process of the run that is left (setsid, double fork): only this parent and init
        # remain. A killed process is gone once init reaped it.
        deadline = time.monotonic() + 5
        while True:
            try:
                os.kill(-1, signal.SIGKILL)
            except ProcessLookupError:
                break
            if time.monotonic() > deadline:
                log("processes of a run survive")
                return False
            time.sleep(0.001)
    if CONFIG.get("namespace"):
        # (POSIX message queues: the agent removes them, see sandbox.WipeMessageQueues.)
        keep = mount_points()
        for d in ("/tmp", "/var/tmp", "/dev/shm", "/run/lock"):
            ok = wipe(d, keep) and ok
        ok = wipe_sysv() and ok
    # Keys the run added to the session keyring it shares with the parent.
    if LIBC.syscall(ctypes.c_long(CONFIG["sys_keyctl"]), ctypes.c_long(KEYCTL_CLEAR), ctypes.c_long(KEY_SPEC_SESSION_KEYRING)) != 0:
        e = ctypes.get_errno()
        if e not in (38,):  # ENOSYS: no keys in this kernel
            log("clear the session keyring:", os.strerror(e))
            ok = False
    return ok


def mount_points():
    points = []
    try:
        for line in open("/proc/self/mountinfo"):
            f = line.split()
            if len(f) > 4:
                points.append(f[4].replace("\\040", " "))
    except OSError:
        pass
    return points


def wipe(d, keep):
    """Remove everything in d but the mount points below it (the runs directory, a hidden
    directory), which are not the run's."""
    try:
        names = os.listdir(d)
    except FileNotFoundError:
        return True
    except OSError as e:
        log("list", d, e)
        return False
    ok = True
    for n in names:
        p = os.path.join(d, n)
        if any(k == p or k.startswith(p + "/") for k in keep):
            continue
        ok = remove(p) and ok
    return ok


def remove(p):
    try:
        if os.path.isdir(p) and not os.path.islink(p):
            os.chmod(p, 0o700)
            for n in os.listdir(p):
                remove(os.path.join(p, n))
            os.rmdir(p)
        else:
            os.unlink(p)
        return True
    except FileNotFoundError:
        return True
    except OSError as e:
        log("remove", p, e)
        return False


def wipe_sysv():
    ok = True
    for kind, nr in (("shm", CONFIG["sys_shmctl"]), ("msg", CONFIG["sys_msgctl"]), ("sem", CONFIG["sys_semctl"])):
        try:
            lines = open("/proc/sysvipc/" + kind).read().splitlines()[1:]
        except OSError:
            continue
        for line in lines:
            f = line.split()
            ident = int(f[1])
            # semctl(id, 0, IPC_RMID), shmctl/msgctl(id, IPC_RMID, NULL)
            if kind == "sem":
                r = LIBC.syscall(ctypes.c_long(nr), ctypes.c_long(ident), ctypes.c_long(0), ctypes.c_long(0))
            else:
                r = LIBC.syscall(ctypes.c_long(nr), ctypes.c_long(ident), ctypes.c_long(0), None)
            if r != 0:
                log("remove", kind, ident, os.strerror(ctypes.get_errno()))
                ok = False
    return ok


def recv_fds(sock):
    """socket.recv_fds (Python 3.9+), for the interpreters before it too."""
    import array

    fds = array.array("i")
    msg, anc, _, _ = sock.recvmsg(65536, socket.CMSG_LEN(3 * fds.itemsize))
    for level, kind, data in anc:
        if level == socket.SOL_SOCKET and kind == socket.SCM_RIGHTS:
            fds.frombytes(data[: len(data) - (len(data) % fds.itemsize)])
    return msg, list(fds)


def serve():
    while True:
        try:
            msg, fds = recv_fds(CTL)
        except OSError as e:
            log("control socket:", e)
            return
        if not msg:
            return  # the agent closed it: stop
        if len(fds) != 1:
            for fd in fds:
                os.close(fd)
            send({"error": "arm: want 1 descriptor, got %d" % len(fds)})
            continue
        arm = json.loads(msg)
        (run_fd,) = fds
        sys.stdout.flush()
        sys.stderr.flush()
        pid = os.fork()
        if pid == 0:
            try:
                child(run_fd, arm)
            finally:
                _exit(70)
        for fd in fds:
            os.close(fd)
        _, status = os.waitpid(pid, 0)
        if os.WIFSIGNALED(status):
            send({"exit": -1, "signal": os.WTERMSIG(status)})
        else:
            send({"exit": os.WEXITSTATUS(status)})
        if not cleanup():
            send({"clean": False})
            return
        send({"clean": True})


def main():
    names = []
    for n in CONFIG.get("preload") or []:
        if n not in names:
            names.append(n)
    start = time.monotonic()
    done, failed = preload(names)
    global BASE_MODULES
    BASE_MODULES = frozenset(sys.modules)
    gc.collect()
    gc.freeze()
    # A child of the same user cannot open /proc/<parent>/mem, environ, or ptrace it.
    prctl(PR_SET_DUMPABLE, 0)
    send({"ready": True, "pid": os.getpid(), "ppid": os.getppid(), "pgid": os.getpgrp(),
          "preloaded": done, "failed": failed, "seconds": round(time.monotonic() - start, 3)})
    serve()


main()
