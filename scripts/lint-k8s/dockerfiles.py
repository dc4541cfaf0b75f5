#!/usr/bin/env python3
"""Check that the Dockerfiles would really build, without a Docker engine.

hadolint judges a Dockerfile's form, not whether it fits this workspace. This
script checks the facts a `docker build` depends on, against `cargo metadata`
and the files git knows:

- the build context that .dockerignore leaves holds Cargo.toml, Cargo.lock and
  every file of every workspace member (cargo needs all members' manifests, and
  sqlx::migrate! reads chat-server/migrations at compile time);
- each `cargo chef cook` / `cargo build` names a workspace package with
  `--locked --release`, the `--bin` is a binary target of that package, and the
  runtime stage copies exactly that binary out of target/release.

  dockerfiles.py Dockerfile.server Dockerfile.operator Dockerfile.loadtest
"""

from __future__ import annotations

import json
import re
import subprocess
import sys
from pathlib import Path, PurePosixPath


def dockerignore_patterns(path: Path) -> list[tuple[bool, re.Pattern]]:
    """(negated, regex) per .dockerignore line, with Docker's matching rules:
    `*` and `?` stay within one path element, `**` spans any number of them,
    and a pattern that matches a directory excludes everything below it."""
    patterns = []
    for line in path.read_text().splitlines():
        line = line.strip()
        if not line or line.startswith("#"):
            continue
        negated = line.startswith("!")
        glob = str(PurePosixPath(line.lstrip("!").strip().lstrip("/")))
        regex = ""
        i = 0
        while i < len(glob):
            if glob.startswith("**/", i):
                regex, i = regex + "(?:.*/)?", i + 3
            elif glob.startswith("**", i):
                regex, i = regex + ".*", i + 2
            elif glob[i] == "*":
                regex, i = regex + "[^/]*", i + 1
            elif glob[i] == "?":
                regex, i = regex + "[^/]", i + 1
            else:
                regex, i = regex + re.escape(glob[i]), i + 1
        patterns.append((negated, re.compile(regex + "(?:/.*)?$")))
    return patterns


def in_context(path: str, patterns: list[tuple[bool, re.Pattern]]) -> bool:
    included = True
    for negated, pattern in patterns:  # the last matching line wins
        if pattern.match(path):
            included = negated
    return included


def main() -> int:
    dockerfiles = [Path(p) for p in sys.argv[1:]]
    if not dockerfiles:
        sys.exit(__doc__)
    cargo = subprocess.run(["cargo", "metadata", "--no-deps", "--format-version", "1", "--offline"],
                           capture_output=True, text=True)
    if cargo.returncode != 0:
        sys.exit(f"FAIL cargo metadata: {cargo.stderr.strip()}")
    metadata = json.loads(cargo.stdout)
    root = Path(metadata["workspace_root"])
    members = {pkg["name"]: pkg for pkg in metadata["packages"]}

    files = subprocess.run(["git", "ls-files", "--cached", "--others", "--exclude-standard"],
                           check=True, capture_output=True, text=True, cwd=root).stdout.split()
    patterns = dockerignore_patterns(root / ".dockerignore") if (root / ".dockerignore").exists() else []
    member_dirs = [str(Path(pkg["manifest_path"]).parent.relative_to(root)) + "/" for pkg in members.values()]
    needed = [f for f in files if f in ("Cargo.toml", "Cargo.lock") or f.startswith(tuple(member_dirs))]
    problems = [f".dockerignore leaves {f} out of the build context, but cargo needs it"
                for f in needed if Path(root / f).exists() and not in_context(f, patterns)]
    for name in ("Cargo.toml", "Cargo.lock"):
        if name not in files:
            problems.append(f"{name} is not in the repository")

    for dockerfile in dockerfiles:
        text = dockerfile.read_text()
        builds = re.findall(r"^RUN cargo build (.*)$", text, re.MULTILINE)
        cooks = re.findall(r"^RUN cargo chef cook (.*)$", text, re.MULTILINE)
        if len(builds) != 1 or len(cooks) != 1:
            problems.append(f"{dockerfile}: expected one `RUN cargo chef cook` and one `RUN cargo build`")
            continue
        for command in (builds[0], cooks[0]):
            for flag in ("--locked", "--release"):
                if flag not in command.split():
                    problems.append(f"{dockerfile}: `{command}` lacks {flag}")
        package = re.search(r"-p (\S+)", builds[0])
        binary = re.search(r"--bin (\S+)", builds[0])
        if not package or not binary:
            problems.append(f"{dockerfile}: `cargo build` must name -p <package> --bin <binary>")
            continue
        package, binary = package.group(1), binary.group(1)
        if f"-p {package}" not in cooks[0]:
            problems.append(f"{dockerfile}: `cargo chef cook` must cook the same package ({package})")
        if package not in members:
            problems.append(f"{dockerfile}: {package} is not a workspace package ({', '.join(members)})")
            continue
        bins = [t["name"] for t in members[package]["targets"] if "bin" in t["kind"]]
        if binary not in bins:
            problems.append(f"{dockerfile}: {package} has no binary {binary!r} (it has {bins})")
        if f"/src/target/release/{binary} " not in text:
            problems.append(f"{dockerfile}: the runtime stage must copy /src/target/release/{binary}")

    for problem in problems:
        print(f"FAIL {problem}")
    return 1 if problems else 0


if __name__ == "__main__":
    sys.exit(main())
