#!/usr/bin/env bash
# Releases signalman VERSION to an OCI registry: the operator for linux/amd64 and linux/arm64
# (EKS Graviton nodes) as one multi-arch image, and the Helm chart with that image pinned by
# digest.
#
#   scripts/release.sh VERSION REGISTRY [--plain-http] [--profile release|dev] [--out DIR]
#                      [--plugin-url URL]
#
#   VERSION   the crate's version (Cargo.toml), which is also the chart's version and
#             appVersion and the image tag; CHANGELOG.md must have a section for it
#   REGISTRY  where to push, e.g. ghcr.io/signalman-dev: the image goes to
#             REGISTRY/signalman:VERSION, the chart to oci://REGISTRY/charts/signalman:VERSION
#   --plain-http   the registry speaks HTTP (a local one)
#   --profile      cargo profile of the binaries (default release; dev builds faster, for tests)
#   --out DIR      where the image layout, the chart package, the plugin's archives and its
#                  krew manifest are written (default target/release-VERSION)
#   --plugin-url URL  where the plugin's archives will be published, for the krew manifest
#                  (default https://signalman.dev/releases/vVERSION)
#
# Logging in is the caller's: `oras login` / `helm registry login` (or docker's config).
# Prints, last, one JSON line: {"image": "REGISTRY/signalman@sha256:…", "chart": "oci://…",
# "version": …}. See docs/release.md for the versioning convention.
set -euo pipefail
cd "$(dirname "$0")/.."

usage() { sed -n '2,23p' "$0" | sed 's/^# \{0,1\}//' >&2; exit 2; }
[ $# -ge 2 ] || usage
version=$1 registry=${2%/}
shift 2
plain_http=() profile=release out="" plugin_url=https://signalman.dev/releases/v$version
while [ $# -gt 0 ]; do
  case "$1" in
    --plain-http) plain_http=(--plain-http) ;;
    --profile) profile="$2"; shift ;;
    --out) out="$2"; shift ;;
    --plugin-url) plugin_url="${2%/}"; shift ;;
    *) usage ;;
  esac
  shift
done
log() { printf '[release] %s\n' "$*" >&2; }
die() { printf '[release] ERROR: %s\n' "$*" >&2; exit 1; }

# One version everywhere: the crate, the chart, the image tag, the CHANGELOG.
crate_version=$(awk -F'"' '/^version = / { print $2; exit }' Cargo.toml)
[ "$version" = "$crate_version" ] || die "VERSION $version is not the crate's version ($crate_version in Cargo.toml)"
[[ $version =~ ^[0-9]+\.[0-9]+\.[0-9]+(-[0-9A-Za-z.-]+)?$ ]] || die "VERSION $version is not a SemVer version"
grep -q "^## \[$version\]" CHANGELOG.md || die "CHANGELOG.md has no section '## [$version] - YYYY-MM-DD'"
for chart_field in version appVersion; do
  got=$(awk -v f="$chart_field:" '$1 == f { gsub(/"/, "", $2); print $2; exit }' charts/signalman/Chart.yaml)
  [ "$got" = "$version" ] || die "charts/signalman/Chart.yaml $chart_field is $got, not $version"
done

env_home=${SIGNALMAN_ENV_HOME:-$PWD/.env-cache}
tool() { command -v "$1" 2>/dev/null || { [ -x "$env_home/bin/$1" ] && echo "$env_home/bin/$1"; } || die "$1 not found (tests/env/setup.sh builds it into $env_home/bin)"; }
oras=$(tool oras)
helm=$(tool helm)
target_dir=${CARGO_TARGET_DIR:-target}
out=${out:-$target_dir/release-$version}
rm -rf "$out"
mkdir -p "$out"

# Both platforms statically linked (glibc included), so the image needs no libraries and the
# arm64 binary no arm64 machine to find them. aws-lc's C is compiled by each target's gcc.
cargo_dir=$([ "$profile" = dev ] && echo debug || echo "$profile")
binaries=()
for triple in x86_64-unknown-linux-gnu aarch64-unknown-linux-gnu; do
  upper=$(echo "$triple" | tr 'a-z-' 'A-Z_')
  cross=()
  if [ "$triple" = aarch64-unknown-linux-gnu ]; then
    command -v aarch64-linux-gnu-gcc >/dev/null || die "aarch64-linux-gnu-gcc is missing (apt-get install gcc-aarch64-linux-gnu)"
    cross=("CARGO_TARGET_${upper}_LINKER=aarch64-linux-gnu-gcc" "CC_aarch64_unknown_linux_gnu=aarch64-linux-gnu-gcc"
      "AR_aarch64_unknown_linux_gnu=aarch64-linux-gnu-ar")
  fi
  log "building $triple ($profile) ..."
  t=$(date +%s)
  env "${cross[@]}" "CARGO_TARGET_${upper}_RUSTFLAGS=-C target-feature=+crt-static" CARGO_PROFILE_RELEASE_STRIP=symbols \
    cargo build --locked --profile "$profile" --target "$triple" -p signalman --bin signalman --bin kubectl-signalman
  log "built $triple in $(($(date +%s) - t))s"
  binaries+=(--binary "$target_dir/$triple/$cargo_dir/signalman")
  # The kubectl plugin, as krew takes it: an archive of the binary and the LICENSE.
  arch=$([ "$triple" = aarch64-unknown-linux-gnu ] && echo arm64 || echo amd64)
  tar -czf "$out/kubectl-signalman-linux-$arch.tar.gz" --owner=0 --group=0 --numeric-owner \
    -C "$target_dir/$triple/$cargo_dir" kubectl-signalman -C "$PWD" LICENSE
done

# The krew manifest of this release: the repository's, with the platforms built here.
python3 - plugins/krew/signalman.yaml "$out" "$version" "$plugin_url" <<'PY'
import hashlib, re, sys
source, out, version, url = sys.argv[1:]
head = open(source).read().split("  platforms:\n")[0]
head = "".join(l + "\n" for l in head.splitlines() if not l.startswith("#"))
head = re.sub(r"(?m)^  version: v.*$", f"  version: v{version}", head, count=1)
platforms = []
for arch in ("amd64", "arm64"):
    archive = f"kubectl-signalman-linux-{arch}.tar.gz"
    digest = hashlib.sha256(open(f"{out}/{archive}", "rb").read()).hexdigest()
    platforms.append(
        f"""    - selector:
        matchLabels:
          os: linux
          arch: {arch}
      uri: {url}/{archive}
      sha256: "{digest}"
      files:
        - from: kubectl-signalman
          to: .
        - from: LICENSE
          to: .
      bin: kubectl-signalman
"""
    )
open(f"{out}/krew-signalman.yaml", "w").write(head + "  platforms:\n" + "".join(platforms))
PY

revision=$(git rev-parse --short=12 HEAD 2>/dev/null || true)
image_json=$(python3 scripts/oci_image.py "${binaries[@]}" --out "$out/image" --version "$version" \
  --tag "$version" --revision "$revision")
digest=$(python3 -c 'import json, sys; print(json.load(sys.stdin)["digest"])' <<<"$image_json")
image=$registry/signalman
log "pushing $image:$version ($digest) ..."
"$oras" cp --from-oci-layout "${plain_http[@]/--plain-http/--to-plain-http}" "$out/image:$version" "$image:$version" >&2
# What the registry serves under the tag must be what was built.
pushed=$("$oras" resolve "${plain_http[@]}" "$image:$version")
[ "$pushed" = "$digest" ] || die "the registry serves $pushed for $image:$version, not $digest"

# The chart, with the image pinned by digest: installing it pulls exactly what was built.
chart_dir=$out/chart/signalman
mkdir -p "$out/chart"
cp -R charts/signalman "$chart_dir"
python3 - "$chart_dir/values.yaml" "$image" "$digest" <<'PY'
import re, sys
path, repository, digest = sys.argv[1:]
text = open(path).read()
# The image block's first keys, as values.yaml writes them (tests/release.rs checks the result).
text, n1 = re.subn(r"(?m)^(image:\n(?:  .*\n)*?  repository: ).*$", lambda m: m.group(1) + repository, text, count=1)
text, n2 = re.subn(r"(?m)^(image:\n(?:  .*\n)*?  digest: ).*$", lambda m: m.group(1) + f'"{digest}"', text, count=1)
if (n1, n2) != (1, 1):
    sys.exit(f"{path}: no image.repository or image.digest line to pin")
open(path, "w").write(text)
PY
"$helm" package "$chart_dir" --destination "$out" >&2
"$helm" push "$out/signalman-$version.tgz" "oci://$registry/charts" "${plain_http[@]}" >&2

printf '{"version": "%s", "image": "%s@%s", "chart": "oci://%s/charts/signalman", "chart_version": "%s", "krew_manifest": "%s"}\n' \
  "$version" "$image" "$digest" "$registry" "$version" "$out/krew-signalman.yaml"
