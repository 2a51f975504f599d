#!/usr/bin/env bash
# Builds ops/bench/.openfhe/openfhe_bootstrap: OpenFHE's CKKS bootstrapping
# (openfhe_bootstrap.cpp) linked against the C++ libraries that the `openfhe`
# wheel on PyPI ships. The wheel's Python module is built for CPython 3.10 and
# does not load here, but its libOPENFHE*.so do; the wheel carries no
# headers, so they come from an OpenFHE source tree of the same version:
#
#   OPENFHE_SRC=/path/to/openfhe-development   (checked out at v1.5.1)
#   ops/bench/setup-openfhe.sh
#
# Idempotent: re-running reuses the download. Needs g++ with OpenMP and the
# cereal headers (Debian: libcereal-dev; OpenFHE keeps them in a submodule).
set -euo pipefail
cd "$(dirname "$0")"

version=1.5.1
wheel_version="${version}.0.22.4"
out=.openfhe
src="${OPENFHE_SRC:-}"
if [ -z "$src" ] || [ ! -f "$src/src/pke/include/openfhe.h" ]; then
    echo "setup-openfhe: set OPENFHE_SRC to an OpenFHE source tree at v${version} (src/pke/include/openfhe.h not found under '${src}')" >&2
    exit 2
fi
src_version="$(awk '/set\(OPENFHE_VERSION_(MAJOR|MINOR|PATCH) /{gsub(/\)/,"",$2); printf "%s%s", sep, $2; sep="."}' "$src/CMakeLists.txt")"
if [ "$src_version" != "$version" ]; then
    echo "setup-openfhe: OPENFHE_SRC is OpenFHE ${src_version}; the wheel's libraries are ${version}: check out v${version}" >&2
    exit 2
fi
grep -qx '.openfhe/' .gitignore 2>/dev/null || printf '.openfhe/\n' >> .gitignore

mkdir -p "$out/include"
if [ ! -f "$out/lib/libOPENFHEpke.so.1" ]; then
    tmp="$(mktemp -d)"
    python3 -m pip download -q --no-deps --disable-pip-version-check -d "$tmp" "openfhe==${wheel_version}"
    python3 -m zipfile -e "$tmp"/openfhe-"${wheel_version}"-*.whl "$tmp/x"
    mkdir -p "$out/lib"
    cp "$tmp"/x/openfhe/lib/libOPENFHE*.so.1 "$out/lib/"
    cp "$tmp"/x/openfhe/build-config.txt "$out/"
    rm -rf "$tmp"
fi
for lib in core pke binfhe; do ln -sf "libOPENFHE${lib}.so.1" "$out/lib/libOPENFHE${lib}.so"; done

# The wheel's build: NATIVE_SIZE 64, MATHBACKEND 4, OpenMP on (cmake's defaults),
# written as cmake would write configure/config_core.in.
cat > "$out/include/config_core.h" <<'H'
#ifndef __CMAKE_GENERATED_CONFIG_CORE_H__
#define __CMAKE_GENERATED_CONFIG_CORE_H__
#define WITH_BE4
#define WITH_OPENMP
#define CKKS_M_FACTOR 1
#define HAVE_INT128 TRUE
#define HAVE_INT64 TRUE
#define MATHBACKEND 4
#define NATIVEINT 64
#endif
H

g++ -O3 -std=c++17 -fopenmp -DMATHBACKEND=4 -DOPENFHE_WHEEL_VERSION="\"${wheel_version}\"" -w \
    -I"$out/include" -I"$src/src/core/include" -I"$src/src/pke/include" -I"$src/src/binfhe/include" \
    -I"$src/third-party/cereal/include" -I"$src/src/core/lib" \
    openfhe_bootstrap.cpp -o "$out/openfhe_bootstrap" \
    -L"$out/lib" -lOPENFHEpke -lOPENFHEbinfhe -lOPENFHEcore -Wl,--disable-new-dtags,-rpath,"$(pwd)/$out/lib"
echo "setup-openfhe: built ops/bench/$out/openfhe_bootstrap (OpenFHE ${version}, libraries from the PyPI wheel ${wheel_version})"
