#!/usr/bin/env python3
"""Build berth's test images from scratch and push them to the local test registry.

No docker engine is needed: layers are tar files written with Python's tarfile from
explicit entries, configs and manifests are JSON written here, and everything is
pushed with the registry v2 HTTP API (HEAD to skip blobs already there, cross-repo
mount when possible, else POST + monolithic PUT ?digest=, then PUT the manifests).

Everything is deterministic (fixed mtimes, uid/gid 0 unless stated, sorted entries,
gzip mtime 0, `zstd -T1`), so digests are identical from run to run on one machine.
Compressed layers are cached (keyed by the layer's diff_id) so a second run only
rebuilds the tars, checks that the registry already has everything, and is quick.

Usage (as root, with hack/registry.sh start first):
    hack/test-images.py [--registry HOST:PORT]   (default: hack/registry.sh's recorded address)
                        [--storage /var/lib/berth-test-registry/data]
                        [--out <storage>/../images.json] [--cache <storage>/../cache]
                        [--no-verify] [--no-chroot-check]

Writes <storage>/../images.json describing every image it pushed (schema in
IMAGES_JSON_DOC below, also printed by --schema and --help). Only the standard library and the `zstd`
CLI are used.
"""

import argparse
import gzip
import hashlib
import io
import json
import os
import shutil
import subprocess
import sys
import tarfile
import tempfile
import time
import urllib.error
import urllib.parse
import urllib.request

# ---------------------------------------------------------------------------------
# Constants
# ---------------------------------------------------------------------------------

NAMESPACE = "berth"
# Every tar entry's mtime and every "created" timestamp (2024-01-01T00:00:00Z).
EPOCH = 1704067200
CREATED = "2024-01-01T00:00:00Z"
PATH_ENV = "PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin"
GZIP_LEVEL = 6
ZSTD_LEVEL = 3
BUSYBOX = "/usr/bin/busybox"

OCI_MANIFEST = "application/vnd.oci.image.manifest.v1+json"
OCI_INDEX = "application/vnd.oci.image.index.v1+json"
OCI_CONFIG = "application/vnd.oci.image.config.v1+json"
OCI_LAYER = "application/vnd.oci.image.layer.v1.tar"
OCI_LAYER_GZIP = "application/vnd.oci.image.layer.v1.tar+gzip"
OCI_LAYER_ZSTD = "application/vnd.oci.image.layer.v1.tar+zstd"
DOCKER_MANIFEST = "application/vnd.docker.distribution.manifest.v2+json"
DOCKER_LIST = "application/vnd.docker.distribution.manifest.list.v2+json"
DOCKER_CONFIG = "application/vnd.docker.container.image.v1+json"
DOCKER_LAYER_GZIP = "application/vnd.docker.image.rootfs.diff.tar.gzip"

# Accept header listing every manifest type we push. Registry 2.8 quirks: without
# an Accept naming them it answers 404 MANIFEST_UNKNOWN for OCI manifests/indexes,
# converts a Docker schema 2 manifest to schema 1 (prettyjws), and for a Docker
# manifest list answers with its linux/amd64 child manifest instead.
ACCEPT_ALL = ", ".join([OCI_INDEX, OCI_MANIFEST, DOCKER_LIST, DOCKER_MANIFEST])

LAYER_TYPES = {  # (flavor, codec) -> layer media type
    ("oci", "gzip"): OCI_LAYER_GZIP,
    ("oci", "zstd"): OCI_LAYER_ZSTD,
    ("oci", "none"): OCI_LAYER,
    ("docker", "gzip"): DOCKER_LAYER_GZIP,
}

PASSWD = """\
root:x:0:0:root:/root:/bin/sh
nobody:x:65534:65534:nobody:/nonexistent:/bin/false
berth:x:1000:1000:berth test user:/home/berth:/bin/sh
app:x:2000:2000:app test user:/home/app:/bin/sh
"""
# berth (1000) is also in audio and users; app (2000) in audio and video, so
# supplementary group resolution can be tested.
GROUP = """\
root:x:0:
daemon:x:1:
audio:x:29:berth,app
video:x:44:app
users:x:100:berth
berth:x:1000:
app:x:2000:
nogroup:x:65534:
"""
NSSWITCH = """\
passwd: files
group: files
shadow: files
hosts: files dns
"""

# Debian's dynamic busybox has no pgrep/pkill applets; the base layer ships this small
# busybox-ash script (it uses read -d) as /bin/pgrep and /bin/pkill (a hardlink to it).
PGREP_SH = r"""#!/bin/sh
# Minimal pgrep/pkill for berth's test images (Debian's dynamic busybox has neither
# applet). Written by berth's hack/test-images.py.
#   pgrep [-f] [-x] [-l] PATTERN        print pids whose name (-f: full command line)
#                                       matches the extended regular expression
#   pkill [-SIGNAL] [-f] [-x] PATTERN   send SIGNAL (default TERM) to them instead
# Exit status: 0 something matched, 1 nothing matched, 2 usage error.
prog=${0##*/}
full=0 exact=0 long=0 sig=TERM
while [ $# -gt 0 ]; do
  case $1 in
    --) shift; break ;;
    -f) full=1 ;;
    -x) exact=1 ;;
    -l) long=1 ;;
    -fx|-xf) full=1 exact=1 ;;
    -fl|-lf) full=1 long=1 ;;
    -[0-9]*|-[A-Z]*)
      [ "$prog" = pkill ] || { echo "$prog: unknown option $1" >&2; exit 2; }
      sig=${1#-} ;;
    -*) echo "$prog: unknown option $1" >&2; exit 2 ;;
    *) break ;;
  esac
  shift
done
if [ $# -ne 1 ]; then
  echo "usage: $prog [-f] [-x] [-l] PATTERN" >&2
  exit 2
fi
pat=$1
[ $exact = 1 ] && pat="^($pat)\$"
# Build "pid text" lines with shell builtins only (no helper process of ours can show
# up in the list), skipping our own pid.
nl='
'
list=
for d in /proc/[0-9]*; do
  pid=${d#/proc/}
  [ "$pid" = "$$" ] && continue
  text=
  if [ $full = 1 ]; then
    while IFS= read -r -d '' arg || [ -n "$arg" ]; do
      text="$text${text:+ }$arg"
    done 2>/dev/null <"$d/cmdline"
  fi
  if [ -z "$text" ]; then
    IFS= read -r text 2>/dev/null <"$d/comm" || continue
  fi
  list="$list$pid $text$nl"
done
# The pattern goes through the environment, not awk's argv.
found=$(printf '%s' "$list" | PGREP_PAT="$pat" PGREP_LONG="$long" awk '{
  pid = $1; sub(/^[0-9]+ /, "")
  if ($0 ~ ENVIRON["PGREP_PAT"]) print (ENVIRON["PGREP_LONG"] == "1") ? pid " " $0 : pid
}')
[ -n "$found" ] || exit 1
if [ "$prog" = pkill ]; then
  for p in $(printf '%s\n' "$found" | cut -d' ' -f1); do kill -s "$sig" "$p" 2>/dev/null || kill "-$sig" "$p"; done
else
  printf '%s\n' "$found"
fi
exit 0
"""


def log(msg):
    print(f"test-images: {msg}", flush=True)


def die(msg):
    print(f"test-images: error: {msg}", file=sys.stderr, flush=True)
    sys.exit(1)


def sha256(data):
    return "sha256:" + hashlib.sha256(data).hexdigest()


def canonical_json(obj):
    """Compact JSON with a stable key order (insertion order, which is fixed here)."""
    return json.dumps(obj, separators=(",", ":"), ensure_ascii=True).encode()


# ---------------------------------------------------------------------------------
# Layers
# ---------------------------------------------------------------------------------


class Layer:
    """An uncompressed layer tar, built in memory from explicit entries.

    Entries are written sorted by name (parents sort before their children), with
    hardlinks after all other entries so a link's target always comes first.
    Missing parent directories are added as root-owned 0755 directories, unless the
    entry is added with raw=True (used for the malicious layers).
    """

    def __init__(self, comment):
        self.comment = comment  # becomes the config's history entry
        self.entries = {}  # name -> (TarInfo, data or None)
        self._tar = None

    def _info(self, name, kind, mode, uid=0, gid=0):
        ti = tarfile.TarInfo(name)  # no normalisation: the name is written as given
        ti.type = kind
        ti.mode = mode
        ti.uid, ti.gid = uid, gid
        ti.uname = ti.gname = ""
        ti.mtime = EPOCH
        return ti

    def _add(self, ti, data=None, raw=False):
        if not raw:
            parts = ti.name.split("/")
            for i in range(1, len(parts)):
                parent = "/".join(parts[:i])
                if parent not in self.entries:
                    self.entries[parent] = (self._info(parent, tarfile.DIRTYPE, 0o755), None)
        if data is not None:
            ti.size = len(data)
        self.entries[ti.name] = (ti, data)
        self._tar = None
        return self

    def dir(self, name, mode=0o755, uid=0, gid=0):
        return self._add(self._info(name, tarfile.DIRTYPE, mode, uid, gid))

    def file(self, name, data, mode=0o644, uid=0, gid=0, raw=False):
        if isinstance(data, str):
            data = data.encode()
        return self._add(self._info(name, tarfile.REGTYPE, mode, uid, gid), data, raw)

    def symlink(self, name, target, raw=False):
        ti = self._info(name, tarfile.SYMTYPE, 0o777)
        ti.linkname = target
        return self._add(ti, raw=raw)

    def hardlink(self, name, target, raw=False):
        # A hardlink header carries the target's mode and owner, as GNU tar writes
        # it: extractors apply them to the (shared) inode.
        tgt = self.entries.get(target)
        mode, uid, gid = (tgt[0].mode, tgt[0].uid, tgt[0].gid) if tgt else (0o644, 0, 0)
        ti = self._info(name, tarfile.LNKTYPE, mode, uid, gid)
        ti.linkname = target
        return self._add(ti, raw=raw)

    def tar(self):
        """The uncompressed tar bytes (cached)."""
        if self._tar is None:
            buf = io.BytesIO()
            names = sorted(self.entries)
            order = [n for n in names if self.entries[n][0].type != tarfile.LNKTYPE]
            order += [n for n in names if self.entries[n][0].type == tarfile.LNKTYPE]
            with tarfile.open(fileobj=buf, mode="w", format=tarfile.PAX_FORMAT) as tf:
                for n in order:
                    ti, data = self.entries[n]
                    tf.addfile(ti, io.BytesIO(data) if data is not None else None)
            self._tar = buf.getvalue()
        return self._tar

    def diff_id(self):
        return sha256(self.tar())


class Compressor:
    """Compresses layer tars, caching results on disk keyed by diff_id and codec."""

    def __init__(self, cache_dir):
        self.cache_dir = cache_dir
        self.memo = {}  # (diff_id, codec, level) -> bytes, for this run
        self.hits = self.misses = 0
        if cache_dir:
            os.makedirs(cache_dir, exist_ok=True)

    def compress(self, tar, codec, level=None):
        if codec == "none":
            return tar
        if level is None:
            level = GZIP_LEVEL if codec == "gzip" else ZSTD_LEVEL
        hexd = hashlib.sha256(tar).hexdigest()
        memo_key = (hexd, codec, level)
        if memo_key in self.memo:
            return self.memo[memo_key]
        path = None
        if self.cache_dir:
            path = os.path.join(self.cache_dir, f"{hexd}.{codec}{level}")
            try:
                with open(path, "rb") as f:
                    self.hits += 1
                    self.memo[memo_key] = f.read()
                    return self.memo[memo_key]
            except FileNotFoundError:
                pass
        self.misses += 1
        if codec == "gzip":
            # mtime=0 and no file name in the header: deterministic.
            out = gzip.compress(tar, compresslevel=level, mtime=0)
        elif codec == "zstd":
            if not shutil.which("zstd"):
                die("the zstd CLI is needed (Debian package zstd; see hack/install-deps.sh)")
            # -T1: single-threaded, so the output does not depend on the core count.
            res = subprocess.run(
                ["zstd", "-q", "-c", f"-{level}", "-T1", "--no-progress"],
                input=tar, capture_output=True, check=False)
            if res.returncode != 0:
                die(f"zstd failed: {res.stderr.decode(errors='replace')}")
            out = res.stdout
        else:
            raise ValueError(codec)
        if path:
            tmp = f"{path}.tmp.{os.getpid()}"
            with open(tmp, "wb") as f:
                f.write(out)
            os.replace(tmp, path)
        self.memo[memo_key] = out
        return out


def busybox_libraries():
    """Absolute paths `ldd /usr/bin/busybox` lists (libraries and the loader)."""
    if not os.path.exists(BUSYBOX):
        die(f"{BUSYBOX} not found: install the Debian package busybox (hack/install-deps.sh)")
    res = subprocess.run(["ldd", BUSYBOX], capture_output=True, text=True, check=False)
    if res.returncode != 0:
        die(f"ldd {BUSYBOX} failed (is it the dynamic busybox?): {res.stdout}{res.stderr}")
    paths = []
    for line in res.stdout.splitlines():
        line = line.strip()
        if "=>" in line:
            rhs = line.split("=>", 1)[1].strip()
            if rhs.startswith("/"):
                paths.append(rhs.split()[0])
        elif line.startswith("/"):
            paths.append(line.split()[0])  # the dynamic loader
    if not any("ld-linux" in p for p in paths):
        die(f"no dynamic loader in `ldd {BUSYBOX}` output:\n{res.stdout}")
    return paths


def add_host_path(layer, path, depth=0):
    """Copies host file `path` into the layer at the same path.

    If the last component is a symlink it is copied as the same symlink (as the host
    has it, e.g. /lib64/ld-linux-x86-64.so.2 -> /lib/x86_64-linux-gnu/...), and its
    target is copied too. Parent directories are real directories in the image.
    """
    if depth > 10:
        die(f"symlink loop at {path}")
    name = path.lstrip("/")
    if os.path.islink(path):
        target = os.readlink(path)
        layer.symlink(name, target)
        nxt = target if target.startswith("/") else os.path.join(os.path.dirname(path), target)
        add_host_path(layer, os.path.normpath(nxt), depth + 1)
        return
    st = os.stat(path)
    with open(path, "rb") as f:
        layer.file(name, f.read(), mode=st.st_mode & 0o755)


def base_layer():
    """The busybox rootfs: real /bin, /lib, /lib64 directories (like the upstream
    busybox image), /bin/busybox plus a hardlink per applet, the libraries it needs."""
    lay = Layer("base rootfs: Debian's dynamic busybox, its libraries, /etc files")
    for d in ["bin", "dev", "etc", "home", "lib", "lib64", "proc", "root", "sbin", "sys",
              "usr", "usr/bin", "usr/sbin", "usr/local", "usr/local/bin", "var", "var/tmp"]:
        lay.dir(d, 0o700 if d == "root" else 0o755)
    lay.dir("tmp", 0o1777)
    lay.dir("var/tmp", 0o1777)
    lay.dir("home/berth", 0o755, 1000, 1000)
    lay.dir("home/app", 0o755, 2000, 2000)

    with open(BUSYBOX, "rb") as f:
        lay.file("bin/busybox", f.read(), mode=0o755)
    res = subprocess.run([BUSYBOX, "--list"], capture_output=True, text=True, check=True)
    applets = sorted(set(res.stdout.split()) - {"busybox"})
    for a in applets:
        if "/" in a or a in ("", ".", ".."):
            die(f"odd applet name from busybox --list: {a!r}")
        lay.hardlink(f"bin/{a}", "bin/busybox")
    for required in ("sh", "ls", "ps", "id", "cat", "sleep", "nc", "wget"):
        if required not in applets:
            die(f"{BUSYBOX} has no {required} applet")
    if "pgrep" not in applets:
        lay.file("bin/pgrep", PGREP_SH, mode=0o755)
        if "pkill" not in applets:
            lay.hardlink("bin/pkill", "bin/pgrep")

    for lib in busybox_libraries():
        add_host_path(lay, lib)

    lay.file("etc/passwd", PASSWD)
    lay.file("etc/group", GROUP)
    lay.file("etc/nsswitch.conf", NSSWITCH)
    lay.file("etc/shells", "/bin/sh\n/bin/ash\n")
    # /etc/hostname, /etc/hosts and /etc/resolv.conf are left out on purpose: the
    # runtime provides them.
    return lay, applets


def layer2():
    lay = Layer("layer2: /etc/berth-release, /tmp/gone, /opq/{a,b}, /data/keep")
    lay.dir("etc").dir("tmp", 0o1777).dir("opq").dir("data")
    lay.file("etc/berth-release", "layer2\n")
    lay.file("tmp/gone", "this file is removed by a whiteout in layer3\n")
    lay.file("opq/a", "a\n")
    lay.file("opq/b", "b\n")
    lay.file("data/keep", "keep\n")
    return lay


def layer3():
    lay = Layer("layer3: whiteout /tmp/gone, opaque /opq (+ /opq/c), /etc/berth-release")
    lay.dir("etc").dir("tmp", 0o1777).dir("opq")
    lay.file("tmp/.wh.gone", b"")
    lay.file("opq/.wh..wh..opq", b"")
    lay.file("opq/c", "c\n")
    lay.file("etc/berth-release", "layer3\n")
    return lay


# The benchmarks' pause image (berth/pause:3.9, containerd's sandbox_image in hack/bench): the
# sandbox ("infra") process containerd's CRI starts in every pod. Written for berth after what
# Kubernetes' build/pause/linux/pause.c does (exit 0 on SIGINT/SIGTERM, reap children, sleep
# forever) and built like it: gcc -Os -static, so its memory is comparable to upstream's pause.
PAUSE_C = r"""/* berth/pause: a sandbox process for containerd's CRI in berth's benchmarks (hack/test-images.py). */
#include <signal.h>
#include <string.h>
#include <sys/wait.h>
#include <unistd.h>

static void on_stop(int sig) { (void)sig; _exit(0); }
static void on_child(int sig) { (void)sig; while (waitpid(-1, NULL, WNOHANG) > 0) {} }

int main(void) {
    struct sigaction sa;
    memset(&sa, 0, sizeof sa);
    sa.sa_handler = on_stop;
    if (sigaction(SIGINT, &sa, NULL) < 0 || sigaction(SIGTERM, &sa, NULL) < 0) return 1;
    sa.sa_handler = on_child;
    sa.sa_flags = SA_NOCLDSTOP;
    if (sigaction(SIGCHLD, &sa, NULL) < 0) return 2;
    for (;;) pause();
}
"""
# Without a C compiler and a static libc (gcc, libc6-dev: what linking Rust needs anyway), the
# pause image falls back to Debian's dynamic busybox sleeping (RSS ~1.8 MB instead of ~0.3).
PAUSE_FALLBACK_CMD = ("/bin/sleep", "2147483647")


def pause_binary():
    """The static /pause built from PAUSE_C, or None (with a warning) when gcc cannot build it."""
    cc = shutil.which("gcc") or shutil.which("cc")
    if not cc:
        log("warning: no gcc: berth/pause:3.9 falls back to busybox sleep")
        return None
    with tempfile.TemporaryDirectory(prefix="berth-pause-") as tmp:
        src, out = os.path.join(tmp, "pause.c"), os.path.join(tmp, "pause")
        with open(src, "w") as f:
            f.write(PAUSE_C)
        res = subprocess.run([cc, "-Os", "-static", "-Wall", "-Werror", "-Wl,--build-id=none", "-s",
                              "-o", out, src], capture_output=True, text=True, check=False)
        if res.returncode != 0:
            log(f"warning: {cc} -static failed (libc6-dev missing?): berth/pause:3.9 falls back to "
                f"busybox sleep: {res.stderr.strip()[:300]}")
            return None
        with open(out, "rb") as f:
            return f.read()


def pause_image(comp, base):
    """berth/pause:3.9: /pause alone, run as 65535:65535 as upstream's image does; or the busybox
    base layer sleeping when /pause cannot be built."""
    binary = pause_binary()
    if binary is None:
        return Manifest(comp, [base], cmd=PAUSE_FALLBACK_CMD, user="65535:65535", label="pause-busybox")
    lay = Layer("pause: a static /pause (gcc -Os -static), see PAUSE_C in hack/test-images.py")
    lay.file("pause", binary, mode=0o755)
    return Manifest(comp, [lay], cmd=("/pause",), user="65535:65535", label="pause")


def platform_layer(arch):
    return Layer(f"/platform says {arch}").file("platform", f"{arch}\n")


def bench_layers(count=5, target=26 << 20):
    """`count` layers of real, compressible host files (~`target` bytes uncompressed
    each, ~8-12 MB gzipped), taken in sorted order from a few host directories and
    placed at their host paths. Deterministic for a given machine."""
    roots = ["/usr/lib/x86_64-linux-gnu", "/usr/share", "/usr/lib", "/usr/bin"]
    layers, cur, cur_size, seen = [], None, 0, set()

    def files():
        for root in roots:
            for dirpath, dirnames, filenames in os.walk(root):
                dirnames.sort()
                for fn in sorted(filenames):
                    p = os.path.join(dirpath, fn)
                    if p in seen or not p.isascii() or "\n" in p:
                        continue
                    seen.add(p)
                    try:
                        st = os.lstat(p)
                    except OSError:
                        continue
                    if not (st.st_mode & 0o170000 == 0o100000) or not 0 < st.st_size <= 4 << 20:
                        continue
                    yield p, st

    for p, st in files():
        if cur is None:
            cur = Layer(f"bench layer {len(layers) + 1}/{count}: host files from {p}")
            cur_size = 0
        try:
            with open(p, "rb") as f:
                data = f.read()
        except OSError:
            continue
        mode = 0o755 if st.st_mode & 0o111 else 0o644
        cur.file(p.lstrip("/"), data, mode=mode)
        cur_size += len(data)
        if cur_size >= target:
            layers.append(cur)
            cur = None
            if len(layers) == count:
                break
    if len(layers) < count:
        die(f"not enough host files for {count} bench layers of {target} bytes")
    return layers


def evil_layers():
    """One malicious layer per name; a safe unpacker must refuse each."""
    dotdot = Layer("evil: entry ../../escaped-dotdot")
    dotdot.file("../../escaped-dotdot", "escaped via ..\n", raw=True)

    absolute = Layer("evil: entry /escaped-abs")
    absolute.file("/escaped-abs", "escaped via an absolute name\n", raw=True)

    symlink = Layer("evil: symlink link -> /tmp, then regular file link/escaped-symlink")
    symlink.symlink("link", "/tmp", raw=True)
    symlink.file("link/escaped-symlink", "escaped through a symlink\n", raw=True)

    hardlink = Layer("evil: hardlink hl -> ../../../etc/passwd")
    hardlink.hardlink("hl", "../../../etc/passwd", raw=True)

    return {
        "evil-dotdot": (dotdot, "tar entry name ../../escaped-dotdot leaves the rootfs",
                        ["../../escaped-dotdot"]),
        "evil-abs": (absolute, "tar entry name /escaped-abs is absolute",
                     ["/escaped-abs"]),
        "evil-symlink": (symlink, "regular file written through symlink link -> /tmp",
                         ["/tmp/escaped-symlink"]),
        "evil-hardlink": (hardlink, "hardlink target ../../../etc/passwd leaves the rootfs",
                          ["../../../etc/passwd"]),
    }


CORRUPT_ORIGINAL = b"original content of berth/corrupt; the registry will not serve this\n"
CORRUPT_TAMPERED = b"TAMPERED content of berth/corrupt: the digest no longer matches!!\n"


def corrupt_layer(data):
    return Layer("corrupt: one small file /corrupt.txt").file("corrupt.txt", data)


# ---------------------------------------------------------------------------------
# Images: configs, manifests, indexes
# ---------------------------------------------------------------------------------


class Blob:
    def __init__(self, media_type, data):
        self.media_type = media_type
        self.data = data
        self.digest = sha256(data)
        self.size = len(data)

    def descriptor(self, **extra):
        d = {"mediaType": self.media_type, "digest": self.digest, "size": self.size}
        d.update(extra)
        return d


class Manifest:
    """A single-platform image: config + layer blobs + manifest bytes."""

    def __init__(self, comp, layers, flavor="oci", codec="gzip", arch="amd64", variant=None,
                 user=None, cmd=("sh",), label="busybox", gzip_level=None, stop_signal=None):
        self.layers_src = layers
        self.flavor, self.codec = flavor, codec
        self.arch, self.variant, self.user = arch, variant, user
        self.diff_ids = [lay.diff_id() for lay in layers]
        layer_type = LAYER_TYPES[(flavor, codec)]
        self.layer_blobs = [Blob(layer_type, comp.compress(lay.tar(), codec, gzip_level))
                            for lay in layers]
        cfg = {"created": CREATED, "architecture": arch}
        if variant:
            cfg["variant"] = variant
        cfg["os"] = "linux"
        c = {"Env": [PATH_ENV], "Cmd": list(cmd), "WorkingDir": "/",
             "Labels": {"org.berth.test": label}}
        if user is not None:
            c["User"] = user
        if stop_signal is not None:
            c["StopSignal"] = stop_signal
        cfg["config"] = c
        cfg["rootfs"] = {"type": "layers", "diff_ids": self.diff_ids}
        cfg["history"] = [{"created": CREATED, "created_by": f"berth hack/test-images.py: {lay.comment}"}
                          for lay in layers]
        self.config_cmd = list(cmd)
        self.config = Blob(OCI_CONFIG if flavor == "oci" else DOCKER_CONFIG, canonical_json(cfg))
        self.media_type = OCI_MANIFEST if flavor == "oci" else DOCKER_MANIFEST
        m = {"schemaVersion": 2, "mediaType": self.media_type,
             "config": self.config.descriptor(),
             "layers": [b.descriptor() for b in self.layer_blobs]}
        self.data = canonical_json(m)
        self.digest = sha256(self.data)

    def platform(self):
        p = {"architecture": self.arch, "os": "linux"}
        if self.variant:
            p["variant"] = self.variant
        return p

    def blobs(self):
        return [self.config] + self.layer_blobs

    def info(self):
        return {
            "manifest_digest": self.digest,
            "manifest_media_type": self.media_type,
            "config_digest": self.config.digest,
            "layers": [b.digest for b in self.layer_blobs],
            "layer_media_types": [b.media_type for b in self.layer_blobs],
            "layer_sizes": [b.size for b in self.layer_blobs],
            "diff_ids": list(self.diff_ids),
            "user": self.user,
        }


class Index:
    """A multi-platform image: OCI index or Docker manifest list of Manifests."""

    def __init__(self, manifests, flavor="oci"):
        self.manifests = manifests
        self.media_type = OCI_INDEX if flavor == "oci" else DOCKER_LIST
        idx = {"schemaVersion": 2, "mediaType": self.media_type,
               "manifests": [{"mediaType": m.media_type, "digest": m.digest,
                              "size": len(m.data), "platform": m.platform()}
                             for m in manifests]}
        self.data = canonical_json(idx)
        self.digest = sha256(self.data)


# ---------------------------------------------------------------------------------
# Registry v2 client
# ---------------------------------------------------------------------------------


class HTTPResult:
    def __init__(self, status, headers, body):
        self.status, self.headers, self.body = status, headers, body


class Registry:
    def __init__(self, host):
        self.host = host
        self.base = f"http://{host}"
        self.stats = {"blobs_uploaded": 0, "blobs_mounted": 0, "blobs_present": 0,
                      "manifests_put": 0, "manifests_unchanged": 0, "bytes_uploaded": 0}
        self.where = {}  # blob digest -> a repository known to hold it (for mounts)

    def request(self, method, url, data=None, headers=None, ok=(200,)):
        if not url.startswith("http"):
            url = self.base + url
        req = urllib.request.Request(url, data=data, method=method, headers=headers or {})
        try:
            with urllib.request.urlopen(req, timeout=120) as resp:
                res = HTTPResult(resp.status, resp.headers, resp.read())
        except urllib.error.HTTPError as e:
            res = HTTPResult(e.code, e.headers, e.read())
        except urllib.error.URLError as e:
            die(f"{method} {url}: {e.reason} (is the registry running? hack/registry.sh start)")
        if ok and res.status not in ok:
            die(f"{method} {url}: HTTP {res.status}: {res.body[:500].decode(errors='replace')}")
        return res

    def ping(self):
        res = self.request("GET", "/v2/", ok=None)
        if res.status != 200:
            die(f"GET {self.base}/v2/ answered {res.status}, want 200 (auth enabled? wrong registry?)")

    def blob_present(self, repo, blob):
        res = self.request("HEAD", f"/v2/{repo}/blobs/{blob.digest}", ok=(200, 404))
        return res.status == 200 and res.headers.get("Content-Length") == str(blob.size)

    def push_blob(self, repo, blob):
        if self.blob_present(repo, blob):
            self.stats["blobs_present"] += 1
            self.where.setdefault(blob.digest, repo)
            return
        src = self.where.get(blob.digest)
        if src and src != repo:
            q = urllib.parse.urlencode({"mount": blob.digest, "from": src})
            res = self.request("POST", f"/v2/{repo}/blobs/uploads/?{q}", data=b"", ok=(201, 202))
            if res.status == 201:
                self.stats["blobs_mounted"] += 1
                return
        else:
            res = self.request("POST", f"/v2/{repo}/blobs/uploads/", data=b"", ok=(202,))
        # 202: an upload session; finish it with one monolithic PUT ?digest=.
        loc = res.headers.get("Location")
        if not loc:
            die(f"POST /v2/{repo}/blobs/uploads/: 202 without a Location header")
        loc = urllib.parse.urljoin(self.base + "/", loc)
        loc += ("&" if "?" in loc else "?") + urllib.parse.urlencode({"digest": blob.digest})
        res = self.request("PUT", loc, data=blob.data, ok=(201,), headers={
            "Content-Type": "application/octet-stream", "Content-Length": str(blob.size)})
        got = res.headers.get("Docker-Content-Digest")
        if got and got != blob.digest:
            die(f"registry stored blob {blob.digest} as {got}")
        self.stats["blobs_uploaded"] += 1
        self.stats["bytes_uploaded"] += blob.size
        self.where[blob.digest] = repo

    def push_manifest(self, repo, ref, media_type, data):
        digest = sha256(data)
        res = self.request("HEAD", f"/v2/{repo}/manifests/{ref}", ok=(200, 404),
                           headers={"Accept": media_type})
        if res.status == 200 and res.headers.get("Docker-Content-Digest") == digest:
            self.stats["manifests_unchanged"] += 1
            return
        res = self.request("PUT", f"/v2/{repo}/manifests/{ref}", data=data, ok=(201,),
                           headers={"Content-Type": media_type})
        got = res.headers.get("Docker-Content-Digest")
        if got != digest:
            die(f"PUT manifest {repo}:{ref}: registry says {got}, we computed {digest}")
        self.stats["manifests_put"] += 1


# ---------------------------------------------------------------------------------
# Pushing and describing
# ---------------------------------------------------------------------------------


def push_image(reg, repo, tag, image):
    """Pushes a Manifest or an Index (children first, by digest), tagged `tag`."""
    manifests = image.manifests if isinstance(image, Index) else [image]
    for m in manifests:
        for b in m.blobs():
            reg.push_blob(repo, b)
        if isinstance(image, Index):
            reg.push_manifest(repo, m.digest, m.media_type, m.data)
    reg.push_manifest(repo, tag, image.media_type, image.data)


def describe(registry, repo, tag, image, expect):
    """The images.json entry of one pushed name:tag (key order is fixed)."""
    is_index = isinstance(image, Index)
    entry = {
        "name": repo,
        "tag": tag,
        "reference": f"{registry}/{repo}:{tag}",
        "media_type": image.media_type,
        "digest": image.digest,
        "index_digest": image.digest if is_index else None,
    }
    if is_index:
        amd64 = [m for m in image.manifests if m.arch == "amd64"]
        main = amd64[0] if amd64 else None
    else:
        main = image
    if main is not None:
        entry.update(main.info())
    else:
        entry.update({"manifest_digest": None, "manifest_media_type": None, "config_digest": None,
                      "layers": [], "layer_media_types": [], "layer_sizes": [], "diff_ids": [],
                      "user": None})
    entry["platforms"] = ([dict(platform=m.platform(), **m.info()) for m in image.manifests]
                          if is_index else None)
    entry["expect"] = expect
    return entry


# What a correct pull + unpack of the busybox layer stack must give.
BUSYBOX_EXPECT = {
    "pull": "ok",
    "files": {"/etc/berth-release": "layer3\n", "/opq/c": "c\n", "/data/keep": "keep\n"},
    "absent": ["/tmp/gone", "/tmp/.wh.gone", "/opq/a", "/opq/b", "/opq/.wh..wh..opq",
               "/etc/hostname"],
    "executables": ["/bin/sh", "/bin/ls", "/bin/ps", "/bin/pgrep", "/bin/id", "/bin/cat",
                    "/bin/sleep", "/bin/nc", "/bin/wget"],
}


def build_all(comp, registry):
    """Returns [(repo, tag, image, expect)] in push order."""
    base, applets = base_layer()
    l2, l3 = layer2(), layer3()
    busybox = [base, l2, l3]
    out = []

    def add(name, tag, image, expect):
        out.append((f"{NAMESPACE}/{name}", tag, image, expect))

    oci = Manifest(comp, busybox)
    add("busybox", "latest", oci, BUSYBOX_EXPECT)
    add("busybox", "1.0", oci, BUSYBOX_EXPECT)
    add("busybox-docker", "latest", Manifest(comp, busybox, flavor="docker"), BUSYBOX_EXPECT)
    add("busybox-zstd", "latest", Manifest(comp, busybox, codec="zstd"), BUSYBOX_EXPECT)
    add("plain", "latest", Manifest(comp, busybox, codec="none"), BUSYBOX_EXPECT)

    amd64, arm64, s390x = (platform_layer(a) for a in ("amd64", "arm64", "s390x"))
    multi_expect = dict(BUSYBOX_EXPECT, files=dict(BUSYBOX_EXPECT["files"], **{"/platform": "amd64\n"}))
    for flavor, name in (("oci", "multiarch"), ("docker", "multiarch-docker")):
        idx = Index([
            Manifest(comp, busybox + [amd64], flavor=flavor, label="multiarch-amd64"),
            Manifest(comp, [arm64], flavor=flavor, arch="arm64", variant="v8",
                     cmd=("/bin/sh",), label="multiarch-arm64"),
        ], flavor=flavor)
        add(name, "latest", idx, multi_expect)
    add("arm64only", "latest", Index([
        Manifest(comp, [arm64], arch="arm64", variant="v8", cmd=("/bin/sh",), label="arm64only"),
        Manifest(comp, [s390x], arch="s390x", cmd=("/bin/sh",), label="arm64only"),
    ]), {"pull": "fail", "reason": "no linux/amd64 manifest in the index"})

    add("nonroot", "latest", Manifest(comp, busybox, user="1000:1000", label="nonroot"),
        dict(BUSYBOX_EXPECT, uid=1000, gid=1000, etc_group_gids=[29, 100]))
    # An image whose config names a stop signal (Dockerfile STOPSIGNAL), for StopContainer.
    add("stopsignal", "latest", Manifest(comp, busybox, label="stopsignal", stop_signal="SIGUSR2"),
        BUSYBOX_EXPECT)
    add("nonroot-name", "latest", Manifest(comp, busybox, user="berth", label="nonroot-name"),
        dict(BUSYBOX_EXPECT, uid=1000, gid=1000, etc_group_gids=[29, 100]))

    add("layers", "latest", Manifest(comp, busybox + bench_layers(), label="layers"),
        BUSYBOX_EXPECT)

    pause = pause_image(comp, base)
    add("pause", "3.9", pause, {"pull": "ok", "files": {}, "absent": [],
                                "executables": [pause.config_cmd[0]]})

    for name, (lay, why, escapes) in evil_layers().items():
        add(name, "latest", Manifest(comp, [base, lay], label=name),
            {"pull": "fail", "reason": why, "escape_targets": escapes})

    # Level 0 gzip (stored blocks): the original and tampered layers then have the
    # same length and both are valid gzip + tar, so only digest checks catch it.
    corrupt = Manifest(comp, [corrupt_layer(CORRUPT_ORIGINAL)], cmd=("/corrupt.txt",),
                       label="corrupt", gzip_level=0)
    add("corrupt", "latest", corrupt, {
        "pull": "fail",
        "reason": "the registry serves layer bytes that do not match the layer digest",
        "tampered_blobs": [corrupt.layer_blobs[0].digest]})
    return out, base, applets


def tamper(storage, corrupt_entry, comp):
    """Overwrites berth/corrupt's layer blob in the registry's storage with a
    different valid gzip'd tar of exactly the same length. Idempotent."""
    digest = corrupt_entry["layers"][0]
    hexd = digest.split(":", 1)[1]
    path = os.path.join(storage, "docker/registry/v2/blobs/sha256", hexd[:2], hexd, "data")
    original = comp.compress(corrupt_layer(CORRUPT_ORIGINAL).tar(), "gzip", 0)
    tampered = comp.compress(corrupt_layer(CORRUPT_TAMPERED).tar(), "gzip", 0)
    if sha256(original) != digest:
        die("internal: corrupt layer digest mismatch")
    if len(original) != len(tampered) or original == tampered:
        die("internal: tampered layer must differ and have the same length")
    if not os.path.isfile(path):
        die(f"blob file {path} not found: does --storage point at the registry's "
            f"rootdirectory? (hack/registry.sh uses $BERTH_REGISTRY_DIR/data)")
    with open(path, "rb") as f:
        current = f.read()
    if current == tampered:
        log(f"berth/corrupt: blob {digest[:19]} already tampered")
        return path
    if current != original:
        log(f"warning: {path} held unexpected bytes; overwriting with the tampered layer")
    tmp = f"{path}.tmp.{os.getpid()}"
    with open(tmp, "wb") as f:
        f.write(tampered)
    os.chmod(tmp, os.stat(path).st_mode & 0o777)
    os.replace(tmp, path)
    log(f"berth/corrupt: tampered blob {digest[:19]} on disk ({len(tampered)} bytes)")
    return path


# ---------------------------------------------------------------------------------
# Checks
# ---------------------------------------------------------------------------------


def chroot_check(base, applets):
    """Unpacks the base layer into a temp dir and runs busybox in it with chroot."""
    if os.geteuid() != 0 or not shutil.which("chroot"):
        log("warning: not root (or no chroot): skipping the chroot check of the base layer")
        return
    tmp = tempfile.mkdtemp(prefix="berth-rootfs-")
    try:
        with tarfile.open(fileobj=io.BytesIO(base.tar())) as tf:
            tf.extractall(tmp, numeric_owner=True, filter="fully_trusted")
        # The image has an empty /dev (the runtime fills it); busybox sh needs
        # /dev/null for background jobs.
        os.mknod(os.path.join(tmp, "dev/null"), 0o20666, os.makedev(1, 3))
        script = ("set -e; ls /bin/ls >/dev/null; id; id berth; id app; "
                  "for a in sh ls ps pgrep id cat sleep nc wget; do test -x /bin/$a; done; "
                  "test ! -e /etc/hostname; echo ok")
        res = subprocess.run(["chroot", tmp, "/bin/sh", "-c", script],
                             capture_output=True, text=True, check=False)
        out = res.stdout
        if res.returncode != 0 or "uid=0(root) gid=0(root)" not in out or \
                "uid=1000(berth) gid=1000(berth)" not in out or "29(audio)" not in out or \
                "44(video)" not in out or not out.rstrip().endswith("ok"):
            die(f"chroot check of the base rootfs failed (rc {res.returncode}):\n{out}{res.stderr}")
        st = os.stat(os.path.join(tmp, "bin/ls"))
        if st.st_ino != os.stat(os.path.join(tmp, "bin/busybox")).st_ino or st.st_nlink != len(applets) + 1:
            die("applets are not hardlinks of /bin/busybox in the unpacked base layer")
        # pgrep needs /proc: run it in a private pid+mount namespace with its own /proc.
        # If the namespace itself cannot be made (restricted sandbox), only warn.
        ns = ["unshare", "--mount", "--pid", "--fork", f"--mount-proc={tmp}/proc", "chroot", tmp]
        if not shutil.which("unshare") or subprocess.run(
                ns + ["/bin/true"], capture_output=True, check=False).returncode != 0:
            log("warning: cannot make a pid namespace with unshare: pgrep not checked")
        else:
            res = subprocess.run(
                ns + ["/bin/sh", "-c",
                      "set -e; sleep 30 & p=$!; sleep 0.2; test \"$(pgrep -x sleep)\" = $p; "
                      "test \"$(pgrep -fx 'sleep 3[0]')\" = $p; pkill sleep; ! wait $p; "
                      "! pgrep nosuchproc; echo ok"],
                capture_output=True, text=True, check=False)
            if res.returncode != 0 or not res.stdout.rstrip().endswith("ok"):
                die(f"pgrep check in the base rootfs failed (rc {res.returncode}): "
                    f"{res.stdout}{res.stderr}")
        log("chroot check of the base rootfs: ok (/bin/sh, /bin/ls, id, users, groups, pgrep)")
    finally:
        shutil.rmtree(tmp, ignore_errors=True)


def decompress(data, media_type):
    if media_type.endswith("gzip"):
        return gzip.decompress(data)
    if media_type.endswith("zstd"):
        res = subprocess.run(["zstd", "-q", "-d", "-c"], input=data, capture_output=True, check=True)
        return res.stdout
    return data


def verify(reg, entries):
    """Fetches every manifest with Accept: <all types> and checks Content-Type and
    digest, then every referenced blob (once per repository) and checks its digest,
    and that each layer decompresses to the config's diff_id. Everything must match
    except the deliberately tampered blobs, which must be served with other bytes."""
    checked, diff_ok, n_manifests, n_blobs = set(), set(), 0, 0
    for e in entries:
        repo = e["name"]
        tampered = set(e["expect"].get("tampered_blobs", []))

        def get_manifest(ref, want_type, want_digest):
            res = reg.request("GET", f"/v2/{repo}/manifests/{ref}", headers={"Accept": ACCEPT_ALL})
            ctype = res.headers.get("Content-Type")
            if ctype != want_type:
                die(f"{repo}:{ref}: Content-Type {ctype}, want {want_type}")
            if sha256(res.body) != want_digest or res.headers.get("Docker-Content-Digest") != want_digest:
                die(f"{repo}:{ref}: digest {sha256(res.body)}, want {want_digest}")
            return json.loads(res.body)

        def get_blob(desc):
            res = reg.request("GET", f"/v2/{repo}/blobs/{desc['digest']}")
            ok = sha256(res.body) == desc["digest"] and len(res.body) == desc["size"]
            if desc["digest"] in tampered:
                if ok or len(res.body) != desc["size"]:
                    die(f"{repo}: blob {desc['digest']} should be served tampered (same size, "
                        f"other bytes) but is not")
                return None
            if not ok:
                die(f"{repo}: blob {desc['digest']} served with digest {sha256(res.body)}")
            return res.body

        top = get_manifest(e["tag"], e["media_type"], e["digest"])
        n_manifests += 1
        if e["index_digest"]:
            mans = [(d["digest"], d["mediaType"]) for d in top["manifests"]]
        else:
            mans = [(e["digest"], e["media_type"])]
        for dgst, mtype in mans:
            m = top
            if e["index_digest"]:
                m = get_manifest(dgst, mtype, dgst)
                n_manifests += 1
            config = json.loads(get_blob(m["config"]))
            n_blobs += 1
            diff_ids = config["rootfs"]["diff_ids"]
            if len(diff_ids) != len(m["layers"]):
                die(f"{repo}@{dgst}: {len(m['layers'])} layers but {len(diff_ids)} diff_ids")
            for desc, diff_id in zip(m["layers"], diff_ids):
                if (repo, desc["digest"]) in checked:
                    continue
                checked.add((repo, desc["digest"]))
                body = get_blob(desc)
                n_blobs += 1
                if body is None or (desc["digest"], diff_id) in diff_ok:
                    continue
                if sha256(decompress(body, desc["mediaType"])) != diff_id:
                    die(f"{repo}: layer {desc['digest']} does not decompress to {diff_id}")
                diff_ok.add((desc["digest"], diff_id))
    log(f"verify: ok ({n_manifests} manifests, {n_blobs} blob fetches, {len(diff_ok)} diff_ids; "
        f"tampered blobs differ as intended)")


# ---------------------------------------------------------------------------------

IMAGES_JSON_DOC = """\
images.json (written by hack/test-images.py):
{
  "schema_version": 1,
  "registry": "127.0.0.1:5000",           # --registry, plain HTTP, no auth
  "storage": "/var/lib/.../data",          # --storage (registry filesystem root)
  "images": [                              # one entry per pushed name:tag, in push order
    {
      "name": "berth/busybox",             # repository
      "tag": "latest",
      "reference": "127.0.0.1:5000/berth/busybox:latest",
      "media_type": "...",                 # media type of what the tag points to
      "digest": "sha256:...",              # digest of what the tag points to
      "index_digest": "sha256:..." | null, # = digest when the tag is an index/list
      "manifest_digest": "sha256:..." | null,   # the linux/amd64 image manifest
      "manifest_media_type": "..." | null,      #   (null: index without amd64)
      "config_digest": "sha256:..." | null,
      "layers": ["sha256:...", ...],       # compressed layer digests, in order
      "layer_media_types": ["...", ...],
      "layer_sizes": [123, ...],           # compressed sizes in bytes
      "diff_ids": ["sha256:...", ...],     # digests of the uncompressed tars
      "user": "1000:1000" | null,          # config User
      "platforms": null | [                # only for indexes, in index order
        {"platform": {"architecture": "arm64", "os": "linux", "variant": "v8"},
         "manifest_digest": ..., "manifest_media_type": ..., "config_digest": ...,
         "layers": [...], "layer_media_types": [...], "layer_sizes": [...],
         "diff_ids": [...], "user": ...}
      ],
      "expect": {                          # what a correct runtime must observe
        "pull": "ok" | "fail",
        # pull ok:   "files": {path: exact content}, "absent": [paths],
        #            "executables": [paths]; nonroot*: "uid", "gid" and
        #            "etc_group_gids" (groups /etc/group lists user berth in)
        # pull fail: "reason": text; evil-*: "escape_targets": [the paths the bad
        #            entry aims at; relative ones are relative to the rootfs dir];
        #            corrupt: "tampered_blobs": [layer digests served tampered]
      }
    }
  ]
}
"""


def main():
    default_storage = os.path.join(
        os.environ.get("BERTH_REGISTRY_DIR", "/var/lib/berth-test-registry"), "data")
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0],
                                 formatter_class=argparse.RawDescriptionHelpFormatter,
                                 epilog=IMAGES_JSON_DOC)
    regdir = os.environ.get("BERTH_REGISTRY_DIR", "/var/lib/berth-test-registry")
    try:
        with open(os.path.join(regdir, "address")) as f:
            default_registry = f.read().strip()
    except OSError:
        default_registry = None
    ap.add_argument("--registry", default=default_registry,
                    help="host:port (plain HTTP); default: the address hack/registry.sh recorded")
    ap.add_argument("--storage", default=default_storage,
                    help="the registry's filesystem storage root (default %(default)s)")
    ap.add_argument("--out", help="images.json path (default <storage>/../images.json)")
    ap.add_argument("--cache", help="compressed-layer cache (default <storage>/../cache)")
    ap.add_argument("--no-cache", action="store_true", help="always recompress")
    ap.add_argument("--no-verify", action="store_true", help="skip re-fetching and checking")
    ap.add_argument("--no-chroot-check", action="store_true", help="skip the chroot check")
    ap.add_argument("--schema", action="store_true", help="print the images.json schema and exit")
    args = ap.parse_args()
    if args.schema:
        print(IMAGES_JSON_DOC, end="")
        return
    if not args.registry:
        die("no --registry and no recorded test registry address: run hack/registry.sh start first")

    t0 = time.monotonic()
    storage = os.path.abspath(args.storage)
    parent = os.path.dirname(storage.rstrip("/"))
    out_path = args.out or os.path.join(parent, "images.json")
    cache = None if args.no_cache else (args.cache or os.path.join(parent, "cache"))

    reg = Registry(args.registry)
    reg.ping()
    comp = Compressor(cache)

    images, base, applets = build_all(comp, args.registry)
    log(f"built {len(images)} image tags in {time.monotonic() - t0:.1f}s "
        f"(compression cache: {comp.hits} hits, {comp.misses} misses)")
    if not args.no_chroot_check:
        chroot_check(base, applets)

    entries = []
    for repo, tag, image, expect in images:
        push_image(reg, repo, tag, image)
        entries.append(describe(args.registry, repo, tag, image, expect))
        log(f"{repo}:{tag} -> {image.digest}")
    s = reg.stats
    log(f"pushed: {s['blobs_uploaded']} blobs uploaded ({s['bytes_uploaded'] / 1e6:.1f} MB), "
        f"{s['blobs_mounted']} mounted, {s['blobs_present']} already present; "
        f"{s['manifests_put']} manifests put, {s['manifests_unchanged']} unchanged")

    corrupt = next(e for e in entries if e["name"] == f"{NAMESPACE}/corrupt")
    tamper(storage, corrupt, comp)

    doc = {"schema_version": 1, "registry": args.registry, "storage": storage,
           "images": entries}
    os.makedirs(os.path.dirname(out_path), exist_ok=True)
    tmp = f"{out_path}.tmp.{os.getpid()}"
    with open(tmp, "w") as f:
        json.dump(doc, f, indent=2)
        f.write("\n")
    os.replace(tmp, out_path)
    log(f"wrote {out_path}")

    if not args.no_verify:
        verify(reg, entries)
    log(f"done in {time.monotonic() - t0:.1f}s")


if __name__ == "__main__":
    main()
