#!/usr/bin/env bash
# deploy/Dockerfile and .dockerignore, without a Docker daemon (this machine has none):
# the build context is assembled from the repository the way .dockerignore says (Docker's
# matching: a pattern excludes a path or any directory above it, `**` spans directories),
# and checked to hold what the Dockerfile copies and none of target/, databases, keys,
# configs or secrets; then the build stage's dependency layer runs as written (its COPY and
# RUN lines, in a scratch /src), which must build against the stub sources and leave no
# maskrelay artifact behind for the next layer to mistake for current. The image's
# HEALTHCHECK and ENV are exercised by tests/compose.sh; the final `cargo build` is CI's own.
set -euo pipefail
root=$(cd "$(dirname "$0")/.." && pwd)
scratch=$(mktemp -d)
trap 'rm -rf "$scratch"' EXIT
fail() { echo "docker: $1"; exit 1; }

# Decoys of everything that must stay out, beside the real files.
decoys=(maskrelay.db maskrelay.db-wal maskrelay.key maskrelay-dkim.pem maskrelay.toml deploy/.env
        deploy/secrets/privacy.key deploy/secrets/dkim.pem tests/fixture.pem target/release/maskrelay
        src/relay.db changes/ops.md)
python3 - "$root" "$scratch/context" "${decoys[@]}" <<'PY' || fail "the build context is wrong"
import fnmatch, os, re, shutil, subprocess, sys
root, context, decoys = sys.argv[1], sys.argv[2], sys.argv[3:]
patterns = []
for line in open(os.path.join(root, ".dockerignore")):
    line = line.strip()
    if line and not line.startswith("#"):
        patterns.append(line.rstrip("/"))
def regex(p):
    out = ""
    i = 0
    while i < len(p):
        if p.startswith("**/", i): out += "(?:.*/)?"; i += 3
        elif p.startswith("**", i): out += ".*"; i += 2
        elif p[i] == "*": out += "[^/]*"; i += 1
        elif p[i] == "?": out += "[^/]"; i += 1
        else: out += re.escape(p[i]); i += 1
    return re.compile(out + "$")
compiled = [(regex(p), p.startswith("!")) for p in patterns]
def ignored(path):
    parts = path.split("/")
    result = False
    for rx, negate in compiled:
        # Docker: a pattern matching a path or any of its parent directories.
        if any(rx.match("/".join(parts[:n])) for n in range(1, len(parts) + 1)):
            result = not negate
    return result
files = subprocess.run(["git", "-C", root, "ls-files"], capture_output=True, text=True, check=True).stdout.split()
bad = [d for d in decoys if not ignored(d)]
if bad:
    sys.exit(f"not ignored: {bad}")
kept = [f for f in files if not ignored(f)]
for needed in ["Cargo.toml", "Cargo.lock", "src/main.rs", "src/lib.rs", "bench/load.rs", "migrations/sqlite/0001_init.sql"]:
    if needed not in kept:
        sys.exit(f"{needed} is ignored but the Dockerfile copies it")
for f in kept:
    os.makedirs(os.path.dirname(os.path.join(context, f)) or context, exist_ok=True)
    shutil.copy2(os.path.join(root, f), os.path.join(context, f))
print(f"docker: context of {len(kept)} files, {len(decoys)} decoys kept out")
PY

# The build stage up to the dependency layer, as written: COPY and RUN lines until the
# first COPY of the sources.
src=$scratch/src
mkdir -p "$src"
# The dependencies compiled here already, so the layer's cargo build is quick (in Docker it
# compiles them once and caches the layer).
cp -a "${CARGO_TARGET_DIR:-$root/target}/release" "$src/target-release-seed" 2>/dev/null || true
mkdir -p "$src/target" && [ -d "$src/target-release-seed" ] && mv "$src/target-release-seed" "$src/target/release"
awk '/^FROM .* AS build/ { b = 1; next } b && /^COPY src / { exit } b { print }' "$root/deploy/Dockerfile" |
  sed -e ':a' -e '/\\$/N; s/\\\n//; ta' | grep -E '^(COPY|RUN) ' >"$scratch/steps"
grep -q "^RUN .*cargo build --release --locked" "$scratch/steps" || fail "no dependency build in the Dockerfile"
while IFS= read -r step; do
  case "$step" in
    COPY\ *)
      read -r -a args <<<"${step#COPY }"
      dest=${args[-1]}
      for a in "${args[@]:0:${#args[@]}-1}"; do cp -a "$scratch/context/$a" "$src/$dest"; done
      ;;
    RUN\ *)
      (cd "$src" && bash -euo pipefail -c "${step#RUN }") >"$scratch/run.log" 2>&1 || {
        cat "$scratch/run.log"
        fail "RUN failed: $step"
      }
      ;;
  esac
done <"$scratch/steps"
grep -q "Finished .release. profile" "$scratch/run.log" || fail "the dependency layer's cargo build did not run: $(cat "$scratch/run.log")"
[ ! -e "$src/src" ] || fail "the stub sources were left in the layer"
if ls "$src"/target/release/.fingerprint/maskrelay-* "$src"/target/release/maskrelay 2>/dev/null | grep -q .; then
  fail "the stub build left maskrelay artifacts: the next layer could take them for current"
fi
ls "$src"/target/release/deps/libsqlx-*.rlib >/dev/null 2>&1 || fail "the dependency layer holds no compiled dependencies"
echo "docker: 2 passed, 0 failed"
