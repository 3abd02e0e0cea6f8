#!/usr/bin/env bash
# Build the stand-in engine image (default lmstack-standin-engine:test) without any registry.
#
# The image is FROM scratch: the host's Python (interpreter, stdlib without tests/GUI/
# site-packages, the shared libraries ldd reports, the dynamic loader) plus
# standin_engine.py as the entrypoint, so `docker run IMAGE m --port 8000` behaves
# like `docker run vllm/vllm-openai m --port 8000` (whose entrypoint is `vllm serve`).
#
# Idempotent: the image carries a fingerprint label of its inputs; when an image with the
# same fingerprint exists the script exits at once. --force rebuilds anyway.
#
# Usage: tests/engine/build_image.sh [--force]
# Env:   LMSTACK_STANDIN_IMAGE (image tag), STANDIN_PYTHON (interpreter to package, python3)
set -euo pipefail

IMAGE="${LMSTACK_STANDIN_IMAGE:-lmstack-standin-engine:test}"
PYTHON="${STANDIN_PYTHON:-python3}"
HERE="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
FORCE=0
for arg in "$@"; do
    case "$arg" in
        --force) FORCE=1 ;;
        -h|--help) sed -n '2,14p' "$0"; exit 0 ;;
        *) echo "build_image.sh: unknown argument: $arg" >&2; exit 2 ;;
    esac
done

die() { echo "build_image.sh: $*" >&2; exit 1; }

command -v docker >/dev/null || die "docker client not found (run scripts/ensure-docker.sh)"
docker info >/dev/null 2>&1 || die "no Docker engine reachable (run scripts/ensure-docker.sh)"

PREFIX="$("$PYTHON" -c 'import sys; print(sys.base_prefix)')"
VER="$("$PYTHON" -c 'import sys; print("%d.%d" % sys.version_info[:2])')"
FULLVER="$("$PYTHON" -c 'import sys; print(sys.version.split()[0])')"
INTERP="$(readlink -f "$PREFIX/bin/python$VER")"
[ -x "$INTERP" ] || die "interpreter not found at $PREFIX/bin/python$VER"
STDLIB="$PREFIX/lib/python$VER"
[ -f "$STDLIB/os.py" ] || die "stdlib not found at $STDLIB"

# Inputs that define the image; a change in any of them rebuilds it.
FINGERPRINT="$(
    {
        cat "$HERE/standin_engine.py" "$HERE/Dockerfile" "$HERE/build_image.sh"
        echo "$INTERP $FULLVER"
    } | sha256sum | cut -c1-16
)"

if [ "$FORCE" = 0 ]; then
    have="$(docker image inspect --format '{{ index .Config.Labels "lmstack.standin.fingerprint" }}' \
        "$IMAGE" 2>/dev/null || true)"
    if [ "$have" = "$FINGERPRINT" ]; then
        echo "build_image.sh: $IMAGE is up to date ($FINGERPRINT)"
        exit 0
    fi
fi

CTX="$(mktemp -d "${TMPDIR:-/tmp}/lmstack-standin.XXXXXX")"
trap 'rm -rf "$CTX"' EXIT
ROOT="$CTX/rootfs"
mkdir -p "$ROOT/usr/local/bin" "$ROOT/usr/local/lib" "$ROOT/opt/standin" "$ROOT/tmp"
chmod 1777 "$ROOT/tmp"

echo "build_image.sh: packaging Python $FULLVER from $PREFIX"
cp -L "$INTERP" "$ROOT/usr/local/bin/python$VER"
ln -s "python$VER" "$ROOT/usr/local/bin/python3"

# The stdlib, minus what a headless HTTP server never imports (tests, GUI, bundled wheels,
# the static libpython under config-*, third-party packages) to keep the image small.
tar -C "$PREFIX/lib" -cf - \
    --exclude='__pycache__' --exclude='test' --exclude='tests' --exclude='idle_test' \
    --exclude="python$VER/site-packages" --exclude="python$VER/idlelib" \
    --exclude="python$VER/tkinter" --exclude="python$VER/turtledemo" \
    --exclude="python$VER/turtle.py" --exclude="python$VER/ensurepip" \
    --exclude="python$VER/lib2to3" --exclude="python$VER/config-*" \
    --exclude='_tkinter*' --exclude='*.exe' \
    "python$VER" | tar -C "$ROOT/usr/local/lib" -xf -

# Shared libraries: one flat directory (found through LD_LIBRARY_PATH, which wins over the
# interpreter's RUNPATH); the dynamic loader goes to the path the binaries name (PT_INTERP).
libs="$(
    for obj in "$INTERP" "$ROOT/usr/local/lib/python$VER/lib-dynload/"*.so; do
        ldd "$obj" 2>/dev/null || true
    done | awk '
        $2 == "=>" && $3 ~ /^\// { print $3 }
        $1 ~ /^\// { print $1 }
    ' | sort -u
    # glibc dlopen()s libgcc_s when a thread exits; ldd cannot see that, so add it by name.
    { /sbin/ldconfig -p 2>/dev/null || ldconfig -p; } |
        awk '$1 == "libgcc_s.so.1" && /x86-64/ { print $NF; exit }'
)"
for lib in $libs; do
    case "$lib" in
        */ld-linux*)
            mkdir -p "$ROOT$(dirname "$lib")"
            cp -L "$lib" "$ROOT$lib"
            ;;
        *) cp -L "$lib" "$ROOT/usr/local/lib/" ;;
    esac
done
if command -v strip >/dev/null; then
    # Debug symbols are most of the extension modules' size.
    find "$ROOT/usr/local" -name '*.so*' -type f -exec strip --strip-unneeded {} + 2>/dev/null || true
fi

# Byte-compile once here (same interpreter) so each container start skips compiling the
# stdlib; unchecked-hash pycs stay valid whatever mtimes COPY gives the sources.
"$PYTHON" -m compileall -q -j 0 --invalidation-mode unchecked-hash \
    -s "$ROOT" -p / "$ROOT/usr/local/lib/python$VER" >/dev/null ||
    die "byte-compiling the stdlib failed"

cp "$HERE/standin_engine.py" "$ROOT/opt/standin/standin_engine.py"
cp "$HERE/Dockerfile" "$CTX/Dockerfile"
# LD_LIBRARY_PATH is set here rather than in the Dockerfile's ENV list for one reason: the
# same flat directory holds every library, whatever the host's layout.
echo 'ENV LD_LIBRARY_PATH=/usr/local/lib' >>"$CTX/Dockerfile"

OLD_ID="$(docker image inspect --format '{{.Id}}' "$IMAGE" 2>/dev/null || true)"
echo "build_image.sh: building $IMAGE ($(du -sh "$ROOT" | cut -f1) rootfs)"
# The classic builder: it ships with every engine and needs no buildx plugin.
if ! DOCKER_BUILDKIT=0 docker build -q --label "lmstack.standin.fingerprint=$FINGERPRINT" \
    -t "$IMAGE" "$CTX" >"$CTX/build.log" 2>&1; then
    cat "$CTX/build.log" >&2
    die "docker build failed"
fi

NEW_ID="$(docker image inspect --format '{{.Id}}' "$IMAGE")"
if [ -n "$OLD_ID" ] && [ "$OLD_ID" != "$NEW_ID" ]; then
    # The previous build is now an untagged leftover; drop it unless a container uses it.
    docker image rm "$OLD_ID" >/dev/null 2>&1 || true
fi

# Smoke test: the interpreter loads and argparse/http.server import inside the image.
docker run --rm "$IMAGE" --help >/dev/null || die "$IMAGE does not start"
echo "build_image.sh: built $IMAGE ($FINGERPRINT)"
