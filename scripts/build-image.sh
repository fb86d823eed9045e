#!/usr/bin/env bash
# Builds lockstep's container image fully offline on a Debian machine: no registry is contacted.
#
#   1. cargo build --release (the binary users get);
#   2. assembles a minimal runtime base from the host with buildah: the binary's shared libraries (from ldd),
#      the CA bundle, /etc/passwd and /etc/group with the nonroot user 65532 -- what
#      gcr.io/distroless/cc-debian12:nonroot provides, from the same Debian release;
#   3. builds the Dockerfile's `runtime` stage against that base with `podman build --pull=never`, the binary
#      taken from dist/linux-<arch>/lockstep (BINARY_FROM=prebuilt);
#   4. exports an OCI archive.
#
# Usage: scripts/build-image.sh [IMAGE]        (default IMAGE: localhost/lockstep:<Cargo version>)
# Env:   OUT=dist/lockstep-image.oci.tar       where the OCI archive goes
#        SKIP_CARGO=1                          reuse target/release/lockstep as it is
# Needs: cargo, podman, buildah (apt-get install podman buildah skopeo runc). Podman reads
# scripts/containers.conf unless CONTAINERS_CONF is set (see that file for why).
# Prints the image reference on the last line of stdout.
set -euo pipefail
cd "$(dirname "$0")/.."

export CONTAINERS_CONF="${CONTAINERS_CONF:-$PWD/scripts/containers.conf}"
version="$(sed -n 's/^version = "\(.*\)"/\1/p' Cargo.toml | head -n1)"
image="${1:-localhost/lockstep:$version}"
out="${OUT:-dist/lockstep-image.oci.tar}"
arch="$(dpkg --print-architecture)"
base="localhost/lockstep-runtime-base:debian$(cut -d. -f1 /etc/debian_version)-$arch"
started=$(date +%s)

for tool in podman buildah ldd; do
  command -v "$tool" >/dev/null || { echo "build-image: $tool is missing (apt-get install podman buildah skopeo runc)" >&2; exit 2; }
done

if [ -z "${SKIP_CARGO:-}" ]; then
  cargo build --release --locked --bin lockstep >&2
fi
bin="${CARGO_TARGET_DIR:-target}/release/lockstep"
[ -x "$bin" ] || { echo "build-image: $bin is missing; run without SKIP_CARGO" >&2; exit 2; }
mkdir -p "dist/linux-$arch"
cp "$bin" "dist/linux-$arch/lockstep"

# --- the runtime base, from the host -------------------------------------------------------------------
rootfs="$(mktemp -d)"
trap 'rm -rf "$rootfs"' EXIT
# Every shared object the binary loads, including the dynamic loader, at the path it is loaded from.
ldd "$bin" | awk '/=> \//{print $3} /^[ \t]*\//{print $1}' | while read -r lib; do
  cp -L --parents "$lib" "$rootfs/"
done
mkdir -p "$rootfs/etc/ssl/certs" "$rootfs/home/nonroot" "$rootfs/tmp"
cp -L /etc/ssl/certs/ca-certificates.crt "$rootfs/etc/ssl/certs/ca-certificates.crt"
cat >"$rootfs/etc/passwd" <<'PASSWD'
root:x:0:0:root:/root:/sbin/nologin
nobody:x:65534:65534:nobody:/nonexistent:/sbin/nologin
nonroot:x:65532:65532:nonroot:/home/nonroot:/sbin/nologin
PASSWD
cat >"$rootfs/etc/group" <<'GROUP'
root:x:0:
nogroup:x:65534:
nonroot:x:65532:
GROUP
printf 'hosts: files dns\n' >"$rootfs/etc/nsswitch.conf"
chmod 1777 "$rootfs/tmp"
chown 65532:65532 "$rootfs/home/nonroot"

ctr="$(buildah from scratch)"
buildah copy --quiet "$ctr" "$rootfs" / >/dev/null
buildah config --user 65532:65532 --workingdir /home/nonroot --env SSL_CERT_FILE=/etc/ssl/certs/ca-certificates.crt "$ctr"
buildah commit --quiet --rm "$ctr" "$base" >/dev/null
echo "build-image: runtime base $base ($(ldd "$bin" | wc -l) shared objects from the host)" >&2

# --- the image: the Dockerfile's runtime stage ----------------------------------------------------------
podman build --pull=never --target runtime \
  --build-arg RUNTIME_IMAGE="$base" \
  --build-arg BINARY_FROM=prebuilt \
  --build-arg TARGETARCH="$arch" \
  --build-arg VERSION="$version" \
  --tag "$image" . >&2

# A base missing the loader or a library shows here, not in the first test that runs the image.
podman run --rm --read-only --cap-drop=ALL --security-opt=no-new-privileges "$image" --version >&2

mkdir -p "$(dirname "$out")"
rm -f "$out"
podman save --quiet --format oci-archive --output "$out" "$image"
size="$(podman image inspect --format '{{.Size}}' "$image")"
echo "build-image: $image: $((size / 1024 / 1024)) MiB ($size bytes), OCI archive $out ($(du -m "$out" | cut -f1) MiB), $(( $(date +%s) - started )) s" >&2
echo "$image"
